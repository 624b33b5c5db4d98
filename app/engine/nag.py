"""The Neuron-Activated Graph (NAG), its edges, pruning, similarity and ranking.

Nodes (Wang et al. 2026, arXiv 2604.15706, ALGORITHMS.md 1.3): the top-K neurons of each layer by
|impact| (``torch.topk``, largest, sorted; K = 5 ~ the paper's 0.3% of a 1536-wide MLP).

Edges (our addition, ALGORITHMS.md 9): the first-order effect of an upstream node i (layer l-1) on a
downstream node j (layer l), ``w(i->j) = sum_t a_i(t) * d(sum_t' a_j(t')) / d a_i(t)``, read off the
analysis' own forward graph with one batched vector-Jacobian product per layer. It counts every path
from i to j (residual stream, attention); causality holds by construction. Weights are kept raw and
L1-normalised over each node's incoming edges (as NeurFlow does, ALGORITHMS.md 2.4) for display.

Similarity (ALGORITHMS.md 1.4): the paper's target profile ``w_l(k) = c_l(k)^p / sum c_l^p`` and
``S(x) = (1/L) sum_l sum_{k in T_l(x)} w_l(k)``; ranking by ``1 - S`` with a token budget (1.5).
Graphs are plain data; pruning functions are pure and return masks (circuit-tracer ``graph.py``).
"""

from __future__ import annotations

import io
from collections import Counter
from collections.abc import Iterable, Sequence

import networkx as nx
import torch

from app.engine.ids import NeuronId


def top_nodes(impacts: torch.Tensor, k: int, *, signed: bool) -> list[list[int]]:
    """Per layer, the indices of the top-k neurons by |impact| (signed) or impact (magnitude)."""
    score = impacts.abs() if signed else impacts
    return score.topk(min(k, score.shape[1]), dim=1).indices.tolist()


def node_rows(impacts: torch.Tensor, activations: torch.Tensor, chosen: list[list[int]]) -> list[dict]:
    """JSON rows for the chosen nodes, layer-major, with their rank inside the layer."""
    rows = []
    for layer, indices in enumerate(chosen):
        for rank, index in enumerate(indices):
            rows.append({"id": str(NeuronId(layer, index)), "layer": layer, "neuron": index,
                         "impact": float(impacts[layer, index]), "activation": float(activations[layer, index]),
                         "rank": rank})
    return rows


def edges(acts: list[torch.Tensor], chosen: list[list[int]], *, window: int = 1) -> list[dict]:
    """Edges between chosen nodes of layers l-window..l-1 and layer l, from a retained forward graph.

    ``acts`` are the per-layer activations [1, T, d_ff] still attached to the autograd graph."""
    out: list[dict] = []
    for layer in range(1, len(acts)):
        down = chosen[layer]
        sums = acts[layer][0, :, down].sum(dim=0)  # [K]
        ups = list(range(max(0, layer - window), layer))
        grads = _batched_vjp(sums, [acts[u] for u in ups])
        for u, grad in zip(ups, grads):
            up_idx = chosen[u]
            weight = (acts[u].detach()[0][:, up_idx].unsqueeze(0) * grad[:, 0][:, :, up_idx]).sum(dim=1)  # [K_down, K_up]
            out.extend(_edge_rows(u, up_idx, layer, down, weight.float()))
    return normalise(out)


def local_edges(acts: list[torch.Tensor], io: dict, sites: list, adapter, chosen: list[list[int]]) -> list[dict]:
    """The same adjacent-layer edges as ``edges``, computed where the work is: seed d(sum_t a_j)/dx at the
    MLP input x of layer l from the K chosen rows of up/gate alone, pull it back to the block input h_l
    (norms, attention) with one batched VJP, and project onto the K upstream write vectors, since
    a_{l-1,i} reaches h_l only as ``a_i * write_i``. This skips the full-width MLP matmuls of the generic
    path; tests check both agree. ``io`` holds the captured block and MLP inputs, still in the graph."""
    out: list[dict] = []
    for layer in range(1, len(acts)):
        down, up_idx = chosen[layer], chosen[layer - 1]
        seeds = _mlp_input_seeds(sites[layer], adapter, io[("mlp", layer)], down)  # [K, 1, T, d]
        (at_block,) = torch.autograd.grad(io[("mlp", layer)], io[("block", layer)], grad_outputs=seeds,
                                          is_grads_batched=True, retain_graph=True)
        write = adapter.write_vectors(sites[layer - 1])[up_idx].to(at_block.dtype)  # [K_up, d]
        along = torch.einsum("kbtd,ud->kbtu", at_block, write)  # d(sum a_j)/d a_i(t), per upstream i
        weight = (acts[layer - 1].detach()[:, :, up_idx].unsqueeze(0) * along).sum(dim=(1, 2))  # [K_down, K_up]
        out.extend(_edge_rows(layer - 1, up_idx, layer, down, weight.float()))
    return normalise(out)


def _mlp_input_seeds(site, adapter, x: torch.Tensor, rows: list[int]) -> torch.Tensor:
    """d(sum_t a_j(t)) / dx for the chosen neurons j, from their own read rows only: [K, 1, T, d]."""
    x_leaf = x.detach().requires_grad_(True)
    with torch.enable_grad():
        pre = _project(x_leaf, adapter.read_vectors(site, "up")[rows], site.up, rows)
        if adapter.gated:
            a = site.act(_project(x_leaf, adapter.read_vectors(site, "gate")[rows], site.gate, rows)) * pre
        else:
            a = site.act(pre)
        return _batched_vjp(a.sum(dim=(0, 1)), [x_leaf])[0]


def _project(x: torch.Tensor, rows: torch.Tensor, module, index: list[int]) -> torch.Tensor:
    bias = getattr(module, "bias", None)
    return torch.nn.functional.linear(x, rows, bias[index] if bias is not None else None)


def _batched_vjp(sums: torch.Tensor, inputs: list[torch.Tensor]) -> list[torch.Tensor]:
    """d sums[j] / d inputs for every j at once: [K, 1, T, d_ff] per input."""
    eye = torch.eye(sums.shape[0], dtype=sums.dtype, device=sums.device)
    try:
        return list(torch.autograd.grad(sums, inputs, grad_outputs=eye, is_grads_batched=True, retain_graph=True))
    except RuntimeError:  # an op without a batching rule: fall back to one VJP per node
        rows = [torch.autograd.grad(sums[j], inputs, retain_graph=True) for j in range(sums.shape[0])]
        return [torch.stack([row[i] for row in rows]) for i in range(len(inputs))]


def _edge_rows(up_layer: int, up_idx: list[int], layer: int, down_idx: list[int], weight: torch.Tensor) -> list[dict]:
    return [{"source": str(NeuronId(up_layer, i)), "target": str(NeuronId(layer, j)), "weight": float(weight[jj, ii])}
            for jj, j in enumerate(down_idx) for ii, i in enumerate(up_idx)]


def normalise(rows: list[dict]) -> list[dict]:
    """Add ``weight_norm``: weight / sum of |weight| over the target node's incoming edges."""
    totals: Counter = Counter()
    for row in rows:
        totals[row["target"]] += abs(row["weight"])
    for row in rows:
        row["weight_norm"] = row["weight"] / (totals[row["target"]] + 1e-12)
    return rows


def prune_mask(rows: Sequence[dict], *, threshold: float = 0.0, top_in: int | None = None) -> list[bool]:
    """Keep edges with |weight_norm| >= threshold and, if given, among the top_in incoming per node."""
    keep = [abs(r["weight_norm"]) >= threshold for r in rows]
    if top_in is not None:
        by_target: dict[str, list[int]] = {}
        for i, r in enumerate(rows):
            by_target.setdefault(r["target"], []).append(i)
        for members in by_target.values():
            ranked = sorted(members, key=lambda i: -abs(rows[i]["weight"]))
            for i in ranked[top_in:]:
                keep[i] = False
    return keep


def to_networkx(analysis: dict) -> nx.DiGraph:
    """The analysis' NAG as a DiGraph: node attributes layer/neuron/impact/activation, edge weights."""
    graph = nx.DiGraph(prompt=analysis.get("prompt", ""), method=analysis.get("method", ""))
    for node in analysis["nodes"]:
        graph.add_node(node["id"], **{k: v for k, v in node.items() if k != "id"})
    for edge in analysis["edges"]:
        graph.add_edge(edge["source"], edge["target"], weight=edge["weight"], weight_norm=edge["weight_norm"])
    return graph


def to_graphml(analysis: dict) -> str:
    """GraphML text of ``to_networkx(analysis)``."""
    buffer = io.BytesIO()
    nx.write_graphml(to_networkx(analysis), buffer)
    return buffer.getvalue().decode()


def signature(chosen: list[list[int]]) -> list[list[int]]:
    """The NAG of one document as the paper stores it: the top-K indices per layer."""
    return [list(indices) for indices in chosen]


def target_profile(signatures: Iterable[list[list[int]]], *, power: float = 1.0) -> list[dict[int, float]]:
    """Per layer, w_l(k) = c_l(k)^p / sum_k' c_l(k')^p over the target documents' top-K sets."""
    counts: list[Counter] = []
    for sig in signatures:
        if not counts:
            counts = [Counter() for _ in sig]
        for layer, indices in enumerate(sig):
            counts[layer].update(indices)
    profile = []
    for counter in counts:
        total = sum(c ** power for c in counter.values())
        profile.append({k: (c ** power) / total for k, c in counter.items()} if total else {})
    return profile


def similarity(sig: list[list[int]], profile: list[dict[int, float]]) -> float:
    """S(x) = (1/L) sum_l sum_{k in T_l(x)} w_l(k), in [0, 1]."""
    if not profile:
        return 0.0
    return sum(sum(profile[l].get(k, 0.0) for k in indices) for l, indices in enumerate(sig)) / len(profile)


def pair_similarity(a: list[list[int]], b: list[list[int]]) -> float:
    """The N = 1 case: layer-averaged top-K overlap |T_l(a) & T_l(b)| / K (symmetric; not Jaccard)."""
    return similarity(b, target_profile([a]))


def rank(candidates: Sequence[dict], profile: list[dict[int, float]], *, keep_fraction: float = 0.2) -> list[dict]:
    """Sort candidates ({"id", "signature", "tokens"}) by NAG distance 1 - S (ties by id) and keep rows
    while the cumulative token count stays within ``keep_fraction`` of the pool's tokens."""
    scored = sorted(({**c, "distance": 1.0 - similarity(c["signature"], profile)} for c in candidates),
                    key=lambda c: (c["distance"], str(c["id"])))
    budget = keep_fraction * sum(c.get("tokens", 1) for c in candidates)
    used, kept = 0, []
    for row in scored:
        used += row.get("tokens", 1)
        row["selected"] = used <= budget
        kept.append(row)
    return kept
