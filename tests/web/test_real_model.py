"""The service on the embedded default model (SmolLM2-135M): one analysis, ablation and neuron page.

Marked ``real_model``; skipped with the reason when the model is not prepared
(``circuitscope models --prepare``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app

MODEL = "SmolLM2-135M-Instruct"
MODEL_DIR = Path(__file__).resolve().parents[2] / "models"

pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def real_client(tmp_path_factory):
    if not (MODEL_DIR / MODEL / "config.json").is_file():
        pytest.skip(f"{MODEL} is not prepared in {MODEL_DIR}; run `circuitscope models --prepare`")
    from app.settings import Settings

    settings = Settings(data_dir=tmp_path_factory.mktemp("real-data"), model_dir=MODEL_DIR, model=MODEL)
    with TestClient(create_app(settings)) as client:
        yield client


def test_paris_end_to_end(real_client, helpers):
    analysis = helpers.analyze(real_client, prompt="The capital of France is", target=" Paris", k=5)
    result = analysis["result"]
    assert result["model"]["name"] == MODEL and result["model"]["n_layers"] == 30
    assert result["target"]["token"] == " Paris" and result["target"]["prob"] > 0.1
    assert len(result["nodes"]) == 30 * 5

    top = [n["id"] for n in sorted(result["nodes"], key=lambda n: -n["impact"])[:10]]
    ablation = real_client.post(f"/api/analyses/{analysis['id']}/ablations", json={"neurons": top}).json()
    assert ablation["result"]["baseline"]["target_prob"] == pytest.approx(result["target"]["prob"], rel=1e-3)
    assert ablation["result"]["delta_prob"] < 0  # removing the most helpful neurons lowers " Paris"

    neuron = real_client.get(f"/api/models/{MODEL}/neurons/{top[0]}", params={"analysis": analysis["id"]})
    assert neuron.status_code == 200 and neuron.json()["neuron"]["read_gate"] is not None
    assert real_client.get(analysis["url"]).status_code == 200


def test_real_model_errors(real_client):
    too_long = real_client.post("/api/analyses", json={"prompt": "x " * 600}).json()["error"]
    assert too_long["code"] == "prompt_too_long" and "512" in too_long["message"]
    two_tokens = real_client.post("/api/analyses", json={"prompt": "Hi", "target": "Paris is"}).json()["error"]
    assert two_tokens["code"] == "target_not_single_token"
    assert real_client.get(f"/api/models/{MODEL}/neurons/L30.N0").status_code == 422
