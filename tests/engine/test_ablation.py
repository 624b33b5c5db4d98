"""Ablation through hooks equals manual weight edits; hooks never outlive a run."""

import pytest
import torch

from app.engine.hooks import rewrite
from app.engine.ids import Ablation, NeuronId
from app.engine.impacts import last_logits
from tests.engine.conftest import PROMPT


def _probs(engine, ids):
    with torch.no_grad():
        return torch.softmax(last_logits(engine.model, ids)[0].float(), -1)


def test_hook_zero_ablation_equals_zeroing_up_proj_rows(tiny):
    neurons = (NeuronId(0, 3), NeuronId(1, 10), NeuronId(2, 40))
    result = tiny.ablate(PROMPT, Ablation(neurons), continuation=0)
    ids = tiny.encode(PROMPT)
    saved = {n: tiny.sites[n.layer].up.weight[n.index].clone() for n in neurons}
    try:
        with torch.no_grad():
            for n in neurons:
                tiny.sites[n.layer].up.weight[n.index] = 0
        manual = _probs(tiny, ids)
    finally:
        with torch.no_grad():
            for n, row in saved.items():
                tiny.sites[n.layer].up.weight[n.index] = row
    tid = result["target"]["id"]
    assert result["ablated"]["target_prob"] == pytest.approx(float(manual[tid]), abs=1e-5)
    for row in result["ablated"]["top"]:
        assert row["prob"] == pytest.approx(float(manual[row["id"]]), abs=1e-5)
    assert result["baseline"]["target_prob"] == pytest.approx(float(_probs(tiny, ids)[tid]), abs=1e-5)


def test_gpt2_zero_ablation_equals_zeroing_fc_column_and_bias(tiny_gpt2):
    """GPT-2's gelu(0) = 0, so zeroing c_fc's weights and bias for a unit zeroes that neuron."""
    nid = NeuronId(1, 5)
    result = tiny_gpt2.ablate(PROMPT, Ablation((nid,)), continuation=0)
    fc = tiny_gpt2.sites[1].up
    saved_w, saved_b = fc.weight[:, 5].clone(), fc.bias[5].clone()
    try:
        with torch.no_grad():
            fc.weight[:, 5] = 0
            fc.bias[5] = 0
        manual = _probs(tiny_gpt2, tiny_gpt2.encode(PROMPT))
    finally:
        with torch.no_grad():
            fc.weight[:, 5], fc.bias[5] = saved_w, saved_b
    assert result["ablated"]["target_prob"] == pytest.approx(float(manual[result["target"]["id"]]), abs=1e-5)


def test_hooks_are_removed_when_a_run_raises(tiny):
    def boom(_layer, _a):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), rewrite(tiny.sites, boom):
        tiny.model(input_ids=tiny.encode(PROMPT))
    assert all(not site.down._forward_pre_hooks for site in tiny.sites)
    before = tiny.ablate(PROMPT, Ablation((NeuronId(0, 1),), mode="scale", factor=1.0), continuation=0)
    assert before["kl"] == pytest.approx(0.0, abs=1e-6)


def test_scale_by_one_changes_nothing_and_scale_by_zero_equals_zero(tiny):
    nid = (NeuronId(1, 10), NeuronId(2, 3))
    same = tiny.ablate(PROMPT, Ablation(nid, mode="scale", factor=1.0), continuation=4)
    assert same["kl"] == pytest.approx(0.0, abs=1e-6)
    assert same["baseline"]["continuation"] == same["ablated"]["continuation"]
    zero = tiny.ablate(PROMPT, Ablation(nid), continuation=0)
    scaled = tiny.ablate(PROMPT, Ablation(nid, mode="scale", factor=0.0), continuation=0)
    assert zero["ablated"]["target_prob"] == pytest.approx(scaled["ablated"]["target_prob"], abs=1e-7)


def test_mean_ablation_uses_reference_means(tiny):
    nid = NeuronId(2, 11)
    means = tiny.reference_means()
    assert means.shape == (tiny.n_layers, tiny.width)
    result = tiny.ablate(PROMPT, Ablation((nid,), mode="mean"), continuation=0)
    ids = tiny.encode(PROMPT)
    with torch.no_grad(), rewrite(tiny.sites, lambda _l, a: _set(a, 11, means[2, 11]), layers=[2]):
        manual = torch.softmax(last_logits(tiny.model, ids)[0], -1)
    assert result["ablated"]["target_prob"] == pytest.approx(float(manual[result["target"]["id"]]), abs=1e-6)


def _set(a, index, value):
    a = a.clone()
    a[..., index] = value
    return a


def test_positions_restrict_the_intervention(tiny):
    nid = (NeuronId(0, 3), NeuronId(1, 10), NeuronId(2, 40))
    everywhere = tiny.ablate(PROMPT, Ablation(nid), continuation=0)
    first_only = tiny.ablate(PROMPT, Ablation(nid, positions=(0,)), continuation=0)
    last = tiny.check_prompt(PROMPT) - 1
    last_only = tiny.ablate(PROMPT, Ablation(nid, positions=(last,)), continuation=0)
    assert first_only["ablated"]["target_prob"] != pytest.approx(everywhere["ablated"]["target_prob"], abs=1e-7)
    assert last_only["kl"] > 0


def test_continuation_is_greedy_decoding(tiny):
    result = tiny.ablate(PROMPT, Ablation((NeuronId(0, 1),), mode="scale", factor=1.0), continuation=5)
    ids = tiny.encode(PROMPT)
    tokens = []
    with torch.no_grad():
        for _ in range(5):
            nxt = int(tiny.model(input_ids=ids).logits[0, -1].argmax())
            tokens.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    assert result["baseline"]["continuation"] == tiny.tokenizer.decode(tokens)
