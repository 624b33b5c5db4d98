"""The embedded default model, end to end (marked real_model; runs in CI)."""

from pathlib import Path

import pytest

from app.engine.ids import Ablation, NeuronId
from app.engine.loading import DEFAULT_MODEL, list_models
from app.engine.service import Engine

pytestmark = pytest.mark.real_model
MODELS = Path(__file__).resolve().parents[2] / "models"
PROMPT = "The Eiffel Tower is in the city of Paris. The Colosseum is in the city of"


@pytest.fixture(scope="module")
def smol() -> Engine:
    return Engine.load(model_dir=MODELS)


def test_default_model_is_prepared_and_listed(smol):
    names = {m["name"]: m for m in list_models(MODELS)}
    assert names[DEFAULT_MODEL]["prepared"]
    assert smol.info["n_layers"] == 30 and smol.info["neurons_per_layer"] == 1536
    assert len(smol.info["weights_sha256"]) == 64


def test_attribution_of_all_neurons_nag_and_fidelity(smol):
    result = smol.analyze(PROMPT, method="attribution", k=5, verify=8)
    assert result["target"]["token"] == " Rome" and result["target"]["prob"] > 0.5
    assert len(result["nodes"]) == 150
    assert len(result["layers"]) == 30
    assert len(result["edges"]) == 29 * 25
    assert result["fidelity"]["spearman"] > 0.5


def test_ablating_top_nodes_lowers_target_probability(smol):
    result = smol.analyze(PROMPT, method="attribution", k=5, verify=0, edges=False)
    helpful = [NeuronId.parse(n["id"]) for n in sorted(result["nodes"], key=lambda n: -n["impact"])[:20]]
    out = smol.ablate(PROMPT, Ablation(tuple(helpful)), continuation=4)
    assert out["ablated"]["target_prob"] < out["baseline"]["target_prob"]
    assert out["kl"] > 0
    assert out["baseline"]["target_prob"] == pytest.approx(result["target"]["prob"], abs=1e-4)


def test_neuron_decoding_reads_vocabulary(smol):
    out = smol.neuron(NeuronId(29, 0), top=5)
    assert len(out["write"]["top"]) == 5 and out["read_gate"] is not None


def test_reference_means_are_cached_beside_the_weights(smol):
    means = smol.reference_means()
    cached = list((MODELS / DEFAULT_MODEL / ".circuitscope").glob("reference-means-*.pt"))
    assert cached and means.shape == (30, 1536)
    fresh = Engine.load(model_dir=MODELS)
    assert fresh._load_or_compute_means().equal(means.cpu())
