"""NeurFlow circuits on tiny seeded models: IG completeness, the closed-form block against autograd through
the HF modules, clustering determinism, edge normalisation, fidelity, group ablation, the result shape."""

import json
from collections import defaultdict

import numpy as np
import pytest
import torch

from app.engine import circuits as C
from app.engine.errors import BadInput, Cancelled
from app.engine.ids import Ablation
from app.engine.impacts import Metric
from app.engine.service import Engine
from tests.engine.conftest import PROMPT

SMALL = {"tau": 4, "k": 12, "max_neurons": 6, "draws": 20, "subsets": 12, "layers": (1, 2)}


@pytest.fixture(scope="module")
def circuit(tiny):
    return tiny.circuit(PROMPT, **SMALL)


def _netb(engine: Engine, alphas: torch.Tensor, layer: int = 2):
    cache = C.reference_cache(engine)
    cache.ensure(engine, range(layer - 1, layer + 1))
    trace = C._trace(engine, engine.encode(PROMPT))
    pool = C._Pool(cache, [trace], [PROMPT], engine.device)
    picks = pool.candidates[torch.tensor([2, 40, 111, 250, len(pool.candidates) - 1])]
    neurons = torch.tensor([1, 9, 33, 60, 5])
    return C._NetB(engine, pool, alphas), picks, neurons, trace


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_closed_form_block_equals_autograd_through_the_model(family):
    """The Llama-style closed form (alpha-linear projections, query at t only, transposed RoPE) must give
    the same IG as autograd through the model's own decoder block; qwen2 adds q/k/v biases."""
    engine = Engine.tiny(family, seed=1)
    netb, flats, neurons, _ = _netb(engine, (torch.arange(8) + 0.5) / 8)
    assert netb.manual and netb._check(2)
    closed = netb._manual_ig(2, neurons, flats, None)
    generic = netb._generic_ig(2, neurons, flats, None)
    assert torch.allclose(closed, generic, atol=1e-6, rtol=1e-4)
    subsets = [torch.tensor([3, 7, 11]), torch.arange(0, 64, 2)]
    assert torch.allclose(netb._manual_ablated(2, 9, flats, subsets), netb._generic_ablated(2, 9, flats, subsets),
                          atol=1e-6)


@pytest.mark.parametrize("path", ["closed", "generic"])
def test_ig_completeness_neuron_to_previous_layer(tiny, path):
    """sum_j IG_j(x) = a_n(t) - a_n(t; a_{l-1} = 0), up to the midpoint rule's error."""
    netb, flats, neurons, _ = _netb(tiny, (torch.arange(64) + 0.5) / 64)
    ig = (netb._manual_ig if path == "closed" else netb._generic_ig)(2, neurons, flats, None)
    everything = [torch.arange(tiny.width)]
    for row in range(len(flats)):
        at_zero = netb._generic_ablated(2, int(neurons[row]), flats[row:row + 1], everything)[0, 0]
        actual = netb.pool.acts(2)[flats[row], neurons[row]]
        assert float(ig[row].sum()) == pytest.approx(float(actual - at_zero), abs=2e-4, rel=1e-3)


def test_root_ig_completeness_and_replay(tiny):
    """Replaying the recorded blocks reproduces the logits; the root IG sums to M(a) - M(a_hi = 0)."""
    _, _, _, trace = _netb(tiny, torch.ones(1))
    metric = Metric(int(trace.logits.argmax()))
    replayed = C._replay(tiny, trace, 1, trace.hin[1])[0]
    assert torch.allclose(replayed, trace.logits, atol=1e-5)
    ig = C._root_ig(tiny, trace, metric, 2, (torch.arange(64) + 0.5) / 64)
    zero = torch.zeros(1, tiny.width)
    at_zero, _ = C._masked_probs(tiny, trace, {2: zero}, metric)
    base = metric(trace.logits[None])[0]
    assert float(ig.sum()) == pytest.approx(float(base - at_zero[0]), abs=1e-3, rel=1e-3)


def test_generic_path_on_a_non_llama_architecture():
    engine = Engine.tiny("gpt2", seed=0)
    result = engine.circuit(PROMPT, fast=True, **SMALL)
    assert result["params"]["netb"] == "autograd"
    assert result["groups"] and result["fidelity"]["ablation"]


def test_ward_silhouette_clustering_is_deterministic_and_bounded():
    rng = np.random.default_rng(0)
    blobs = np.concatenate([rng.normal(loc, 0.1, size=(10, 5)) for loc in (0.0, 3.0, 6.0)])
    labels = C.ward_clusters(blobs, 2, 5)
    assert len(set(labels.tolist())) == 3 and labels[0] == 0
    assert (C.ward_clusters(blobs, 2, 5) == labels).all()
    assert (C.ward_clusters(blobs[:2], 2, 5) == 0).all()  # fewer samples -> fewer clusters
    assert C.ward_clusters(blobs, 2, 2).max() == 1
    from scipy.spatial.distance import pdist, squareform
    from sklearn.metrics import silhouette_score

    dist = squareform(pdist(blobs))
    assert C.silhouette(dist, labels) == pytest.approx(silhouette_score(dist, labels, metric="precomputed"))


def test_same_seed_same_circuit_and_groups(circuit):
    again = Engine.tiny("llama", seed=0).circuit(PROMPT, **SMALL)
    assert [(g["id"], g["members"]) for g in again["groups"]] == [(g["id"], g["members"]) for g in circuit["groups"]]
    assert again["group_edges"] == circuit["group_edges"]
    other = Engine.tiny("llama", seed=3).circuit(PROMPT, **SMALL)
    assert [g["neurons"] for g in other["groups"]] != [g["neurons"] for g in circuit["groups"]]


def test_edges_are_l1_normalised_per_subconcept(circuit):
    totals = defaultdict(float)
    for edge in circuit["edges"]:
        totals[(edge["target"], edge["subconcept"])] += abs(edge["weight"])
    assert totals and all(v == pytest.approx(1.0, abs=1e-4) for v in totals.values())
    per_neuron = defaultdict(int)
    for edge in circuit["edges"]:
        per_neuron[(edge["target"], edge["subconcept"])] += 1
    assert set(per_neuron.values()) == {SMALL["tau"]}
    for neuron in circuit["neurons"]:
        if neuron["layer"] > 1:
            subs = {s["index"] for s in neuron["subconcepts"]}
            assert {k[1] for k in totals if k[0] == neuron["id"]} == subs


def test_structure_and_flow(circuit):
    assert circuit["kind"] == "circuit" and circuit["params"]["layers"] == [1, 2]
    assert [layer["layer"] for layer in circuit["layers"]] == [2, 1]
    assert len(circuit["root"]["core"]) == SMALL["tau"]
    by_layer = defaultdict(list)
    for neuron in circuit["neurons"]:
        by_layer[neuron["layer"]].append(neuron)
        assert 1 <= len(neuron["subconcepts"]) <= 5
        assert sum(s["size"] for s in neuron["subconcepts"]) == SMALL["k"]
    assert len(by_layer[2]) == SMALL["tau"] and len(by_layer[1]) <= SMALL["max_neurons"]
    top_flow = sum(g["importance"] for g in circuit["groups"] if g["layer"] == 2)
    assert top_flow == pytest.approx(1.0, abs=1e-4)  # the root's flow, all through layer 2
    ids = {g["id"] for g in circuit["groups"]} | {"root"}
    for group in circuit["groups"]:
        assert group["id"].startswith(f"G{group['layer']}.") and group["samples"] and group["writes"]["top"]
        sample = group["samples"][0]
        assert sample["tokens"][sample["focus"]] == sample["token"] and sample["text"]
    for edge in circuit["group_edges"]:
        assert edge["source"] in ids and edge["target"] in ids
        source = next(g for g in circuit["groups"] if g["id"] == edge["source"])
        assert edge["target"] == "root" or source["layer"] == int(edge["target"][1:].split(".")[0]) - 1
    json.dumps(circuit)


def test_ablating_the_circuit_moves_the_root_more_than_random_neurons(circuit):
    rows = {row["layer"]: row for row in circuit["fidelity"]["ablation"]}
    assert set(rows) == {1, 2, "all"} and rows["all"]["n"] == sum(r["n"] for k, r in rows.items() if k != "all")
    for row in rows.values():
        assert row["random"]["draws"] == 20
        assert abs(row["core"]["delta_metric"]) > abs(row["random"]["delta_metric_mean"])
    top = rows[2]
    assert abs(top["core"]["delta_metric"]) > abs(top["random"]["delta_metric_mean"]) + 2 * top["random"]["delta_metric_std"]
    corr = circuit["fidelity"]["correlation"]
    assert corr["root"]["spearman"] > 0.5 and corr["neurons"][0]["layer"] == 1


def test_group_ablation_round_trip(tiny, circuit):
    group = circuit["groups"][0]
    ablation = C.group_ablation(circuit, group["id"])
    assert [str(n) for n in ablation.neurons] == group["neurons"] and ablation.mode == "zero"
    assert Ablation.from_dict(json.loads(json.dumps(ablation.to_dict()))) == ablation
    scaled = C.group_ablation(circuit, group["id"], mode="scale", factor=2.0)
    assert scaled.factor == 2.0
    out = tiny.ablate(PROMPT, ablation)
    assert out["ablation"]["neurons"] == group["neurons"]
    root = C.group_ablation(circuit, "root")
    assert len(root.neurons) == SMALL["tau"]
    with pytest.raises(BadInput, match="not in this circuit"):
        C.group_ablation(circuit, "G9.9")


def test_prompt_set_reports_stability(tiny):
    prompts = [PROMPT, "the dog is big and the cat is", "a red bird and a blue fish"]
    result = tiny.circuit(prompts, target="big", fast=True, **SMALL)
    stability = result["fidelity"]["stability"]
    assert stability["prompts"] == 3 and len(result["prompts"]) == 3
    assert {r["id"] for r in stability["neurons"]} == {n["id"] for n in result["neurons"]}
    assert {r["id"] for r in stability["groups"]} == {g["id"] for g in result["groups"]}
    assert all(0.0 <= r["support"] <= 1.0 and len(r["attribution"]) == 3 for r in stability["neurons"])
    assert all(g["stability"]["label"] in ("stable", "mixed", "specific", "weak") for g in result["groups"])
    for row in stability["neurons"]:
        assert row["label"] == ("stable" if row["support"] >= 0.75 else "weak" if row["support"] == 0
                                else "specific" if row["support"] <= 1 / 3 + 1e-9 else "mixed")
    assert result["target"]["token"] == "big"


def test_progress_cancellation_and_bad_input(tiny):
    seen = []
    tiny.circuit(PROMPT, fast=True, progress=lambda phase, frac, msg: seen.append((phase, frac, msg)), **SMALL)
    phases = [p for p, _, _ in seen]
    assert phases[0] == "tokenize" and phases[-1] == "done"
    assert {"reference", "root", "core neurons", "groups", "fidelity"} <= set(phases)
    assert [f for _, f, _ in seen] == sorted(f for _, f, _ in seen)
    assert any("critical neurons" in m for p, _, m in seen if p == "core neurons")
    calls = []

    def cancel_later():
        calls.append(1)
        return len(calls) > 4

    with pytest.raises(Cancelled):
        tiny.circuit(PROMPT, should_cancel=cancel_later, **SMALL)
    assert all(not site.down._forward_pre_hooks and not site.down._forward_hooks for site in tiny.sites)
    assert all(not layer._forward_pre_hooks for layer in C._layers(tiny))
    with pytest.raises(BadInput, match="window"):
        tiny.circuit(PROMPT, layers="2-1")
    with pytest.raises(BadInput, match="tau"):
        tiny.circuit(PROMPT, tau=0)
    with pytest.raises(BadInput, match="empty"):
        tiny.circuit("  ")
    with pytest.raises(BadInput, match="LO-HI"):
        tiny.circuit(PROMPT, layers="top")
    assert C.resolve_window(None, 30) == (24, 29) and C.resolve_window(3, 30) == (27, 29)
    assert C.resolve_window("20-25", 30) == (20, 25)


def test_user_corpus_and_text_files(tiny, tmp_path):
    texts = ["the cat is big", "the dog is small and red", "a king and a queen went to rome"] * 4
    result = tiny.circuit(PROMPT, corpus=texts, fast=True, **{**SMALL, "k": 6})
    assert not result["params"]["corpus"]["shipped"] and result["params"]["corpus"]["texts"] == len(texts)
    plain = tmp_path / "texts.txt"
    plain.write_text("one line\n\nanother line\n", encoding="utf-8")
    assert C.read_texts(plain) == ["one line", "another line"]
    jsonl = tmp_path / "texts.jsonl"
    jsonl.write_text('{"text": "first"}\n"second"\n', encoding="utf-8")
    assert C.read_texts(jsonl) == ["first", "second"]
    jsonl.write_text('{"nope": 1}\n', encoding="utf-8")
    with pytest.raises(BadInput, match="no 'text'"):
        C.read_texts(jsonl)
    with pytest.raises(BadInput, match="empty"):
        tiny.circuit(PROMPT, corpus=["  "])
