"""Engine facade: clear errors for bad input, progress, cancellation, reproducibility record."""

import pytest

from app.engine.errors import BadInput, Cancelled, NeuronOutOfRange, PromptTooLong, TargetNotSingleToken
from app.engine.ids import Ablation, NeuronId
from app.engine.service import Engine
from tests.engine.conftest import PROMPT


def test_bad_inputs_raise_typed_errors_with_advice(tiny):
    with pytest.raises(BadInput, match="empty"):
        tiny.analyze("   ")
    with pytest.raises(PromptTooLong, match="limit is 256"):
        tiny.analyze("the " * 300)
    with pytest.raises(TargetNotSingleToken, match="2 tokens"):
        tiny.analyze(PROMPT, target="big cat")
    with pytest.raises(NeuronOutOfRange, match="layers 0-2"):
        tiny.ablate(PROMPT, Ablation((NeuronId(9, 1),)))
    with pytest.raises(NeuronOutOfRange, match="neurons 0-63"):
        tiny.neuron(NeuronId(0, 64))
    with pytest.raises(BadInput, match="method"):
        tiny.analyze(PROMPT, method="vibes")
    with pytest.raises(BadInput, match="positions"):
        tiny.ablate(PROMPT, Ablation((NeuronId(0, 1),), positions=(99,)))


def test_progress_phases_and_cancellation(tiny):
    seen = []
    tiny.analyze(PROMPT, k=2, progress=lambda phase, frac, msg: seen.append((phase, frac)))
    phases = [p for p, _ in seen]
    assert phases[0] == "tokenize" and phases[-1] == "done" and "edges" in phases
    assert [f for _, f in seen] == sorted(f for _, f in seen)
    calls = []

    def cancel_after_two():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(Cancelled):
        tiny.analyze(PROMPT, method="ig", ig_steps=4, should_cancel=cancel_after_two)
    assert all(not site.down._forward_pre_hooks for site in tiny.sites)


def test_result_carries_reproducibility_record(tiny):
    result = tiny.analyze(PROMPT, k=2, verify=3)
    assert result["model"]["weights_sha256"] == Engine.tiny("llama", seed=0).info["weights_sha256"]
    assert result["model"]["weights_sha256"] != Engine.tiny("llama", seed=1).info["weights_sha256"]
    assert set(result["repro"]) >= {"torch", "transformers", "engine_version", "dtype", "device"}
    assert result["tokens"] == ["the", "cat", "is", "big", "and", "the", "dog", "is"]
    assert result["fidelity"]["n"] == 3
    assert sum(row["prob"] for row in result["top"]) <= 1.0


def test_neuron_activations_per_token(tiny):
    out = tiny.neuron_activations(PROMPT, NeuronId(1, 4))
    assert len(out["activations"]) == len(out["tokens"]) == 8
    result = tiny.analyze(PROMPT, method="magnitude", k=64, verify=0, edges=False)
    node = next(n for n in result["nodes"] if n["id"] == "L1.N4")
    assert node["activation"] == pytest.approx(out["activations"][-1], abs=1e-6)
