"""NeurFlow circuits for causal language models: core neurons, sub-concepts, groups, group flow, fidelity.

NeurFlow (Cao, Hoang, Pham, Nguyen, Thai, ICLR 2025, arXiv 2502.16105; ALGORITHMS.md section 2) explains a
vision CNN's output top-down. Starting from the class logit it finds, for every *critical* neuron n of layer
l, the few neurons of layer l-1 that matter most for n on the samples that define n (its *concept*), clusters
those samples into *sub-concepts*, weights the edges by integrated gradients and clusters the sub-concepts
of a layer into *groups* that form a layered DAG. This module ports it to decoder-only LMs, following the
adaptation proposed in ALGORITHMS.md 2.9, and reports a fidelity check with every circuit.

The algorithm as implemented (``build``):

1. **Root.** M_p = log p(target) (or logit(target) - logit(contrast)) at the last position of each analysed
   prompt p. IG of M_p w.r.t. the activations of the window's top layer ``hi`` (all positions, scaled
   together by alpha, baseline 0, m midpoint steps), summed over positions. Root importance
   I_j = mean_p |IG_j(p)|; the top tau are the root's core set = the critical set of layer ``hi``.
2. **Samples and concepts.** A sample is a (text, position) pair from the reference corpus
   (``data/reference.txt`` or the caller's texts) plus the analysed prompts. A neuron's concept V_n is its
   top-k samples by |a_n(t)| (section 2.2 step 2).
3. **Core neurons, top-down** (2.2 steps 3-6). For each critical neuron n of layer l and each x = (text, t)
   in V_n: IG_j(x) = sum_{t' <= t} a_{l-1,j}(t') * mean_alpha d a_{l,n}(t) / d a_{l-1,j}(t') evaluated at
   alpha * a_{l-1} (netB_l of 2.9: re-run down_proj_{l-1} + residual, then block l up to its MLP hidden
   layer). I_j = mean_{x in V_n} |IG_j(x)|; the top tau are n's core set C_n; the union over the critical
   neurons of l is the critical set of l-1 (capped, see adaptation 5).
4. **Sub-concepts** (2.3). Ward agglomerative clustering of V_n on the layer-(l-1) activation vectors at
   the sample positions, the number of clusters in 2..5 chosen by the largest silhouette score (ties: the
   fewest clusters); concept vector v_(n,c) = the cluster mean (see adaptation 11 for the feature space).
5. **Edges** (2.4). s_(n,c)->j = mean_{x in c} IG_j(x) (signed) for j in C_n, and
   w_(n,c)->j = s_(n,c)->j / (sum_{j' in C_n} |s_(n,c)->j'| + 1e-7), so sum_j |w| = 1 per sub-concept.
6. **Groups** (2.5). At each layer, Ward + silhouette (2..``max_groups``) on all concept vectors of the
   layer's critical neurons. Group edge W(G->H) = sum_{(n,c) in G} sum_{j in C_n} w_(n,c)->j *
   #{c' : (j, c') in H}. The root is a one-member group above the window.
7. **Fidelity** (2.6, adapted): zero-ablating each layer's critical neurons, and all of them together, vs the
   same number of random neurons (``draws`` >= 20 draws, mean and std), change in the target probability;
   NeurFlow's correlation check (Correlation.py) between summed importance and the true ablation effect over
   random subsets; and, for a prompt set, which neurons and groups are stable across prompts.

Adaptations (each an [INF] choice, ALGORITHMS.md 2.9):

1. *Neuron and activation.* A neuron is an MLP hidden unit a_l = act(gate(x)) * up(x), the input of
   down_proj (arch.py). SwiGLU activations are signed, so a concept is the top-k by |a|, and samples keep
   their signed activation; sub-concept clustering separates the two signs when they differ.
2. *Sample pool.* Position 0 of every text is left out: it has no context and carries the attention-sink
   activations, which would otherwise dominate many neurons' top-k. The pool is the reference corpus
   (a few hundred plain sentences shipped with the project, or texts the caller gives) plus the prompts.
3. *netB and attribution.* IG scales the whole a_{l-1} tensor of the sample's text (positions <= t; later
   positions cannot affect position t) and sums the attributions over positions, the analogue of the
   paper's spatial mean. Attention paths are kept. Midpoint Riemann sum with m steps (default 16; the paper
   uses 50); ``fast`` replaces IG by activation x gradient (one step at alpha = 1, ALGORITHMS.md 7).
4. *Exact but cheap netB for Llama-style blocks.* For pre-norm RMSNorm blocks (Llama, Mistral, Qwen2) the
   block is re-implemented in closed form: projections of alpha-scaled inputs are linear in alpha up to the
   RMS factor (W(gamma * (R + alpha P)) / rms = (W(gamma R) + alpha W(gamma P)) / rms), so every
   projection (and its rotary embedding, which is linear too) is computed once per position instead of
   once per (sample, step); only the sample's own position is queried; the gradients are averaged over
   alpha in the q/k/v space (2 * d_kv = 384 wide on SmolLM2) before they are mapped back through
   down_proj with one precomputed matrix, and the RMSNorm transpose is applied in that space via
   h . (gamma * W^T g) = Z(h) . g. The result equals autograd through the HF modules (tests check it on
   tiny Llama/Qwen2 models and on SmolLM2); it is verified at run time against the model's own
   activations, and any other architecture uses the generic path (autograd through the HF decoder
   layer, replayed with its own recorded call arguments).
5. *Critical-set cap.* With tau = 16 the union of core sets grows 16 -> 256 -> the whole layer within two
   layers. Each layer keeps at most ``max_neurons`` critical neurons, ranked by *flow*: the root has flow
   1, and a neuron passes flow(n) * |c| / |V_n| * |w_(n,c)->j| to each core neuron j of each sub-concept
   c, so a layer's flow sums to 1 before the cap. The kept share is reported as ``coverage``. Edges to
   capped neurons stay in ``edges`` (marked ``"critical": false``), so normalisation is the paper's.
6. *Importance.* A group's or member's ``importance`` is its flow (the share of the root's relevance that
   the circuit routes through it); a neuron's core-set entries carry the paper's mean |IG|.
7. *Root sub-concepts.* The root is one sub-concept whose "samples" are the prompts.
8. *Fidelity.* The paper's metric is top-1 accuracy on class images; ours is the target probability (and
   M) on the analysed prompts. The correlation check uses the root metric for the top layer and, for the
   top critical neuron of every lower layer, the mean |change of a_n| over its concept when a random subset
   S of layer l-1 (|S| in {1, 5, 10, 20, 50}, drawn from the whole layer) is zeroed, against
   sum_{j in S} I_j.
9. *Stability over a prompt set* (our addition): per prompt, activation x gradient of that prompt's M on
   every circuit neuron; a neuron (group) is *active* on a prompt when it is in the top half of its layer's
   circuit neurons (groups) by |attribution|. support = fraction of prompts where it is active; stable if
   support >= 0.75, prompt-specific if active on one prompt or a small minority (0 < support <=
   max(0.25, 1/P)), weak if never active, mixed otherwise.
10. *Window.* The circuit covers layers lo..hi (default: the last 6 layers; lo >= 1, because the bottom
   layer's sub-concepts are clustered on layer lo-1). IG runs for hi..lo+1; layer lo holds leaves.
   On SmolLM2 (2 CPU cores, 20-token prompt, warm cache) the default circuit takes ~7 s and the fast mode
   ~3.3 s; cost grows about linearly with the window and with k (bench/circuits.py), so the middle of the
   model (window 15-29) is a ~20 s job in the default mode: opt in with ``layers``.
11. *Clustering space.* LMs have massive-activation units (Sun et al. 2024, arXiv 2402.17762): in SmolLM2
   one layer-28 neuron has a std of ~700 against a median of 0.5, so Euclidean Ward on raw vectors is
   decided by that one unit, and cluster means of many samples all shrink to the pool mean, so silhouette
   just splits off outliers (one group holding every neuron). With ``standardize`` (default) each
   dimension is centred and scaled by its mean and std over the sample pool, and Ward clusters the unit
   directions of these vectors (cosine geometry), both for sub-concepts and for groups.
   ``standardize=False`` is the paper's raw Euclidean variant.
12. *Determinism.* scipy's Ward linkage, a silhouette from the distance matrix, clusters numbered by first
   appearance, groups ranked by importance: the same model, inputs and seed give the same circuit.
   ``seed`` only drives the random neurons and subsets of the fidelity checks.

Reference-corpus activations (a_l, the block inputs and the MLP writes at every position) are computed in
one batched pass for the layers a circuit needs and cached per engine and corpus (LRU over at most 14
layers; ~37 MB per layer for the shipped 3.4k-token corpus on SmolLM2). ``warm(engine)`` fills the default
window ahead of the first request (~5 s on 2 cores). ``group_ablation`` turns a group into an
``ids.Ablation``.

Result (``build`` / ``Engine.circuit``), plain JSON, floats to 5 significant digits. Neuron ids are
``L<layer>.N<index>``; group ids ``G<layer>.<rank>`` (rank 0 = most important); the root is ``"root"``.
Every edge points from the lower (earlier) layer to the upper one, as ``analysis`` edges do::

    {"kind": "circuit",
     "model": {"name", "weights_sha256", "n_layers", "neurons_per_layer", "arch"},
     "prompts": [{"prompt", "tokens": [str], "metric_value",
                  "target": {"token", "id", "prob", "logprob"}}],
     "target": {"token", "id"} | null,          # null when the prompts' own top tokens differ
     "contrast": {"token", "id"} | null, "metric": "logprob" | "logit_diff",
     "params": {"tau", "k", "ig_steps", "fast", "method": "ig" | "attribution", "layers": [lo, hi],
                "max_neurons", "max_groups", "draws", "subsets", "seed", "standardize",
                "corpus": {"texts", "samples", "shipped"}, "netb": "closed-form" | "autograd"},
     "layers": [{"layer", "critical", "candidates", "coverage", "groups": [group id]}],   # hi first
     "root": {"id": "root", "core": [{"neuron", "importance", "weight", "raw"}]},
     "groups": [{"id", "layer", "importance", "neurons": [neuron id],
                 "members": [{"neuron", "subconcept", "size", "importance", "activation"}],
                 "samples": [SAMPLE + {"neuron", "activation", "distance"}],       # 5 nearest the centroid
                 "writes": {"top": [{"token", "id", "score"}], "bottom": [...]},
                 "stability": {"support", "label"} | null}],
     "group_edges": [{"source": lower group, "target": upper group | "root", "weight"}],
     "neurons": [{"id", "layer", "neuron", "importance", "activation", "activation_abs",
                  "subconcepts": [{"index", "size", "activation", "importance",
                                   "samples": [SAMPLE + {"activation"}]}],        # 3 per sub-concept
                  "core": [{"neuron", "importance", "critical"}],                # [] for the bottom layer
                  "writes": [str], "stability": {"support", "label"} | null}],
     "edges": [{"source": lower neuron, "target": upper neuron | "root", "subconcept", "weight", "raw",
                "critical"}],                                                   # sum |weight| = 1 per sub-concept
     "fidelity": {
        "ablation": [{"layer": int | "all", "n", "core": {"delta_prob", "delta_metric"},
                      "random": {"delta_prob_mean", "delta_prob_std", "delta_metric_mean",
                                 "delta_metric_std", "draws"}}],
        "correlation": {"root": {"layer", "subsets", "pearson", "spearman", "signed_pearson"},
                        "neurons": [{"neuron", "layer", "subsets", "samples", "pearson", "spearman"}]},
        "stability": null | {"prompts", "rule", "stable": [id], "specific": [id],
                             "neurons": [{"id", "support", "label", "attribution": [per prompt]}],
                             "groups": [{"id", "support", "label"}]}},
     "timings": {"reference_s", "trace_s", "root_s", "layers_s": {layer: s}, "groups_s", "fidelity_s",
                 "writes_s", "total_s"},
     "repro": {"torch", "transformers", "engine_version", "dtype", "device"}}

    SAMPLE = {"text", "source": "corpus" | "prompt", "position", "token", "tokens": [str], "focus"}
    # tokens: the text's tokens around the sample; tokens[focus] == token is the one to highlight
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist, squareform
from scipy.stats import pearsonr, spearmanr
from torch import nn

from app.engine import decode
from app.engine.errors import BadInput, UnsupportedArchitecture
from app.engine.hooks import capture, hooked, rewrite
from app.engine.ids import Ablation, NeuronId
from app.engine.impacts import Metric, last_logits

if TYPE_CHECKING:
    from app.engine.service import Engine

Step = Callable[[str, float, str], None]

DEFAULT_WINDOW = 6
SUBSET_SIZES = (1, 5, 10, 20, 50)
MANUAL_FAMILIES = ("llama", "mistral", "qwen2")
MAX_TEXT_TOKENS = 64
STABLE, SPECIFIC = 0.75, 0.25
CORR_SAMPLES = 16


# ================================================================================================
# Model access: layers, final norm, traces of prompts, replay of the upper stack
# ================================================================================================
class _Stop(Exception):
    """Raised inside a hook to end a forward pass once the wanted tensors are captured."""


def _layers(engine: Engine) -> list[nn.Module]:
    return engine.adapter._layers(engine.model)


def _final_norm(model: nn.Module) -> nn.Module:
    bases = []
    if hasattr(model, "get_decoder"):
        try:
            bases.append(model.get_decoder())
        except (AttributeError, NotImplementedError):
            pass
    bases += [getattr(model, name) for name in ("model", "transformer", "gpt_neox") if hasattr(model, name)]
    for base in bases:
        for name in ("norm", "ln_f", "final_layer_norm", "final_layernorm"):
            module = getattr(base, name, None)
            if isinstance(module, nn.Module):
                return module
    raise UnsupportedArchitecture("cannot find the final norm of this model")


def _bias(module: nn.Module) -> torch.Tensor | None:
    return getattr(module, "bias", None)


def _call_layer(layer: nn.Module, hidden: torch.Tensor, call: tuple[tuple, dict]) -> torch.Tensor:
    args, kwargs = call
    out = layer(hidden, *args, **kwargs)
    return out[0] if isinstance(out, tuple) else out


@dataclass
class _Trace:
    """One prompt's forward pass: what replays and the sample pool need, all detached."""

    ids: torch.Tensor  # [1, T]
    hin: list[torch.Tensor]  # per layer [1, T, d]: input of decoder block l
    acts: list[torch.Tensor]  # per layer [1, T, d_ff]
    writes: list[torch.Tensor]  # per layer [1, T, d]: down_l(a_l) without its bias
    calls: list[tuple[tuple, dict]]  # per layer: the block's call arguments, for replay
    logits: torch.Tensor  # [vocab] at the last position, float
    out: torch.Tensor  # [1, T, d]: output of the last block, before the final norm

    def block_out(self, layer: int) -> torch.Tensor:
        """Output of block ``layer`` [1, T, d]."""
        return self.hin[layer + 1] if layer + 1 < len(self.hin) else self.out


def _trace(engine: Engine, ids: torch.Tensor) -> _Trace:
    layers = _layers(engine)
    hin: dict[int, torch.Tensor] = {}
    calls: dict[int, tuple] = {}
    writes: dict[int, torch.Tensor] = {}
    acts: dict[int, torch.Tensor] = {}

    def pre(layer: int):
        def hook(_m, args, kwargs):
            hidden = args[0] if args else kwargs["hidden_states"]
            hin[layer] = hidden.detach()
            calls[layer] = (tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "hidden_states"})
        return hook

    def post(layer: int):
        bias = _bias(engine.sites[layer].down)

        def hook(_m, _args, output):
            writes[layer] = (output - bias if bias is not None else output).detach()
        return hook

    last: dict[str, torch.Tensor] = {}

    def final(_m, _args, output):
        last["out"] = (output[0] if isinstance(output, tuple) else output).detach()

    def factory():
        handles = [layer.register_forward_pre_hook(pre(i), with_kwargs=True) for i, layer in enumerate(layers)]
        handles += [site.down.register_forward_hook(post(i)) for i, site in enumerate(engine.sites)]
        return handles + [layers[-1].register_forward_hook(final)]

    with torch.no_grad(), hooked(factory), capture(engine.sites, store=acts):
        logits = last_logits(engine.model, ids)
    n = len(layers)
    return _Trace(ids, [hin[i] for i in range(n)], [acts[i].detach() for i in range(n)],
                  [writes[i] for i in range(n)], [calls[i] for i in range(n)], logits[0].detach().float(),
                  last["out"])


def _replay(engine: Engine, trace: _Trace, start: int, hidden: torch.Tensor) -> torch.Tensor:
    """Logits [B, vocab] at the last position from block ``start`` on, given its input ``hidden`` [B, T, d].

    Blocks are the model's own modules called with the arguments recorded in ``trace`` (rotary tables,
    masks); any active ``hooks.rewrite`` edits apply as in a normal forward."""
    layers = _layers(engine)
    for index in range(start, len(layers)):
        hidden = _call_layer(layers[index], hidden, trace.calls[index])
    last = _final_norm(engine.model)(hidden[:, -1:, :])
    return engine.model.get_output_embeddings()(last)[:, 0, :].float()


def _replay_from_mlp(engine: Engine, trace: _Trace, layer: int, acts: torch.Tensor) -> torch.Tensor:
    """Logits [B, vocab] when a_layer is replaced by ``acts`` [B, T, d_ff]: the block's output is rebuilt from
    its recorded output by swapping the MLP write, then the blocks above are replayed."""
    down = engine.sites[layer].down
    dtype = trace.out.dtype
    base = trace.block_out(layer) - down(trace.acts[layer])
    return _replay(engine, trace, layer + 1, base + down(acts.to(dtype)))


def _masked_probs(engine: Engine, trace: _Trace, masks: dict[int, torch.Tensor],
                  metric: Metric) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, p(target)) for each row of the per-layer keep-masks [B, d_ff] (1 keeps a neuron, 0 zeroes it at
    every position), replaying from the lowest masked layer's MLP."""
    start = min(masks)
    above = sorted(layer for layer in masks if layer != start)

    def edit(layer: int, a: torch.Tensor) -> torch.Tensor:
        return a * masks[layer][:, None, :].to(a.dtype)

    with torch.no_grad(), rewrite(engine.sites, edit, layers=above):
        logits = _replay_from_mlp(engine, trace, start, trace.acts[start] * masks[start][:, None, :].to(trace.acts[start].dtype))
    return metric(logits), torch.softmax(logits, dim=-1)[:, metric.target_id]


def _root_ig(engine: Engine, trace: _Trace, metric: Metric, layer: int, alphas: torch.Tensor) -> torch.Tensor:
    """IG (or activation x gradient) of M w.r.t. a_layer at every position, summed over positions: [d_ff]."""
    a = trace.acts[layer][0].float()
    x = (alphas[:, None, None] * a[None]).requires_grad_(True)
    with torch.enable_grad():
        value = metric(_replay_from_mlp(engine, trace, layer, x))
        (grad,) = torch.autograd.grad(value.sum(), x)
    return (a * grad.mean(dim=0)).sum(dim=0)


def _prompt_attributions(engine: Engine, trace: _Trace, metric: Metric, lo: int, hi: int) -> torch.Tensor:
    """Activation x gradient of M on every neuron of layers lo..hi, summed over positions: [hi-lo+1, d_ff]."""
    store: dict[int, torch.Tensor] = {}
    x = trace.acts[lo].float().clone().requires_grad_(True)
    with torch.enable_grad(), capture(engine.sites, store=store):
        value = metric(_replay_from_mlp(engine, trace, lo, x))
        acts = [x] + [store[layer] for layer in range(lo + 1, hi + 1)]
        grads = torch.autograd.grad(value.sum(), acts)
    return torch.stack([(a.detach() * g).sum(dim=(0, 1)) for a, g in zip(acts, grads)]).float()


# ================================================================================================
# Reference corpus: texts, one batched pass, cached per engine
# ================================================================================================
def reference_texts() -> list[str]:
    """The shipped reference corpus: plain English sentences, one per line."""
    text = files("app.engine").joinpath("data/reference.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def read_texts(path: str | Path) -> list[str]:
    """Texts from a file: one per line, or JSON Lines with a ``text`` field (``.jsonl``)."""
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8")
    except OSError as error:
        raise BadInput(f"cannot read '{path}': {error.strerror or error}") from error
    texts = []
    for number, line in enumerate(raw.splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        if path.suffix.lower() == ".jsonl":
            try:
                item = json.loads(line)
            except json.JSONDecodeError as error:
                raise BadInput(f"{path.name} line {number} is not JSON: {error.msg}") from error
            line = item.get("text") if isinstance(item, dict) else item if isinstance(item, str) else None
            if not isinstance(line, str) or not line.strip():
                raise BadInput(f"{path.name} line {number} has no 'text' string")
        texts.append(line.strip())
    if not texts:
        raise BadInput(f"'{path}' holds no texts; write one text per line")
    return texts


class ReferenceCache:
    """Activations of one corpus under one engine, per layer: a_l [N, d_ff], block input [N, d], MLP write
    [N, d], at every token of every text (N positions, texts laid out one after another)."""

    def __init__(self, engine: Engine, texts: Sequence[str], *, max_layers: int = 14):
        self.texts: list[str] = []
        self.ids: list[list[int]] = []
        for text in texts:
            ids = engine.tokenizer(text, add_special_tokens=True).input_ids[:MAX_TEXT_TOKENS]
            if len(ids) >= 2:
                self.texts.append(text)
                self.ids.append(list(ids))
        self.lengths = np.array([len(i) for i in self.ids], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.size = int(self.lengths.sum())
        self.acts: dict[int, torch.Tensor] = {}
        self.hin: dict[int, torch.Tensor] = {}
        self.writes: dict[int, torch.Tensor] = {}
        self.max_layers = max_layers
        self._used: dict[int, float] = {}

    def ensure(self, engine: Engine, layers: Sequence[int], *, batch: int = 24) -> float:
        """Compute the missing layers in one batched pass (stopping after the highest); seconds spent."""
        wanted = sorted(set(layers))
        now = time.monotonic()
        for layer in wanted:
            self._used[layer] = now
        missing = [layer for layer in wanted if layer not in self.acts]
        if not missing:
            return 0.0
        started = time.perf_counter()
        top = max(missing)
        acts: dict[int, list] = {layer: [] for layer in missing}
        hins: dict[int, list] = {layer: [] for layer in missing}
        writes: dict[int, list] = {layer: [] for layer in missing}
        order = np.argsort(self.lengths, kind="stable")
        pad = engine.tokenizer.pad_token_id if engine.tokenizer.pad_token_id is not None else 0
        flat_index: list[np.ndarray] = []
        for first in range(0, len(order), batch):
            chosen = order[first:first + batch]
            width = int(self.lengths[chosen].max())
            ids = torch.full((len(chosen), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chosen), width), dtype=torch.long)
            for row, text in enumerate(chosen):
                ids[row, : self.lengths[text]] = torch.tensor(self.ids[text])
                mask[row, : self.lengths[text]] = 1
            ids, mask = ids.to(engine.device), mask.to(engine.device)
            got: dict[str, dict[int, torch.Tensor]] = {"a": {}, "h": {}, "w": {}}
            factory = _corpus_hooks(engine, missing, top, got, mask.bool())
            with torch.no_grad(), hooked(factory):
                try:
                    engine.model(input_ids=ids, attention_mask=mask, use_cache=False)
                except _Stop:
                    pass
            for layer in missing:
                acts[layer].append(got["a"][layer])
                hins[layer].append(got["h"][layer])
                writes[layer].append(got["w"][layer])
            flat_index.append(np.concatenate([np.arange(self.starts[t], self.starts[t] + self.lengths[t])
                                              for t in chosen]))
        where = torch.as_tensor(np.argsort(np.concatenate(flat_index), kind="stable"), device=engine.device)
        for layer in missing:
            self.acts[layer] = torch.cat(acts[layer])[where]
            self.hin[layer] = torch.cat(hins[layer])[where]
            self.writes[layer] = torch.cat(writes[layer])[where]
        self._evict(keep=set(wanted))
        return time.perf_counter() - started

    def _evict(self, keep: set[int]) -> None:
        """Drop the least recently used layers beyond ``max_layers`` (never one in ``keep``)."""
        while len(self.acts) > max(self.max_layers, len(keep)):
            oldest = min((layer for layer in self.acts if layer not in keep), key=lambda l: self._used.get(l, 0.0))
            for table in (self.acts, self.hin, self.writes):
                table.pop(oldest, None)


def _corpus_hooks(engine: Engine, layers: list[int], top: int, got: dict, valid: torch.Tensor) -> Callable:
    """Hook factory for the corpus pass: block inputs, a_l and MLP writes at the valid (unpadded) tokens of
    ``layers``, into ``got``; the pass stops after the MLP of layer ``top``."""
    modules = _layers(engine)

    def pre(layer):
        def hook(_m, args, kwargs):
            got["h"][layer] = (args[0] if args else kwargs["hidden_states"])[valid].float()
        return hook

    def down_pre(layer):
        def hook(_m, args):
            got["a"][layer] = args[0][valid].float()
        return hook

    def down_post(layer):
        bias = _bias(engine.sites[layer].down)

        def hook(_m, _args, output):
            got["w"][layer] = (output - bias if bias is not None else output)[valid].float()
            if layer == top:
                raise _Stop
        return hook

    def factory():
        handles = []
        for layer in layers:
            handles.append(modules[layer].register_forward_pre_hook(pre(layer), with_kwargs=True))
            handles.append(engine.sites[layer].down.register_forward_pre_hook(down_pre(layer)))
            handles.append(engine.sites[layer].down.register_forward_hook(down_post(layer)))
        return handles

    return factory


_CACHES: weakref.WeakKeyDictionary[Engine, dict[str, ReferenceCache]] = weakref.WeakKeyDictionary()


def reference_cache(engine: Engine, texts: Sequence[str] | None = None) -> ReferenceCache:
    """The engine's cache for ``texts`` (default: the shipped corpus), created on first use."""
    texts = list(texts) if texts is not None else reference_texts()
    key = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    per_engine = _CACHES.setdefault(engine, {})
    if key not in per_engine:
        if len(per_engine) >= 2:
            per_engine.pop(next(iter(per_engine)))
        per_engine[key] = ReferenceCache(engine, texts)
    return per_engine[key]


def warm(engine: Engine, layers: Sequence[int] | None = None) -> float:
    """Fill the shipped corpus' cache for the default window ahead of the first circuit; seconds spent."""
    lo, hi = resolve_window(None, engine.n_layers) if layers is None else (min(layers), max(layers))
    with engine.lock:
        return reference_cache(engine).ensure(engine, range(lo - 1, hi + 1))


class _Pool:
    """Samples: every position >= 1 of the corpus texts and of the prompts, with per-layer tensors."""

    def __init__(self, cache: ReferenceCache, traces: list[_Trace], prompts: list[str], device):
        self.cache, self.traces = cache, traces
        self.texts = cache.texts + prompts
        self.ids = cache.ids + [t.ids[0].tolist() for t in traces]
        self.source = ["corpus"] * len(cache.texts) + ["prompt"] * len(prompts)
        self.lengths = np.array([len(i) for i in self.ids], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.owner = np.repeat(np.arange(len(self.ids)), self.lengths)
        self.pos = np.arange(int(self.lengths.sum())) - self.starts[self.owner]
        self.candidates = torch.as_tensor(np.nonzero(self.pos >= 1)[0], device=device)
        self._memo: dict[tuple[str, int], torch.Tensor] = {}
        self._strings: dict[int, str] = {}

    def _table(self, kind: str, layer: int) -> torch.Tensor:
        key = (kind, layer)
        if key not in self._memo:
            corpus = {"a": self.cache.acts, "h": self.cache.hin, "w": self.cache.writes}[kind][layer]
            field = {"a": "acts", "h": "hin", "w": "writes"}[kind]
            parts = [corpus] + [getattr(t, field)[layer][0].float() for t in self.traces]
            self._memo[key] = torch.cat(parts)
        return self._memo[key]

    def acts(self, layer: int) -> torch.Tensor:
        return self._table("a", layer)

    def hin(self, layer: int) -> torch.Tensor:
        return self._table("h", layer)

    def writes(self, layer: int) -> torch.Tensor:
        return self._table("w", layer)

    def token(self, token_id: int, tokenizer) -> str:
        if token_id not in self._strings:
            self._strings[token_id] = tokenizer.decode([token_id])
        return self._strings[token_id]

    def sample(self, flat: int, *, before: int = 10, after: int = 3, tokenizer=None) -> dict:
        """A sample as shown: its text, the tokens around it and which of them is the sample's token."""
        text = int(self.owner[flat])
        pos = int(self.pos[flat])
        ids = self.ids[text]
        lo, hi = max(0, pos - before), min(len(ids), pos + after + 1)
        tokens = [self.token(i, tokenizer) for i in ids[lo:hi]]
        return {"text": self.texts[text], "source": self.source[text], "position": pos,
                "token": tokens[pos - lo], "tokens": tokens, "focus": pos - lo}


# ================================================================================================
# netB: IG of a_{l,n}(t) w.r.t. a_{l-1}(<= t), batched over samples and alpha steps
# ================================================================================================
def _manual_supported(engine: Engine) -> bool:
    if engine.adapter.family not in MANUAL_FAMILIES or not engine.adapter.gated:
        return False
    config = engine.model.config
    if getattr(config, "pretraining_tp", 1) not in (None, 1):
        return False
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True) and window < MAX_TEXT_TOKENS + 8:
        return False
    base = getattr(engine.model, "model", None)
    if base is None or not hasattr(base, "rotary_emb"):
        return False
    for layer in _layers(engine):
        attn = getattr(layer, "self_attn", None)
        if attn is None or any(not hasattr(attn, name) for name in ("q_proj", "k_proj", "v_proj", "o_proj")):
            return False
        if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
            return False
        for norm in ("input_layernorm", "post_attention_layernorm"):
            module = getattr(layer, norm, None)
            if module is None or not hasattr(module, "variance_epsilon") or type(module).__name__.lower().find("gemma") >= 0:
                return False
        if not hasattr(layer.mlp, "act_fn"):
            return False
    return True


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, head_dim: int, *, transpose: bool = False):
    """RoPE (HF ``apply_rotary_pos_emb`` convention) of ``x`` [..., n * head_dim] with cos/sin [..., head_dim]
    per row; ``transpose`` applies R^T, which maps a gradient w.r.t. the rotated vector back."""
    shape = x.shape
    x = x.reshape(*shape[:-1], -1, head_dim)
    half = head_dim // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    cos, sin = cos[..., None, :], sin[..., None, :]
    out = x * cos - rotated * sin if transpose else x * cos + rotated * sin
    return out.reshape(shape)


class _LlamaBlock:
    """Block l of a pre-norm Llama-style model as explicit float32 tensor algebra (adaptation 4).

    netB_l's input at position t' is h(t') = R(t') + alpha * P(t'), with P = W_down a_{l-1} the MLP write of
    layer l-1 and R the rest of the residual stream. The block reads h through RMSNorm and the q/k/v
    projections, so with Z(h) = W_qkv (gamma1 * h) (bias-free) and rho = rms(h):
    q/k/v(h) = Z(h) / rho + b, rotary embedding after. ``attend`` evaluates a_{l,n}(t) from rotated q (at
    t only), rotated k and v (positions <= t) and h(t) for the residual."""

    def __init__(self, engine: Engine, layer: int):
        block = _layers(engine)[layer]
        attn, mlp = block.self_attn, block.mlp
        f32 = lambda t: None if t is None else t.detach().float()
        self.g1, self.eps1 = f32(block.input_layernorm.weight), float(block.input_layernorm.variance_epsilon)
        self.g2 = f32(block.post_attention_layernorm.weight)
        self.eps2 = float(block.post_attention_layernorm.variance_epsilon)
        config = engine.model.config
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(attn.head_dim)
        self.scaling = float(attn.scaling)
        self.dq, self.dkv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        self.wqkv = torch.cat([f32(attn.q_proj.weight), f32(attn.k_proj.weight), f32(attn.v_proj.weight)])
        biases = [_bias(attn.q_proj), _bias(attn.k_proj), _bias(attn.v_proj)]
        self.bqkv = None if all(b is None for b in biases) else torch.cat(
            [f32(b) if b is not None else torch.zeros(n, device=self.wqkv.device)
             for b, n in zip(biases, (self.dq, self.dkv, self.dkv))])
        self.wo, self.bo = f32(attn.o_proj.weight), f32(_bias(attn.o_proj))
        site = engine.sites[layer]
        self.wg, self.bg = f32(site.gate.weight), f32(_bias(site.gate))
        self.wu, self.bu = f32(site.up.weight), f32(_bias(site.up))
        self.act = mlp.act_fn
        self.down_prev = f32(engine.sites[layer - 1].down.weight)  # [d, d_ff]
        self.m = (self.wqkv * self.g1) @ self.down_prev  # [dq + 2 dkv, d_ff]: D^T diag(gamma1) W_qkv^T, transposed
        self.d = self.wqkv.shape[1]
        self.rotary = engine.model.model.rotary_emb
        self._cos: torch.Tensor | None = None

    def tables(self, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        if self._cos is None or self._cos.shape[0] < length:
            positions = torch.arange(max(length, MAX_TEXT_TOKENS + 1), device=device)[None]
            cos, sin = self.rotary(torch.zeros(1, device=device, dtype=torch.float32), positions)
            self._cos, self._sin = cos[0].float(), sin[0].float()
        return self._cos, self._sin

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """Z(h) = W_qkv (gamma1 * h), bias-free: [..., dq + 2 dkv]."""
        return (h * self.g1) @ self.wqkv.T

    def rotate_qk(self, z: torch.Tensor, positions: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        """Apply RoPE (or its transpose) to the q and k parts of ``z`` [..., dq + 2 dkv] at ``positions`` [...]."""
        cos, sin = self.tables(int(positions.max()) + 1, z.device)
        cos, sin = cos[positions], sin[positions]
        q = _rotate(z[..., : self.dq], cos, sin, self.head_dim, transpose=transpose)
        k = _rotate(z[..., self.dq: self.dq + self.dkv], cos, sin, self.head_dim, transpose=transpose)
        return torch.cat([q, k, z[..., self.dq + self.dkv:]], dim=-1)

    def rotate_part(self, x: torch.Tensor, positions: torch.Tensor, *, transpose: bool = False) -> torch.Tensor:
        """RoPE (or its transpose) of a q-shaped or k-shaped tensor [..., n * head_dim] at ``positions``."""
        cos, sin = self.tables(int(positions.max()) + 1, x.device)
        return _rotate(x, cos[positions], sin[positions], self.head_dim, transpose=transpose)

    def bias_rot(self, positions: torch.Tensor) -> torch.Tensor | None:
        """The q/k/v biases, rotated at ``positions``: [..., dq + 2 dkv], or None."""
        if self.bqkv is None:
            return None
        return self.rotate_qk(self.bqkv.expand(*positions.shape, -1), positions)

    def attend(self, q, k, v, hres, valid, neurons) -> torch.Tensor:
        """a_{l,n}(t) [B] from rotated q [B, dq] at t, rotated k [B, T, dkv], v [B, T, dkv], h(t) [B, d]."""
        batch, length = k.shape[:2]
        rep = self.heads // self.kv_heads
        qh = q.reshape(batch, self.kv_heads, rep, self.head_dim)
        kh = k.reshape(batch, length, self.kv_heads, self.head_dim)
        vh = v.reshape(batch, length, self.kv_heads, self.head_dim)
        scores = torch.einsum("bgrd,btgd->bgrt", qh, kh) * self.scaling
        scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
        ctx = torch.einsum("bgrt,btgd->bgrd", torch.softmax(scores, dim=-1), vh).reshape(batch, self.dq)
        out = ctx @ self.wo.T
        if self.bo is not None:
            out = out + self.bo
        y = hres + out
        x2 = self.g2 * y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps2)
        gate = (x2 * self.wg[neurons]).sum(-1)
        up = (x2 * self.wu[neurons]).sum(-1)
        if self.bg is not None:
            gate = gate + self.bg[neurons]
        if self.bu is not None:
            up = up + self.bu[neurons]
        return self.act(gate) * up


class _NetB:
    """IG of a_{l,n}(t) w.r.t. a_{l-1} over the sample's text, for many (neuron, sample) rows."""

    def __init__(self, engine: Engine, pool: _Pool, alphas: torch.Tensor, *, chunk: int = 24576):
        self.engine, self.pool, self.alphas = engine, pool, alphas
        self.manual = _manual_supported(engine)
        self.chunk = chunk
        self._blocks: dict[int, _LlamaBlock] = {}
        self._calls: dict[tuple[int, int], tuple] = {}
        self.checked: dict[int, float] = {}
        self.positions = torch.as_tensor(pool.pos, device=engine.device)

    # ----- public ------------------------------------------------------------------------------
    def ig(self, layer: int, neurons: torch.Tensor, flats: torch.Tensor,
           on_chunk: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """[R, d_ff]: IG_j for rows (neurons[r] at ``layer``, sample flats[r]) over layer-1 activations."""
        if self.manual and self._check(layer):
            return self._manual_ig(layer, neurons, flats, on_chunk)
        return self._generic_ig(layer, neurons, flats, on_chunk)

    def ablated(self, layer: int, neuron: int, flats: torch.Tensor, subsets: list[torch.Tensor]) -> torch.Tensor:
        """[S, R]: a_{layer,neuron}(t) on samples ``flats`` with each subset of layer-1 neurons zeroed."""
        if self.manual and self._check(layer):
            return self._manual_ablated(layer, neuron, flats, subsets)
        return self._generic_ablated(layer, neuron, flats, subsets)

    # ----- manual path (adaptation 4) ----------------------------------------------------------
    def _block(self, layer: int) -> _LlamaBlock:
        if layer not in self._blocks:
            self._blocks[layer] = _LlamaBlock(self.engine, layer)
        return self._blocks[layer]

    def _check(self, layer: int) -> bool:
        """The closed form must reproduce the model's own a_l on a few samples, else use the generic path."""
        if layer not in self.checked:
            pool = self.pool
            cand = pool.candidates
            picks = cand[torch.linspace(0, len(cand) - 1, 6).long()]
            neurons = torch.arange(6, device=picks.device) * 7 % self.engine.width
            try:
                got = self._manual_values(layer, neurons, picks)
            except (RuntimeError, AttributeError, TypeError, IndexError):
                self.checked[layer] = float("inf")
                return False
            want = pool.acts(layer)[picks, neurons]
            scale = pool.acts(layer)[picks].abs().max().clamp_min(1e-6)
            self.checked[layer] = float((got - want).abs().max() / scale)
        return self.checked[layer] < 1e-3

    def _prefix(self, flats: torch.Tensor):
        """Per row: the text's positions 0..t as a padded [R, T] index into the pool, validity, t."""
        pool = self.pool
        flats_np = flats.cpu().numpy()
        starts = torch.as_tensor(pool.starts[pool.owner[flats_np]], device=flats.device)
        tq = flats - starts
        length = int(tq.max()) + 1
        offs = torch.arange(length, device=flats.device)
        valid = offs[None, :] <= tq[:, None]
        index = torch.where(valid, starts[:, None] + offs[None, :], flats[:, None])
        return index, valid, tq

    def _evaluate(self, block: _LlamaBlock, h: torch.Tensor, z: torch.Tensor, valid, tq, neurons) -> torch.Tensor:
        """a_{l,n}(t) from block inputs h [B, T, d] and their projections z [B, T, dq + 2 dkv]."""
        length, dq, dkv = h.shape[1], block.dq, block.dkv
        positions = torch.arange(length, device=h.device).expand(h.shape[0], -1)
        rho = torch.sqrt(h.pow(2).sum(-1) / block.d + block.eps1)  # [B, T]
        at = lambda x: x.gather(1, tq[:, None, None].expand(-1, 1, x.shape[-1]))[:, 0]
        rho_t = rho.gather(1, tq[:, None])[:, 0]
        q = at(z[..., :dq]) / rho_t[:, None]
        kv = z[..., dq:] / rho[..., None]
        if block.bqkv is not None:
            q, kv = q + block.bqkv[:dq], kv + block.bqkv[dq:]
        q = block.rotate_part(q, tq)
        k = block.rotate_part(kv[..., :dkv], positions)
        return block.attend(q, k, kv[..., dkv:], at(h), valid, neurons)

    def _manual_values(self, layer: int, neurons: torch.Tensor, flats: torch.Tensor) -> torch.Tensor:
        block = self._block(layer)
        index, valid, tq = self._prefix(flats)
        h = self.pool.hin(layer)[index]
        with torch.no_grad():
            return self._evaluate(block, h, block.project(h), valid, tq, neurons)

    def _manual_ig(self, layer, neurons, flats, on_chunk) -> torch.Tensor:
        block = self._block(layer)
        pool = self.pool
        alphas = self.alphas
        steps = len(alphas)
        dq, dkv = block.dq, block.dkv
        index_all, _, tq_all = self._prefix(flats)
        # every position any row needs: projected and rotated once, whatever the number of rows and steps
        used, inverse = torch.unique(index_all, return_inverse=True)
        pos_u = self.positions[used]
        hin, writes = pool.hin(layer)[used], pool.writes(layer - 1)[used]
        rest = hin - writes
        zr = block.rotate_qk(block.project(rest), pos_u)  # [U, dq + 2 dkv], rotated, bias-free
        zw = block.rotate_qk(block.project(writes), pos_u)
        del hin
        bias = block.bias_rot(pos_u)
        n_rr, n_rw, n_ww = (rest * rest).sum(-1), (rest * writes).sum(-1), (writes * writes).sum(-1)
        d_rest, d_write = rest @ block.down_prev, writes @ block.down_prev  # [U, d_ff]: D^T R, D^T P
        acts_prev = pool.acts(layer - 1)[used]
        a_rest, a_write = acts_prev * d_rest, acts_prev * d_write
        del d_rest, d_write
        m_q, m_kv = block.m[:dq], block.m[dq:]
        width = block.down_prev.shape[1]
        out = torch.empty(len(flats), width, device=flats.device)
        order = torch.argsort(tq_all, stable=True)
        sorted_len = (tq_all[order] + 1).cpu().numpy()
        start, total = 0, len(order)
        a = alphas.view(1, steps, 1)
        while start < total:
            lengths = sorted_len[start:]
            cost = np.arange(1, len(lengths) + 1) * lengths
            size = max(1, int(np.searchsorted(np.maximum(cost * steps, cost * 6), self.chunk, side="right")))
            rows = order[start:start + size]
            count = len(rows)
            tq = tq_all[rows]
            length = int(tq.max()) + 1
            idx = inverse[rows][:, :length]  # [r, T] into ``used``
            valid = torch.arange(length, device=flats.device)[None, :] <= tq[:, None]
            tpos = idx.gather(1, tq[:, None])[:, 0]  # [r]
            norm_sq = n_rr[idx][:, None] + 2 * a * n_rw[idx][:, None] + a * a * n_ww[idx][:, None]  # [r, m, T]
            rho = torch.sqrt(norm_sq / block.d + block.eps1)
            rho_t = rho.gather(2, tq[:, None, None].expand(-1, steps, 1))[:, :, 0]  # [r, m]
            zr_kv, zw_kv = zr[idx][..., dq:], zw[idx][..., dq:]  # [r, T, 2 dkv]
            kv = (zr_kv[:, None] + a[..., None] * zw_kv[:, None]) / rho[..., None]  # [r, m, T, 2 dkv]
            q = (zr[tpos, :dq][:, None] + a * zw[tpos, :dq][:, None]) / rho_t[..., None]  # [r, m, dq]
            if bias is not None:
                kv = kv + bias[idx][:, None, :, dq:]
                q = q + bias[tpos, :dq][:, None]
            hres = rest[tpos][:, None] + a * writes[tpos][:, None]  # [r, m, d]
            leaves = [t.reshape(count * steps, *t.shape[2:]).detach().requires_grad_(True)
                      for t in (q, kv[..., :dkv], kv[..., dkv:], hres)]
            with torch.enable_grad():
                value = block.attend(*leaves, valid.repeat_interleave(steps, dim=0),
                                     neurons[rows].repeat_interleave(steps))
                gq, gk, gv, gres = torch.autograd.grad(value.sum(), leaves)
            gq = gq.view(count, steps, dq)
            gkv = torch.cat([gk, gv], -1).view(count, steps, length, 2 * dkv)
            # RMSNorm transpose: sigma(t') = Z(h_alpha(t')) . g(t') / (d rho^3), Z(h_alpha) = Z_R + alpha Z_P
            sig = (zr_kv[:, None] * gkv).sum(-1) + a * (zw_kv[:, None] * gkv).sum(-1)  # [r, m, T]
            sig_q = (zr[tpos, :dq][:, None] * gq).sum(-1) + a[..., 0] * (zw[tpos, :dq][:, None] * gq).sum(-1)
            sig = sig.scatter_add(2, tq[:, None, None].expand(-1, steps, 1), sig_q[..., None])
            sig = sig / (block.d * rho.pow(3))
            s1, s2 = sig.mean(1), (sig * a).mean(1)  # [r, T]
            gkv = (gkv / rho[..., None]).mean(1)  # [r, T, 2 dkv], rotated
            gq = (gq / rho_t[..., None]).mean(1)  # [r, dq], rotated
            pos = torch.arange(length, device=flats.device).expand(count, -1)
            gk = block.rotate_part(gkv[..., :dkv], pos, transpose=True)
            gq = block.rotate_part(gq, tq, transpose=True)
            gkv = torch.cat([gk, gkv[..., dkv:]], -1)
            # sum over the valid positions t' only (packed), then per row
            rows_i = torch.arange(count, device=flats.device)[:, None].expand(-1, length)[valid]
            cols = idx[valid]
            ig = torch.zeros(count, width, device=flats.device).index_add_(
                0, rows_i, (gkv[valid] @ m_kv) * acts_prev[cols])
            # sum_t' s(t') (a * D^T R)(t') as one sparse [r, U] x [U, d_ff] product
            where = torch.stack([rows_i, cols])
            for weights, table in ((s1, a_rest), (s2, a_write)):
                sparse = torch.sparse_coo_tensor(where, weights[valid], (count, len(used)), check_invariants=False)
                ig -= torch.sparse.mm(sparse.coalesce(), table)
            ig += acts_prev[tpos] * (gq @ m_q + gres.view(count, steps, -1).mean(1) @ block.down_prev)
            out[rows] = ig
            start += count
            if on_chunk is not None:
                on_chunk(start, total)
        return out

    def _manual_ablated(self, layer, neuron, flats, subsets) -> torch.Tensor:
        """All subsets in one batch; the edit of h and of Z(h) is low-rank (|S| columns of W_down)."""
        block = self._block(layer)
        pool = self.pool
        index, valid, tq = self._prefix(flats)
        h = pool.hin(layer)[index]  # [R, T, d]
        a = pool.acts(layer - 1)[index]  # [R, T, d_ff]
        z = block.project(h)
        hs, zs = [], []
        for subset in subsets:
            hs.append(h - a[..., subset] @ block.down_prev[:, subset].T)
            zs.append(z - a[..., subset] @ block.m[:, subset].T)
        count = len(subsets)
        neurons = torch.full((count * len(flats),), neuron, device=flats.device)
        with torch.no_grad():
            values = self._evaluate(block, torch.cat(hs), torch.cat(zs), valid.repeat(count, 1), tq.repeat(count),
                                    neurons)
        return values.view(count, len(flats))

    # ----- generic path: autograd through the model's own block ---------------------------------
    def _call(self, layer: int, text: int) -> tuple:
        length = int(self.pool.lengths[text])
        key = (layer, length)
        if key not in self._calls:
            holder = {}

            def hook(_m, args, kwargs):
                holder["call"] = (tuple(args[1:]), {k: v for k, v in kwargs.items() if k != "hidden_states"})
                raise _Stop

            ids = torch.tensor([self.pool.ids[text]], device=self.engine.device)
            with torch.no_grad(), hooked(lambda: [_layers(self.engine)[layer].register_forward_pre_hook(
                    hook, with_kwargs=True)]):
                try:
                    self.engine.model(input_ids=ids, use_cache=False)
                except _Stop:
                    pass
            self._calls[key] = holder["call"]
        return self._calls[key]

    def _block_acts(self, layer: int, text: int, x: torch.Tensor) -> torch.Tensor:
        """a_layer [B, T, d_ff] of the text with a_{layer-1} replaced by ``x`` [B, T, d_ff]."""
        pool, engine = self.pool, self.engine
        start, length = int(pool.starts[text]), int(pool.lengths[text])
        a = pool.acts(layer - 1)[start:start + length][None]
        hin = pool.hin(layer)[start:start + length][None]
        down = engine.sites[layer - 1].down
        dtype = next(engine.model.parameters()).dtype
        hidden = (hin - down(a.to(dtype)).float() + down(x.to(dtype)).float()).to(dtype)
        store: dict[int, torch.Tensor] = {}

        def grab(_m, args):
            store["a"] = args[0]
            raise _Stop

        with hooked(lambda: [engine.sites[layer].down.register_forward_pre_hook(grab)]):
            try:
                _call_layer(_layers(engine)[layer], hidden, self._call(layer, text))
            except _Stop:
                pass
        return store["a"].float()

    def _by_text(self, flats: torch.Tensor) -> dict[int, list[int]]:
        groups: dict[int, list[int]] = {}
        for row, flat in enumerate(flats.tolist()):
            groups.setdefault(int(self.pool.owner[flat]), []).append(row)
        return groups

    def _generic_ig(self, layer, neurons, flats, on_chunk) -> torch.Tensor:
        pool = self.pool
        out = torch.empty(len(flats), self.engine.width, device=flats.device)
        groups = self._by_text(flats)
        for done, (text, rows) in enumerate(groups.items()):
            start, length = int(pool.starts[text]), int(pool.lengths[text])
            a = pool.acts(layer - 1)[start:start + length]
            x = (self.alphas[:, None, None] * a[None]).requires_grad_(True)
            with torch.enable_grad():
                acts = self._block_acts(layer, text, x)
                for row in rows:
                    t = int(pool.pos[int(flats[row])])
                    (grad,) = torch.autograd.grad(acts[:, t, int(neurons[row])].sum(), x, retain_graph=True)
                    out[row] = (a * grad.mean(dim=0)).sum(dim=0)
            if on_chunk is not None:
                on_chunk(done + 1, len(groups))
        return out

    def _generic_ablated(self, layer, neuron, flats, subsets) -> torch.Tensor:
        pool = self.pool
        out = torch.empty(len(subsets), len(flats), device=flats.device)
        with torch.no_grad():
            for text, rows in self._by_text(flats).items():
                start, length = int(pool.starts[text]), int(pool.lengths[text])
                a = pool.acts(layer - 1)[start:start + length]
                x = a[None].repeat(len(subsets), 1, 1)
                for s, subset in enumerate(subsets):
                    x[s, :, subset] = 0
                acts = self._block_acts(layer, text, x)
                for row in rows:
                    out[:, row] = acts[:, int(pool.pos[int(flats[row])]), neuron]
        return out


# ================================================================================================
# Clustering (Ward + silhouette, deterministic)
# ================================================================================================
def silhouette(distances: np.ndarray, labels: np.ndarray) -> float:
    """Mean silhouette coefficient from a distance matrix (sklearn's definition: 0 for singletons)."""
    values = np.unique(labels)
    onehot = (labels[:, None] == values[None, :]).astype(np.float64)  # [n, K]
    sizes = onehot.sum(0)
    sums = distances @ onehot  # [n, K]: summed distance to each cluster
    own = onehot.astype(bool)
    own_size = sizes[np.argmax(own, axis=1)]
    a = np.where(own_size > 1, (sums * own).sum(1) / np.maximum(own_size - 1, 1), 0.0)
    means = np.where(own, np.inf, sums / sizes[None, :])
    b = means.min(1)
    score = np.where(own_size > 1, (b - a) / np.maximum(np.maximum(a, b), 1e-300), 0.0)
    return float(score.mean())


def ward_clusters(vectors: np.ndarray, low: int, high: int) -> np.ndarray:
    """Cluster labels 0..K-1 (numbered by first appearance) from Ward linkage, K in low..high by the largest
    silhouette score (ties: fewer clusters). Fewer than 3 vectors, or no valid K, give one cluster."""
    count = len(vectors)
    high = min(high, count - 1)
    if count < 3 or high < max(2, low):
        return np.zeros(count, dtype=np.int64)
    vectors = np.asarray(vectors, dtype=np.float64)
    tree = linkage(vectors, method="ward")
    distances = squareform(pdist(vectors))
    best, best_score = None, -np.inf
    for k in range(max(2, low), high + 1):
        labels = fcluster(tree, k, criterion="maxclust")
        if len(np.unique(labels)) < 2:
            continue
        score = silhouette(distances, labels)
        if score > best_score + 1e-12:
            best, best_score = labels, score
    if best is None:
        return np.zeros(count, dtype=np.int64)
    _, first = np.unique(best, return_index=True)
    rank = {label: i for i, label in enumerate(best[np.sort(first)])}
    return np.array([rank[label] for label in best], dtype=np.int64)


# ================================================================================================
# The circuit
# ================================================================================================
def resolve_window(layers, n_layers: int) -> tuple[int, int]:
    """(lo, hi) from None (the last DEFAULT_WINDOW layers), an int N (the last N layers), "LO-HI" or (lo, hi)."""
    if isinstance(layers, str) and layers.strip().isdigit():
        layers = int(layers)
    if layers is None:
        lo, hi = max(1, n_layers - DEFAULT_WINDOW), n_layers - 1
    elif isinstance(layers, int):
        if layers < 2:
            raise BadInput("the layer window needs at least 2 layers")
        lo, hi = max(1, n_layers - layers), n_layers - 1
    else:
        if isinstance(layers, str):
            parts = layers.replace(":", "-").split("-")
            try:
                lo, hi = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (None, None)
            except ValueError:
                lo = hi = None
            if lo is None:
                raise BadInput(f"layers '{layers}' is not a window; write LO-HI, e.g. 24-29, or a layer count")
        else:
            lo, hi = (int(v) for v in layers)
    if not 1 <= lo < hi <= n_layers - 1:
        raise BadInput(f"the layer window {lo}-{hi} is invalid: this model has layers 0-{n_layers - 1}, and a "
                       f"window needs 1 <= LO < HI <= {n_layers - 1}")
    return lo, hi


@dataclass
class _Node:
    """One critical neuron: concept samples, IG rows, core set, sub-concepts, edges."""

    layer: int
    index: int
    flow: float
    samples: torch.Tensor  # [k] flat pool indices, by |a| desc
    values: torch.Tensor  # [k] a_n at the samples
    vectors: np.ndarray | None = None  # [k, d_ff] layer-(l-1) activations at the samples (standardised)
    labels: np.ndarray | None = None  # [k] sub-concept of each sample
    core: list[int] | None = None  # C_n, by importance desc
    importance: torch.Tensor | None = None  # [tau] mean |IG| of C_n
    ig_rows: torch.Tensor | None = None  # [k, d_ff] IG rows, kept for the layer's top node (correlation check)
    weights: list[dict[int, tuple[float, float]]] | None = None  # per sub-concept: j -> (w, s)


def build(engine: Engine, prompts: list[str], ids_list: list[torch.Tensor], target_id: int | None,
          contrast_id: int | None, *, tau: int = 16, k: int = 50, ig_steps: int = 16, fast: bool = False,
          window: tuple[int, int], max_neurons: int = 32, max_groups: int = 8, draws: int = 20,
          subsets: int = 40, corpus: Sequence[str] | None = None, seed: int = 0, standardize: bool = True,
          step: Step = lambda *_: None) -> dict:
    """The NeurFlow circuit of ``prompts`` over the layer window (see the module docstring)."""
    started = time.perf_counter()
    lo, hi = window
    timings: dict[str, float] = {}
    device = engine.device

    step("reference", 0.02, f"reference corpus activations, layers {lo - 1}-{hi}")
    cache = reference_cache(engine, corpus)
    timings["reference_s"] = cache.ensure(engine, range(lo - 1, hi + 1))

    step("trace", 0.12, f"forward pass over {len(prompts)} prompt(s)")
    t0 = time.perf_counter()
    traces = [_trace(engine, ids) for ids in ids_list]
    metrics = [Metric(target_id if target_id is not None else int(tr.logits.argmax()), contrast_id) for tr in traces]
    pool = _Pool(cache, traces, prompts, device)
    alphas = (torch.ones(1) if fast else (torch.arange(ig_steps, dtype=torch.float32) + 0.5) / ig_steps).to(device)
    netb = _NetB(engine, pool, alphas)
    timings["trace_s"] = time.perf_counter() - t0

    step("root", 0.14, f"{'attribution' if fast else f'integrated gradients ({ig_steps} steps)'} from the root "
                       f"to layer {hi}")
    t0 = time.perf_counter()
    root_ig = torch.stack([_root_ig(engine, tr, mt, hi, alphas) for tr, mt in zip(traces, metrics)])  # [P, d_ff]
    root_importance = root_ig.abs().mean(0)
    root_core = root_importance.topk(min(tau, engine.width)).indices.tolist()
    root_s = root_ig.mean(0)
    root_total = float(root_s[root_core].abs().sum()) + 1e-7
    root_w = {j: (float(root_s[j]) / root_total, float(root_s[j])) for j in root_core}
    timings["root_s"] = time.perf_counter() - t0

    nodes: dict[int, list[_Node]] = {}
    coverage: dict[int, float] = {}
    candidates_count: dict[int, int] = {}
    layer_times: dict[str, float] = {}
    flow = {j: abs(root_w[j][0]) for j in root_core}
    total_layers = hi - lo + 1
    for depth, layer in enumerate(range(hi, lo - 1, -1)):
        t0 = time.perf_counter()
        candidates_count[layer] = len(flow)
        ranked = sorted(flow, key=lambda j: (-flow[j], j))
        kept = ranked[:max_neurons]
        coverage[layer] = sum(flow[j] for j in kept) / max(sum(flow.values()), 1e-12)
        base = 0.16 + 0.62 * depth / total_layers
        expand = layer > lo
        step("core neurons", base, f"layer {layer}: {len(kept)} critical neurons"
             + (f", IG over {k} samples each into layer {layer - 1}" if expand else " (leaves)"))
        acts = pool.acts(layer)
        cand = pool.candidates
        kk = min(k, len(cand))
        columns = torch.tensor(kept, device=device)
        values = acts[cand][:, columns]  # [C, c]
        top = values.abs().topk(kk, dim=0).indices  # [kk, c]
        layer_nodes = [_Node(layer, j, flow[j], cand[top[:, i]], values[top[:, i], i]) for i, j in enumerate(kept)]
        nodes[layer] = layer_nodes
        prev_acts = pool.acts(layer - 1)
        if standardize:
            center, scale = prev_acts.mean(0), prev_acts.std(0).clamp_min(1e-6)
        for node in layer_nodes:
            vectors = prev_acts[node.samples]
            node.vectors = ((vectors - center) / scale if standardize else vectors).cpu().numpy()
            node.labels = ward_clusters(_directions(node.vectors) if standardize else node.vectors, 2, 5)
        if not expand:
            layer_times[str(layer)] = time.perf_counter() - t0
            continue
        neurons = torch.tensor([n.index for n in layer_nodes for _ in range(kk)], device=device)
        flats = torch.cat([n.samples for n in layer_nodes])

        on_chunk = _chunk_progress(step, layer, base, 0.62 / total_layers, len(kept))

        ig = netb.ig(layer, neurons, flats, on_chunk).view(len(layer_nodes), kk, -1)
        importance = ig.abs().mean(1)  # [c, d_ff]
        core_imp, core_idx = importance.topk(min(tau, engine.width), dim=1)
        next_flow: dict[int, float] = {}
        for i, node in enumerate(layer_nodes):
            node.core = core_idx[i].tolist()
            node.importance = core_imp[i]
            if i == 0:
                node.ig_rows = ig[0]
            node.weights = []
            for c in range(int(node.labels.max()) + 1):
                members = torch.as_tensor(np.nonzero(node.labels == c)[0], device=device)
                s = ig[i, members][:, core_idx[i]].mean(0)
                total = float(s.abs().sum()) + 1e-7
                node.weights.append({j: (float(sv) / total, float(sv)) for j, sv in zip(node.core, s.tolist())})
                share = node.flow * len(members) / kk
                for j, (w, _) in node.weights[-1].items():
                    next_flow[j] = next_flow.get(j, 0.0) + share * abs(w)
        flow = next_flow
        layer_times[str(layer)] = time.perf_counter() - t0
    timings["layers_s"] = layer_times

    step("groups", 0.78, "grouping sub-concepts")
    t0 = time.perf_counter()
    groups, member_group = _groups(engine, pool, nodes, max_groups, standardize)
    group_edges = _group_edges(nodes, groups, member_group, root_w, hi)
    neurons_out, edges_out = _neuron_rows(engine, pool, nodes, root_w)
    timings["groups_s"] = time.perf_counter() - t0

    step("fidelity", 0.84, f"ablating circuit neurons vs {draws} random draws")
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    fidelity = {"ablation": _ablation_fidelity(engine, traces, metrics, nodes, draws, rng)}
    step("fidelity", 0.9, f"correlation check over {subsets} random subsets per layer")
    fidelity["correlation"] = _correlation(engine, netb, traces, metrics, nodes, root_importance, root_ig, hi,
                                           subsets, rng)
    fidelity["stability"] = _stability(engine, traces, metrics, nodes, groups, member_group, lo, hi) \
        if len(traces) > 1 else None
    timings["fidelity_s"] = time.perf_counter() - t0
    _attach_stability(fidelity["stability"], groups, neurons_out)

    step("writes", 0.97, "decoding what the circuit's neurons write")
    t0 = time.perf_counter()
    _attach_writes(engine, nodes, groups, neurons_out)
    timings["writes_s"] = time.perf_counter() - t0
    timings["total_s"] = time.perf_counter() - started
    step("done", 1.0, "circuit complete")

    info = engine.info
    same_target = len({m.target_id for m in metrics}) == 1
    return _compact({
        "kind": "circuit",
        "model": {key: info[key] for key in ("name", "weights_sha256", "n_layers", "neurons_per_layer", "arch")},
        "prompts": [_prompt_row(engine, p, tr, mt) for p, tr, mt in zip(prompts, traces, metrics)],
        "target": {"token": engine.tokenizer.decode([metrics[0].target_id]), "id": metrics[0].target_id}
        if same_target else None,
        "contrast": None if contrast_id is None else
        {"token": engine.tokenizer.decode([contrast_id]), "id": contrast_id},
        "metric": metrics[0].name,
        "params": {"tau": tau, "k": k, "ig_steps": 1 if fast else ig_steps, "fast": fast,
                   "method": "attribution" if fast else "ig", "layers": [lo, hi], "max_neurons": max_neurons,
                   "max_groups": max_groups, "draws": draws, "subsets": subsets, "seed": seed,
                   "standardize": standardize,
                   "corpus": {"texts": len(cache.texts), "samples": len(pool.candidates),
                              "shipped": corpus is None},
                   "netb": "closed-form" if netb.manual and all(v < 1e-3 for v in netb.checked.values())
                   else "autograd"},
        "layers": [{"layer": layer, "critical": len(nodes[layer]), "candidates": candidates_count[layer],
                    "coverage": round(coverage[layer], 4),
                    "groups": [g["id"] for g in groups if g["layer"] == layer]}
                   for layer in range(hi, lo - 1, -1)],
        "root": {"id": "root", "core": [{"neuron": str(NeuronId(hi, j)), "importance": float(root_importance[j]),
                                         "weight": root_w[j][0], "raw": root_w[j][1]} for j in root_core]},
        "groups": groups,
        "group_edges": group_edges,
        "neurons": neurons_out,
        "edges": edges_out,
        "fidelity": fidelity,
        "timings": _round(timings),
        "repro": {key: info[key] for key in ("torch", "transformers", "engine_version", "dtype", "device")},
    })


def _chunk_progress(step: Step, layer: int, base: float, span: float, count: int) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        step("core neurons", base + span * done / max(total, 1),
             f"layer {layer}: {count} critical neurons, {done}/{total} samples")
    return report


def _round(value):
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return round(value, 4) if isinstance(value, float) else value


def _compact(value):
    """Floats to 5 significant digits, recursively (the result is served and stored as JSON)."""
    if isinstance(value, float):
        return float(f"{value:.5g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


def _prompt_row(engine, prompt, trace, metric) -> dict:
    logp = torch.log_softmax(trace.logits, -1)
    return {"prompt": prompt, "tokens": engine.token_strings(trace.ids), "metric_value": float(metric(trace.logits[None])[0]),
            "target": {"token": engine.tokenizer.decode([metric.target_id]), "id": metric.target_id,
                       "prob": float(logp[metric.target_id].exp()), "logprob": float(logp[metric.target_id])}}


def _members(nodes: dict[int, list[_Node]], layer: int) -> list[tuple[_Node, int]]:
    return [(node, c) for node in nodes[layer] for c in range(int(node.labels.max()) + 1)]


def _directions(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length: Ward on these clusters by direction (cosine), not by norm."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def _groups(engine, pool: _Pool, nodes, max_groups: int,
            standardize: bool = True) -> tuple[list[dict], dict[tuple[int, int, int], str]]:
    """Groups per layer (Ward + silhouette over concept vectors), ids G<layer>.<rank by importance>."""
    out: list[dict] = []
    member_group: dict[tuple[int, int, int], str] = {}
    for layer in sorted(nodes, reverse=True):
        members = _members(nodes, layer)
        vectors = np.stack([node.vectors[node.labels == c].mean(0) for node, c in members])
        labels = ward_clusters(_directions(vectors) if standardize else vectors, 2, max_groups)
        rows = []
        for g in range(int(labels.max()) + 1):
            idx = np.nonzero(labels == g)[0]
            member_rows = []
            for i in idx:
                node, c = members[i]
                mask = node.labels == c
                values = node.values.cpu().numpy()
                member_rows.append({"neuron": str(NeuronId(layer, node.index)), "subconcept": c,
                                    "size": int(mask.sum()), "importance": node.flow * float(mask.mean()),
                                    "activation": float(values[mask].mean())})
            member_rows.sort(key=lambda m: (-m["importance"], NeuronId.parse(m["neuron"]), m["subconcept"]))
            samples = _representatives(engine, pool, vectors[idx].mean(0), [members[i] for i in idx])
            rows.append({"layer": layer, "members": member_rows,
                         "neurons": sorted({m["neuron"] for m in member_rows}, key=NeuronId.parse),
                         "importance": sum(m["importance"] for m in member_rows), "samples": samples,
                         "_idx": idx})
        rows.sort(key=lambda r: (-r["importance"], NeuronId.parse(r["members"][0]["neuron"])))
        for rank, row in enumerate(rows):
            gid = f"G{layer}.{rank}"
            for i in row.pop("_idx"):
                node, c = members[i]
                member_group[(layer, node.index, c)] = gid
            out.append({"id": gid, **row})
    return out, member_group


def _representatives(engine, pool: _Pool, centroid: np.ndarray, members: list[tuple[_Node, int]],
                     n: int = 5) -> list[dict]:
    """The ``n`` distinct samples of the members' sub-concepts nearest ``centroid`` (layer-(l-1) space)."""
    candidates: list[tuple[float, int, _Node, float]] = []
    for node, c in members:
        mask = node.labels == c
        dist = np.linalg.norm(node.vectors[mask] - centroid, axis=1)
        flats = node.samples.cpu().numpy()[mask]
        values = node.values.cpu().numpy()[mask]
        candidates.extend(zip(dist.tolist(), flats.tolist(), [node] * len(dist), values.tolist()))
    candidates.sort(key=lambda item: (item[0], item[1]))
    seen, out = set(), []
    for dist, flat, node, value in candidates:
        if flat in seen:
            continue
        seen.add(flat)
        sample = pool.sample(flat, tokenizer=engine.tokenizer)
        sample.update({"neuron": str(NeuronId(node.layer, node.index)), "activation": value, "distance": dist})
        out.append(sample)
        if len(out) == n:
            break
    return out


def _group_edges(nodes, groups, member_group, root_w, hi) -> list[dict]:
    """W(G -> H) = sum_{(n,c) in G} sum_{j in C_n} w_(n,c)->j * #{c' : (j,c') in H}; source = lower group H."""
    counts: dict[tuple[int, int], dict[str, int]] = {}
    for (layer, index, _c), gid in member_group.items():
        counts.setdefault((layer, index), {})
        counts[(layer, index)][gid] = counts[(layer, index)].get(gid, 0) + 1
    weights: dict[tuple[str, str], float] = {}
    for j, (w, _s) in root_w.items():
        for gid, count in counts.get((hi, j), {}).items():
            weights[(gid, "root")] = weights.get((gid, "root"), 0.0) + w * count
    for layer, layer_nodes in nodes.items():
        for node in layer_nodes:
            if node.weights is None:
                continue
            for c, edge_map in enumerate(node.weights):
                upper = member_group[(layer, node.index, c)]
                for j, (w, _s) in edge_map.items():
                    for gid, count in counts.get((layer - 1, j), {}).items():
                        weights[(gid, upper)] = weights.get((gid, upper), 0.0) + w * count
    rows = [{"source": s, "target": t, "weight": w} for (s, t), w in weights.items() if w != 0.0]
    order = {g["id"]: i for i, g in enumerate(groups)}
    rows.sort(key=lambda r: (order.get(r["target"], -1), -abs(r["weight"])))
    return rows


def _neuron_rows(engine, pool: _Pool, nodes, root_w) -> tuple[list[dict], list[dict]]:
    """Neuron-level rows (concept, sub-concepts with 3 samples nearest each centroid, core set) and edges."""
    critical = {(layer, n.index) for layer, ns in nodes.items() for n in ns}
    neurons, edges = [], []
    for layer in sorted(nodes, reverse=True):
        for node in nodes[layer]:
            nid = str(NeuronId(layer, node.index))
            values = node.values.cpu().numpy()
            flats = node.samples.cpu().numpy()
            subs = []
            for c in range(int(node.labels.max()) + 1):
                mask = node.labels == c
                vecs = node.vectors[mask]
                order = np.argsort(np.linalg.norm(vecs - vecs.mean(0), axis=1), kind="stable")[:3]
                samples = []
                for f, v in zip(flats[mask][order].tolist(), values[mask][order].tolist()):
                    samples.append({**pool.sample(f, before=6, after=2, tokenizer=engine.tokenizer), "activation": v})
                subs.append({"index": c, "size": int(mask.sum()), "activation": float(values[mask].mean()),
                             "importance": node.flow * float(mask.mean()), "samples": samples})
            core = [] if node.core is None else [
                {"neuron": str(NeuronId(layer - 1, j)), "importance": float(v), "critical": (layer - 1, j) in critical}
                for j, v in zip(node.core, node.importance.tolist())]
            neurons.append({"id": nid, "layer": layer, "neuron": node.index, "importance": node.flow,
                            "activation": float(values.mean()), "activation_abs": float(np.abs(values).mean()),
                            "subconcepts": subs, "core": core})
            for c, edge_map in enumerate(node.weights or []):
                for j, (w, raw) in edge_map.items():
                    edges.append({"source": str(NeuronId(layer - 1, j)), "target": nid, "subconcept": c,
                                  "weight": w, "raw": raw, "critical": (layer - 1, j) in critical})
    hi = max(nodes)
    for j, (w, raw) in root_w.items():
        edges.append({"source": str(NeuronId(hi, j)), "target": "root", "subconcept": 0, "weight": w, "raw": raw,
                      "critical": (hi, j) in critical})
    return neurons, edges


def _attach_writes(engine, nodes, groups, neurons_out, top: int = 8) -> None:
    """Top vocabulary tokens of each circuit neuron's write vector (signed by its concept activation) and of
    each group's activation-weighted sum of member write vectors (decode: W_U(gamma * W_down[:, n]))."""
    gain, unembed = engine.adapter.final_gain(engine.model), engine.adapter.unembedding(engine.model)
    rows = [(layer, n.index, float(n.values.mean())) for layer in sorted(nodes, reverse=True) for n in nodes[layer]]
    vectors = torch.stack([engine.adapter.write_vectors(engine.sites[layer])[index].float() * (1 if a >= 0 else -1)
                           for layer, index, a in rows])
    group_vecs = []
    for g in groups:
        vec = torch.zeros_like(vectors[0])
        for m in g["members"]:
            nid = NeuronId.parse(m["neuron"])
            vec = vec + m["activation"] * m["size"] * engine.adapter.write_vectors(engine.sites[nid.layer])[nid.index].float()
        group_vecs.append(vec)
    with torch.no_grad():
        logits = decode._logits(torch.cat([vectors, torch.stack(group_vecs)]), gain, unembed)
    tok = engine.tokenizer
    for row, values in zip(neurons_out, logits[: len(rows)]):
        row["writes"] = [tok.decode([i]) for i in values.topk(5).indices.tolist()]
    for g, values in zip(groups, logits[len(rows):]):
        hi_ = values.topk(top)
        lo_ = (-values).topk(top)
        g["writes"] = {"top": decode._tokens(tok, hi_.indices.tolist(), hi_.values.tolist()),
                       "bottom": decode._tokens(tok, lo_.indices.tolist(), (-lo_.values).tolist())}


# ================================================================================================
# Fidelity
# ================================================================================================
def _ablation_fidelity(engine, traces, metrics, nodes, draws: int, rng) -> list[dict]:
    """Zero each layer's critical neurons (and all of them) vs ``draws`` random sets of the same sizes."""
    width = engine.width
    layers = sorted(nodes)
    chosen = {layer: [n.index for n in nodes[layer]] for layer in layers}
    random_sets = {layer: [rng.choice(np.setdiff1d(np.arange(width), chosen[layer]), size=len(chosen[layer]),
                                      replace=False) for _ in range(draws)] for layer in layers}
    configs = [(layer, [layer]) for layer in layers] + [("all", layers)]
    out = []
    for name, ablated in configs:
        rows = 1 + draws
        masks = {}
        for layer in ablated:
            mask = torch.ones(rows, width, device=engine.device)
            mask[0, chosen[layer]] = 0
            for d in range(draws):
                mask[1 + d, torch.as_tensor(random_sets[layer][d], device=engine.device)] = 0
            masks[layer] = mask
        dm, dp = [], []
        for trace, metric in zip(traces, metrics):
            base_m = metric(trace.logits[None])[0]
            base_p = torch.softmax(trace.logits, -1)[metric.target_id]
            m, p = _masked_probs(engine, trace, masks, metric)
            dm.append(m - base_m)
            dp.append(p - base_p)
        dm_t, dp_t = torch.stack(dm).mean(0), torch.stack(dp).mean(0)
        out.append({"layer": name, "n": sum(len(chosen[layer]) for layer in ablated),
                    "core": {"delta_prob": float(dp_t[0]), "delta_metric": float(dm_t[0])},
                    "random": {"delta_prob_mean": float(dp_t[1:].mean()), "delta_prob_std": float(dp_t[1:].std()),
                               "delta_metric_mean": float(dm_t[1:].mean()),
                               "delta_metric_std": float(dm_t[1:].std()), "draws": draws}})
    return out


def _subsets(rng, width: int, count: int) -> list[np.ndarray]:
    return [np.sort(rng.choice(width, size=min(SUBSET_SIZES[i % len(SUBSET_SIZES)], width), replace=False))
            for i in range(count)]


def _corr(x: list[float], y: list[float]) -> dict:
    def safe(value):
        value = float(value)
        return None if math.isnan(value) else value

    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return {"pearson": None, "spearman": None}
    return {"pearson": safe(pearsonr(x, y).statistic), "spearman": safe(spearmanr(x, y).statistic)}


def _correlation(engine, netb: _NetB, traces, metrics, nodes, root_importance, root_ig, hi, count: int, rng) -> dict:
    """NeurFlow's check: over random subsets S, sum_{j in S} I_j against the true effect of zeroing S."""
    width = engine.width
    subsets = _subsets(rng, width, count)
    masks = torch.ones(len(subsets), width, device=engine.device)
    for i, s in enumerate(subsets):
        masks[i, torch.as_tensor(s, device=engine.device)] = 0
    effects, signed = [], []
    for trace, metric in zip(traces, metrics):
        base = metric(trace.logits[None])[0]
        delta = _masked_probs(engine, trace, {hi: masks}, metric)[0] - base
        effects.append(delta.abs())
        signed.append(delta)
    effect = torch.stack(effects).mean(0).tolist()
    signed_effect = torch.stack(signed).mean(0).tolist()
    summed = [float(root_importance[s].sum()) for s in subsets]
    predicted = [-float(root_ig.mean(0)[s].sum()) for s in subsets]
    root = {"layer": hi, "subsets": len(subsets), **_corr(summed, effect),
            "signed_pearson": _corr(predicted, signed_effect)["pearson"]}
    rows = []
    for layer in sorted(nodes, reverse=True):
        if nodes[layer][0].core is None:
            continue
        node = nodes[layer][0]
        subsets_l = _subsets(rng, width, count)
        flats = node.samples[:CORR_SAMPLES]
        importance = node.ig_rows[:CORR_SAMPLES].abs().mean(0)
        tensors = [torch.as_tensor(s, device=engine.device) for s in subsets_l]
        base = netb.pool.acts(layer)[flats, node.index]
        ablated = netb.ablated(layer, node.index, flats, tensors)  # [S, samples]
        delta = ablated - base[None]
        summed_l = [float(importance[s].sum()) for s in subsets_l]
        rows.append({"neuron": str(NeuronId(layer, node.index)), "layer": layer - 1, "subsets": len(subsets_l),
                     "samples": len(flats),
                     **_corr(summed_l, delta.abs().mean(1).tolist())})
    return {"root": root, "neurons": rows}


def _stability(engine, traces, metrics, nodes, groups, member_group, lo, hi) -> dict:
    """Per prompt, activation x gradient of its own M on the circuit's neurons; support = share of prompts
    on which a neuron (group) is in the top half of its layer's circuit neurons (groups) by |attribution|."""
    attrs = torch.stack([_prompt_attributions(engine, tr, mt, lo, hi) for tr, mt in zip(traces, metrics)])  # [P, W, d_ff]
    prompts = len(traces)
    neuron_rows = []
    for layer in sorted(nodes, reverse=True):
        idx = [n.index for n in nodes[layer]]
        scores = attrs[:, layer - lo, idx].abs()  # [P, c]
        keep = max(1, math.ceil(len(idx) / 2))
        active = torch.zeros_like(scores, dtype=torch.bool)
        active.scatter_(1, scores.topk(keep, dim=1).indices, True)
        support = active.float().mean(0).tolist()
        for i, j in enumerate(idx):
            neuron_rows.append({"id": str(NeuronId(layer, j)), "support": support[i], "label": _label(support[i], prompts),
                                "attribution": attrs[:, layer - lo, j].tolist()})
    group_rows = []
    for layer in sorted(nodes, reverse=True):
        layer_groups = [g for g in groups if g["layer"] == layer]
        scores = torch.stack([
            torch.stack([attrs[:, layer - lo, NeuronId.parse(n).index].abs() for n in g["neurons"]]).sum(0)
            for g in layer_groups], dim=1)  # [P, G]
        keep = max(1, math.ceil(len(layer_groups) / 2))
        active = torch.zeros_like(scores, dtype=torch.bool)
        active.scatter_(1, scores.topk(keep, dim=1).indices, True)
        support = active.float().mean(0).tolist()
        for i, g in enumerate(layer_groups):
            group_rows.append({"id": g["id"], "support": support[i], "label": _label(support[i], prompts)})
    return {"prompts": prompts, "rule": "active = in the top half of its layer by |attribution| on a prompt; "
                                        f"support = share of prompts where active; stable if >= {STABLE}, "
                                        f"specific if > 0 and <= max({SPECIFIC}, 1/prompts), weak if 0, "
                                        "else mixed",
            "neurons": neuron_rows, "groups": group_rows,
            "stable": [r["id"] for r in neuron_rows + group_rows if r["label"] == "stable"],
            "specific": [r["id"] for r in neuron_rows + group_rows if r["label"] == "specific"]}


def _label(support: float, prompts: int) -> str:
    if support >= STABLE:
        return "stable"
    if support == 0:
        return "weak"
    return "specific" if support <= max(SPECIFIC, 1 / prompts) + 1e-6 else "mixed"


def _attach_stability(stability: dict | None, groups: list[dict], neurons_out: list[dict]) -> None:
    by_id = {} if stability is None else {r["id"]: r for r in stability["neurons"] + stability["groups"]}
    for row in groups + neurons_out:
        found = by_id.get(row["id"])
        row["stability"] = None if found is None else {"support": found["support"], "label": found["label"]}


# ================================================================================================
# Group ablation
# ================================================================================================
def group_ablation(result: dict, group_id: str, mode: str = "zero", factor: float = 0.0) -> Ablation:
    """The ``Ablation`` of every member neuron of group ``group_id`` of a circuit result (or "root": the root's
    core neurons)."""
    if result.get("kind") != "circuit":
        raise BadInput("group ablation needs a circuit result")
    if group_id == "root":
        neurons = [row["neuron"] for row in result["root"]["core"]]
    else:
        match = next((g for g in result["groups"] if g["id"] == group_id), None)
        if match is None:
            known = ", ".join(g["id"] for g in result["groups"][:8])
            raise BadInput(f"group '{group_id}' is not in this circuit; its groups are {known}…")
        neurons = match["neurons"]
    return Ablation(tuple(NeuronId.parse(n) for n in neurons), mode=mode, factor=factor)
