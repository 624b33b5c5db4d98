"""Run the model with interventions on neurons and compare against the unmodified run.

An intervention is data (``ids.Ablation``): a set of neurons, a mode (``zero``, ``mean`` over the
reference corpus, ``scale`` by a factor) and optionally the token positions it applies to. The baseline run
of a prompt is cached by the engine, so a live ablation costs one forward (plus the greedy
continuation, decoded with a KV cache).
Zeroing a neuron's activation is exactly zeroing its row of up_proj (u_k = 0 => a_k = silu(g_k) * 0),
the NAG paper's deactivation (ALGORITHMS.md 1.6); tests check the two agree.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from app.engine.arch import MlpSite
from app.engine.hooks import capture, rewrite
from app.engine.ids import Ablation


def intervention(ablation: Ablation, means: torch.Tensor | None, *,
                 offset: Callable[[], int] = lambda: 0) -> tuple[list[int], Callable]:
    """(layers touched, rewrite fn) applying ``ablation``; ``offset()`` gives the absolute position of the
    first token in the current forward (it grows during cached decoding)."""
    by_layer: dict[int, list[int]] = {}
    for nid in ablation.neurons:
        by_layer.setdefault(nid.layer, []).append(nid.index)

    def fn(layer: int, a: torch.Tensor) -> torch.Tensor:
        cols = torch.tensor(by_layer[layer], device=a.device)
        pos = _positions(ablation, offset(), a.shape[1], a.device)
        if pos is None:
            pos = torch.arange(a.shape[1], device=a.device)
        if pos.numel() == 0:
            return a
        a = a.clone()
        index = (slice(None), pos[:, None], cols[None, :])  # [batch, positions, neurons]
        a[index] = _replace(ablation, a[index], means, layer, cols)
        return a

    return sorted(by_layer), fn


def _positions(ablation: Ablation, start: int, length: int, device) -> torch.Tensor | None:
    if ablation.positions is None:
        return None
    local = [p - start for p in ablation.positions if start <= p < start + length]
    return torch.tensor(local, dtype=torch.long, device=device)


def _replace(ablation: Ablation, values: torch.Tensor, means: torch.Tensor | None, layer: int,
             cols: torch.Tensor) -> torch.Tensor:
    if ablation.mode == "zero":
        return torch.zeros_like(values)
    if ablation.mode == "scale":
        return values * ablation.factor
    assert means is not None, "mean ablation needs reference means"
    return means[layer, cols].to(values.dtype).expand_as(values).clone()


def run(model, sites: list[MlpSite], input_ids: torch.Tensor, ablation: Ablation | None, *,
        means: torch.Tensor | None, continuation: int, eos_id: int | None) -> tuple[torch.Tensor, list[int]]:
    """One run, intervened when ``ablation`` is given: next-token log-probs [vocab] and the greedy
    continuation (the intervention stays on for generated tokens, at their absolute positions)."""
    state = {"offset": 0}
    if ablation is None:
        layers, fn = [], None
    else:
        layers, fn = intervention(ablation, means, offset=lambda: state["offset"])
    with torch.no_grad(), rewrite(sites, fn, layers=layers):
        out = model(input_ids=input_ids, use_cache=continuation > 1)
        first = out.logits[0, -1, :].float()
        generated = _greedy(model, out, first, state, input_ids.shape[1], continuation, eos_id)
    return torch.log_softmax(first, dim=-1), generated


def _greedy(model, out, logits: torch.Tensor, state: dict, start: int, steps: int, eos_id: int | None) -> list[int]:
    """Greedy decoding with the KV cache, stopping at ``steps`` tokens or end-of-sequence."""
    tokens: list[int] = []
    past = getattr(out, "past_key_values", None)
    for step in range(steps):
        nxt = int(logits.argmax())
        tokens.append(nxt)
        if step == steps - 1 or nxt == eos_id:
            break
        state["offset"] = start + step
        out = model(input_ids=torch.tensor([[nxt]], device=logits.device), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1, :].float()
    return tokens


def kl_divergence(logp: torch.Tensor, logq: torch.Tensor) -> float:
    """KL(p || q) in nats for two log-probability vectors."""
    return max(float((logp.exp() * (logp - logq)).sum()), 0.0)


def reference_means(model, sites: list[MlpSite], batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """Mean activation of every neuron over all real (unpadded) tokens of the reference corpus: [L, d_ff].

    ``batches`` holds (input_ids, attention_mask) pairs, right-padded."""
    total, count = None, 0
    for input_ids, mask in batches:
        store: dict[int, torch.Tensor] = {}
        with torch.no_grad(), capture(sites, store=store):
            model(input_ids=input_ids, attention_mask=mask, use_cache=False)
        weights = mask[:, :, None].to(store[0].dtype)
        stacked = torch.stack([(store[layer] * weights).float().sum(dim=(0, 1)) for layer in range(len(sites))])
        total = stacked if total is None else total + stacked
        count += int(mask.sum())
    return total / max(count, 1)
