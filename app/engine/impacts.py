"""Neuron impacts for every MLP neuron of every layer, for one input.

- ``magnitude``: the NAG paper's impact (Wang et al. 2026, arXiv 2604.15706, ALGORITHMS.md 1.2):
  ``Imp_l,k = mean_t |u_l,k(t)|`` with u the up_proj (or fc) output. Target-free, one forward.
- ``attribution``: activation x gradient (attribution patching; Nanda 2023, Syed et al. 2023;
  ALGORITHMS.md 7): ``impact_l,k = sum_t a_l,k(t) * dM/da_l,k(t)``. ``-impact`` is the first-order
  estimate of the change in M when the neuron is zeroed. All neurons from one forward + one backward.
- ``ig``: integrated gradients along a_l -> 0 for one layer at a time (the knowledge-neuron / NeurFlow
  convention of scaling a whole layer, ALGORITHMS.md 2.2), midpoint Riemann sum with m steps. Per layer,
  the attributions sum to M(a) - M(a_l = 0) up to the quadrature error (completeness).
- exact ablation: the true change in M when one neuron is zeroed, batched over candidates, to verify.

M is the log-probability of the target token at the last position, or the logit difference
target - contrast when a contrast token is given.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from app.engine.arch import MlpSite
from app.engine.hooks import capture, rewrite
from app.engine.ids import NeuronId


@dataclass(frozen=True)
class Metric:
    """M(logits at the last position): log p(target), or logit(target) - logit(contrast)."""

    target_id: int
    contrast_id: int | None = None

    @property
    def name(self) -> str:
        return "logprob" if self.contrast_id is None else "logit_diff"

    def __call__(self, last_logits: torch.Tensor) -> torch.Tensor:
        """[batch, vocab] -> [batch]."""
        logits = last_logits.float()
        if self.contrast_id is None:
            return torch.log_softmax(logits, dim=-1)[:, self.target_id]
        return logits[:, self.target_id] - logits[:, self.contrast_id]


def last_logits(model: torch.nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """[batch, vocab] logits at the last position, computing the LM head only there when supported."""
    try:
        out = model(input_ids=input_ids, logits_to_keep=1, use_cache=False)
    except TypeError:
        out = model(input_ids=input_ids, use_cache=False)
    return out.logits[:, -1, :]


def magnitude(model, sites: list[MlpSite], input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """NAG impact ``mean_t |u_l,k(t)|`` [L, d_ff], the last-token activations a_l [L, d_ff], and logits [vocab]."""
    ups: dict[int, torch.Tensor] = {}
    acts: dict[int, torch.Tensor] = {}
    with torch.no_grad(), capture(sites, store=acts, up_store=ups):
        logits = last_logits(model, input_ids)
    imp = torch.stack([ups[layer][0].abs().mean(dim=0) for layer in range(len(sites))]).float()
    last = torch.stack([acts[layer][0, -1] for layer in range(len(sites))]).float()
    return imp, last, logits[0]


def integrated_gradients(model, sites: list[MlpSite], input_ids: torch.Tensor, metric: Metric, *,
                         steps: int = 16, layers: Sequence[int] | None = None,
                         on_layer: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """IG of M w.r.t. each layer's activations, baseline 0, ``steps`` midpoint steps: [L, d_ff].

    One batched pass of ``steps`` copies per layer: copy i runs with a_l scaled by (i + 0.5) / steps.
    Layers below l carry no graph (the scaled a_l is a fresh leaf), so each backward stops at layer l."""
    chosen = list(range(len(sites))) if layers is None else list(layers)
    alphas = (torch.arange(steps, dtype=torch.float32, device=input_ids.device) + 0.5) / steps
    batch = input_ids.expand(steps, -1)
    out = torch.zeros(len(sites), _width(sites), dtype=torch.float32, device=input_ids.device)
    for done, layer in enumerate(chosen):
        out[layer] = _ig_layer(model, sites, batch, metric, layer, alphas)
        if on_layer is not None:
            on_layer(done + 1, len(chosen))
    return out


def _ig_layer(model, sites, batch, metric, layer: int, alphas: torch.Tensor) -> torch.Tensor:
    held: dict[str, torch.Tensor] = {}

    def scale(_layer: int, a: torch.Tensor) -> torch.Tensor:
        held["a"] = a[0].detach()
        held["x"] = (a.detach() * alphas.to(a.dtype)[:, None, None]).requires_grad_(True)
        return held["x"]

    with torch.enable_grad(), rewrite(sites, scale, layers=[layer]):
        value = metric(last_logits(model, batch))
        (grad,) = torch.autograd.grad(value.sum(), held["x"])
    return (held["a"].float() * grad.float().mean(dim=0)).sum(dim=0)


def _width(sites: list[MlpSite]) -> int:
    weight = sites[0].down.weight
    return weight.shape[0] if type(sites[0].down).__name__ == "Conv1D" else weight.shape[1]


def ablation_effects(model, sites: list[MlpSite], input_ids: torch.Tensor, metric: Metric,
                     neurons: Sequence[NeuronId], *, base: float, batch_size: int = 16) -> list[float]:
    """Exact change in M when each neuron alone is zeroed: M(a with a_k = 0) - M(a), batched."""
    effects: list[float] = []
    for start in range(0, len(neurons), batch_size):
        chunk = list(neurons[start:start + batch_size])
        values = _zero_each(model, sites, input_ids.expand(len(chunk), -1), metric, chunk)
        effects.extend(float(v) - base for v in values.tolist())
    return effects


def _zero_each(model, sites, batch, metric, chunk: list[NeuronId]) -> torch.Tensor:
    """Row r of the batch runs with neuron chunk[r] zeroed."""
    rows_by_layer: dict[int, list[tuple[int, int]]] = {}
    for row, nid in enumerate(chunk):
        rows_by_layer.setdefault(nid.layer, []).append((row, nid.index))

    def zero(layer: int, a: torch.Tensor) -> torch.Tensor:
        a = a.clone()
        rows, cols = zip(*rows_by_layer[layer])
        a[list(rows), :, list(cols)] = 0
        return a

    with torch.no_grad(), rewrite(sites, zero, layers=sorted(rows_by_layer)):
        return metric(last_logits(model, batch))
