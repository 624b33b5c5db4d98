"""Impacts checked against manual computations and true interventions on tiny seeded models."""

import pytest
import torch
from scipy.stats import spearmanr

from app.engine import impacts as imp
from app.engine.hooks import capture
from app.engine.ids import NeuronId
from tests.engine.conftest import PROMPT


def _manual_grads(engine, ids, metric):
    """dM/da_l by retain_grad on the captured activations, independent of the engine's code path."""
    store = {}
    emb = engine.model.get_input_embeddings()
    handle = emb.register_forward_hook(lambda m, a, out: out.detach().requires_grad_(True))
    try:
        with torch.enable_grad(), capture(engine.sites, store=store):
            logits = engine.model(input_ids=ids).logits[:, -1]
            for a in store.values():
                a.retain_grad()
            metric(logits).sum().backward()
    finally:
        handle.remove()
    return store


def test_attribution_equals_activation_times_manual_gradient(tiny):
    ids = tiny.encode(PROMPT)
    result = tiny.analyze(PROMPT, method="attribution", k=64, verify=0, edges=False)
    metric = imp.Metric(result["target"]["id"])
    store = _manual_grads(tiny, ids, metric)
    for node in result["nodes"]:
        a = store[node["layer"]]
        manual = float((a.detach() * a.grad).sum(dim=(0, 1))[node["neuron"]])
        assert node["impact"] == pytest.approx(manual, abs=1e-5)


def test_attribution_agrees_with_true_ablation(tiny):
    """-impact is the first-order estimate of zeroing a neuron; on a tiny model it tracks the truth."""
    result = tiny.analyze(PROMPT, method="attribution", k=64, verify=0, edges=False)
    ids = tiny.encode(PROMPT)
    metric = imp.Metric(result["target"]["id"])
    top = sorted(result["nodes"], key=lambda n: -abs(n["impact"]))[:40]
    exact = imp.ablation_effects(tiny.model, tiny.sites, ids, metric, [NeuronId.parse(n["id"]) for n in top],
                                 base=result["metric_value"])
    estimate = [-n["impact"] for n in top]
    assert spearmanr(estimate, exact).statistic > 0.8
    assert all((e > 0) == (x > 0) for e, x in zip(estimate[:10], exact[:10]))


def test_exact_ablation_effect_equals_zeroing_up_proj_row(tiny):
    ids = tiny.encode(PROMPT)
    metric = imp.Metric(5)
    base = float(metric(imp.last_logits(tiny.model, ids)))
    nid = NeuronId(1, 9)
    (effect,) = imp.ablation_effects(tiny.model, tiny.sites, ids, metric, [nid], base=base)
    weight = tiny.sites[1].up.weight
    saved = weight[9].clone()
    try:
        with torch.no_grad():
            weight[9] = 0
            manual = float(metric(imp.last_logits(tiny.model, ids))) - base
    finally:
        with torch.no_grad():
            weight[9] = saved
    assert effect == pytest.approx(manual, abs=1e-5)


def test_integrated_gradients_completeness(tiny):
    """Per layer, the IG attributions sum to M(a) - M(a_l = 0), up to the quadrature error."""
    ids = tiny.encode(PROMPT)
    metric = imp.Metric(7)
    ig = imp.integrated_gradients(tiny.model, tiny.sites, ids, metric, steps=64)
    base = float(metric(imp.last_logits(tiny.model, ids)))
    from app.engine.hooks import rewrite

    for layer in range(tiny.n_layers):
        with torch.no_grad(), rewrite(tiny.sites, lambda _l, a: torch.zeros_like(a), layers=[layer]):
            zeroed = float(metric(imp.last_logits(tiny.model, ids)))
        assert float(ig[layer].sum()) == pytest.approx(base - zeroed, rel=2e-3, abs=2e-4)


def test_magnitude_is_mean_absolute_up_projection(tiny):
    ids = tiny.encode(PROMPT)
    imp_mag, _, _ = imp.magnitude(tiny.model, tiny.sites, ids)
    ups = {}
    with torch.no_grad(), capture(tiny.sites, store={}, up_store=ups):
        tiny.model(input_ids=ids)
    for layer in range(tiny.n_layers):
        torch.testing.assert_close(imp_mag[layer], ups[layer][0].abs().mean(dim=0))
    result = tiny.analyze(PROMPT, method="magnitude", k=5, verify=0, edges=False)
    for layer in range(tiny.n_layers):
        expected = imp_mag[layer].topk(5).indices.tolist()
        assert [n["neuron"] for n in result["nodes"] if n["layer"] == layer] == expected


def test_contrast_metric_is_logit_difference(tiny):
    result = tiny.analyze(PROMPT, target="cat", contrast="dog", method="attribution", k=3, verify=0, edges=False)
    logits = imp.last_logits(tiny.model, tiny.encode(PROMPT))[0]
    t, c = tiny.token_id("cat"), tiny.token_id("dog")
    assert result["metric"] == "logit_diff"
    assert result["metric_value"] == pytest.approx(float(logits[t] - logits[c]), abs=1e-5)
