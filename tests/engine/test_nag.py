"""NAG nodes, edges (checked against true zeroing), export, similarity and ranking."""

import networkx as nx
import pytest
import torch
from scipy.stats import spearmanr

from app.engine import nag
from app.engine.hooks import capture, rewrite
from app.engine.ids import NeuronId
from tests.engine.conftest import PROMPT


@pytest.fixture(scope="module")
def analysis(tiny):
    return tiny.analyze(PROMPT, method="attribution", k=6, verify=0, edges=True, edge_top_in=None)


def test_nodes_are_topk_per_layer_by_absolute_impact(tiny, analysis):
    assert len(analysis["nodes"]) == tiny.n_layers * 6
    for layer in range(tiny.n_layers):
        impacts = [abs(n["impact"]) for n in analysis["nodes"] if n["layer"] == layer]
        assert impacts == sorted(impacts, reverse=True)
        assert [n["rank"] for n in analysis["nodes"] if n["layer"] == layer] == list(range(6))


def _sum_act(tiny, ids, target: NeuronId, zero: NeuronId | None) -> float:
    store = {}
    zero_fn = lambda _l, a: _zero(a, zero.index)
    with torch.no_grad(), capture(tiny.sites, store=store):
        if zero is None:
            tiny.model(input_ids=ids)
        else:
            with rewrite(tiny.sites, zero_fn, layers=[zero.layer]):
                tiny.model(input_ids=ids)
    return float(store[target.layer][0, :, target.index].sum())


def _zero(a, index):
    a = a.clone()
    a[..., index] = 0
    return a


def test_edges_match_true_zeroing_of_the_upstream_node(tiny, analysis):
    """w(i->j) is the first-order estimate of -(change in sum_t a_j when a_i is zeroed)."""
    ids = tiny.encode(PROMPT)
    estimates, exact = [], []
    for edge in analysis["edges"]:
        src, dst = NeuronId.parse(edge["source"]), NeuronId.parse(edge["target"])
        assert dst.layer == src.layer + 1
        change = _sum_act(tiny, ids, dst, None) - _sum_act(tiny, ids, dst, src)
        estimates.append(edge["weight"])
        exact.append(change)
    assert len(estimates) == (tiny.n_layers - 1) * 36
    assert spearmanr(estimates, exact).statistic > 0.9
    big = sorted(range(len(exact)), key=lambda i: -abs(exact[i]))[:20]
    assert big and all((estimates[i] > 0) == (exact[i] > 0) for i in big)


def test_edge_weights_are_l1_normalised_per_target(analysis):
    totals = {}
    for edge in analysis["edges"]:
        totals[edge["target"]] = totals.get(edge["target"], 0.0) + abs(edge["weight_norm"])
        assert edge["weight_norm"] == pytest.approx(edge["weight"] / sum(
            abs(e["weight"]) for e in analysis["edges"] if e["target"] == edge["target"]), rel=1e-6)
    assert all(total == pytest.approx(1.0, abs=1e-6) for total in totals.values())


def test_wider_edge_window_adds_skip_edges(tiny):
    result = tiny.analyze(PROMPT, k=3, verify=0, edge_window=2)
    gaps = {NeuronId.parse(e["target"]).layer - NeuronId.parse(e["source"]).layer for e in result["edges"]}
    assert gaps == {1, 2}


def test_prune_mask_threshold_and_top_in(analysis):
    edges = analysis["edges"]
    keep = nag.prune_mask(edges, threshold=0.2)
    assert keep == [abs(e["weight_norm"]) >= 0.2 for e in edges]
    keep = nag.prune_mask(edges, top_in=2)
    per_target = {}
    for e, k in zip(edges, keep):
        per_target[e["target"]] = per_target.get(e["target"], 0) + k
    assert set(per_target.values()) == {2}


def test_networkx_and_graphml_export(analysis, tmp_path):
    graph = nag.to_networkx(analysis)
    assert graph.number_of_nodes() == len(analysis["nodes"])
    assert graph.number_of_edges() == len(analysis["edges"])
    path = tmp_path / "nag.graphml"
    path.write_text(nag.to_graphml(analysis))
    back = nx.read_graphml(path)
    edge = analysis["edges"][0]
    assert back.edges[edge["source"], edge["target"]]["weight"] == pytest.approx(edge["weight"])


def test_similarity_follows_the_paper():
    a = [[1, 2, 3], [4, 5, 6]]
    b = [[1, 2, 9], [7, 8, 9]]
    assert nag.pair_similarity(a, a) == pytest.approx(1.0)
    assert nag.pair_similarity(a, [[7, 8, 9], [1, 2, 3]]) == pytest.approx(0.0)
    assert nag.pair_similarity(a, b) == pytest.approx((2 / 3 + 0) / 2)
    assert nag.pair_similarity(a, b) == pytest.approx(nag.pair_similarity(b, a))
    profile = nag.target_profile([a, b])  # counts c(1)=2, c(2)=2, c(3)=1, c(9)=1 in layer 0
    assert profile[0][1] == pytest.approx(2 / 6)
    assert sum(profile[1].values()) == pytest.approx(1.0)


def test_rank_orders_by_distance_within_token_budget():
    profile = nag.target_profile([[[1, 2]], [[1, 3]]])
    pool = [{"id": "far", "signature": [[8, 9]], "tokens": 10},
            {"id": "near", "signature": [[1, 2]], "tokens": 10},
            {"id": "mid", "signature": [[3, 9]], "tokens": 10}]
    ranked = nag.rank(pool, profile, keep_fraction=0.5)
    assert [r["id"] for r in ranked] == ["near", "mid", "far"]
    assert [r["selected"] for r in ranked] == [True, False, False]


def test_server_side_pruning_keeps_the_strongest_incoming_edges(tiny, analysis):
    pruned = tiny.analyze(PROMPT, method="attribution", k=6, verify=0, edge_top_in=2)
    assert len(pruned["edges"]) == (tiny.n_layers - 1) * 6 * 2
    for edge in pruned["edges"]:
        rivals = [abs(e["weight"]) for e in analysis["edges"] if e["target"] == edge["target"]]
        assert abs(edge["weight"]) >= sorted(rivals, reverse=True)[1] - 1e-9


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma", "gpt2", "gpt_neox", "phi"])
def test_local_edges_equal_the_generic_block_vjp(family):
    """The fast path (seed at the MLP input, pull back to the block input, project on write vectors)
    computes exactly the generic d(sum a_j)/d a_i edges."""
    from app.engine.service import Engine

    engine = Engine.tiny(family, seed=3)
    fast = engine.analyze(PROMPT, k=4, verify=0, edge_top_in=None)
    ids = engine.encode(PROMPT)
    _, graph = engine._graph_pass(ids, None, None, need_graph=True, method="magnitude")
    chosen = [[n["neuron"] for n in fast["nodes"] if n["layer"] == layer] for layer in range(engine.n_layers)]
    reference = {(e["source"], e["target"]): e["weight"] for e in nag.edges(graph.acts, chosen)}
    assert len(reference) == len(fast["edges"]) == (engine.n_layers - 1) * 16
    for edge in fast["edges"]:
        assert edge["weight"] == pytest.approx(reference[edge["source"], edge["target"]], rel=1e-4, abs=1e-6)
