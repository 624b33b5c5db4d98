"""A NeurFlow circuit on the embedded default model, end to end (marked real_model; runs in CI).

Fast mode (activation x gradient) over a 4-layer window keeps CI time small; the closed-form block is
checked against autograd through SmolLM2's own decoder layer on a few real samples."""

import json
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from app.engine import circuits as C
from app.engine.service import Engine

pytestmark = pytest.mark.real_model
MODELS = Path(__file__).resolve().parents[2] / "models"
PROMPT = "The Eiffel Tower is a famous landmark in the heart of Paris, which is the capital city of"


@pytest.fixture(scope="module")
def smol() -> Engine:
    return Engine.load(model_dir=MODELS)


@pytest.fixture(scope="module")
def circuit(smol):
    return smol.circuit(PROMPT, fast=True, layers=4)


def test_circuit_end_to_end_has_sane_structure(circuit):
    assert circuit["target"]["token"] == " France" and circuit["prompts"][0]["target"]["prob"] > 0.3
    assert circuit["params"]["netb"] == "closed-form" and circuit["params"]["layers"] == [26, 29]
    assert circuit["params"]["corpus"]["texts"] >= 300
    assert [layer["layer"] for layer in circuit["layers"]] == [29, 28, 27, 26]
    assert all(1 <= layer["critical"] <= 32 and layer["groups"] for layer in circuit["layers"])
    assert all(0.5 < layer["coverage"] <= 1.0 for layer in circuit["layers"])
    totals = defaultdict(float)
    for edge in circuit["edges"]:
        totals[(edge["target"], edge["subconcept"])] += abs(edge["weight"])
    assert all(v == pytest.approx(1.0, abs=1e-4) for v in totals.values())
    for group in circuit["groups"]:
        assert group["samples"] and group["writes"]["top"] and group["members"]
        assert all(s["tokens"][s["focus"]] == s["token"] for s in group["samples"])
    assert any(edge["target"] == "root" for edge in circuit["group_edges"])
    json.dumps(circuit)


def test_circuit_fidelity_on_the_real_model(circuit):
    rows = {row["layer"]: row for row in circuit["fidelity"]["ablation"]}
    together = rows["all"]
    assert together["core"]["delta_prob"] < -0.2
    assert together["core"]["delta_prob"] < together["random"]["delta_prob_mean"] - 3 * together["random"]["delta_prob_std"]
    correlation = circuit["fidelity"]["correlation"]
    assert correlation["root"]["spearman"] > 0.5
    assert all(row["spearman"] > 0.5 for row in correlation["neurons"])


def test_closed_form_matches_autograd_on_smollm2(smol):
    cache = C.reference_cache(smol)
    cache.ensure(smol, range(26, 30))
    trace = C._trace(smol, smol.encode(PROMPT))
    pool = C._Pool(cache, [trace], [PROMPT], smol.device)
    netb = C._NetB(smol, pool, (torch.arange(4) + 0.5) / 4)
    flats = pool.candidates[torch.tensor([5, 900, 2500])]
    neurons = torch.tensor([17, 800, 1500])
    closed = netb._manual_ig(28, neurons, flats, None)
    generic = netb._generic_ig(28, neurons, flats, None)
    assert torch.allclose(closed, generic, atol=1e-4 * float(generic.abs().max()), rtol=1e-3)


def test_cli_circuit_json_and_text(tmp_path):
    import os
    import subprocess
    import sys

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("The capital of France is\nThe capital of Italy is\n", encoding="utf-8")
    env = {**os.environ, "TQDM_DISABLE": "1"}
    out = subprocess.run([sys.executable, "-m", "app.cli", "circuit", "--prompts", str(prompts), "--fast",
                          "--layers", "3", "--k", "20", "--json"], check=False, capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["kind"] == "circuit" and [p["target"]["token"] for p in data["prompts"]] == [" Paris", " Rome"]
    assert data["params"]["layers"] == [27, 29] and data["params"]["k"] == 20
    assert data["fidelity"]["stability"]["prompts"] == 2
    bad = subprocess.run([sys.executable, "-m", "app.cli", "circuit", "x", "--layers", "9-3"], check=False,
                         capture_output=True, text=True, env=env, timeout=300)
    assert bad.returncode == 2 and "window" in bad.stderr
