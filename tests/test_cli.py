"""The CLI contract: --json shapes other tools rely on, and one clear sentence for bad input."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.real_model
PROMPT = "The capital of France is"


def run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)  # the exit status is what the tests assert


def test_analyze_json_contract():
    out = run("analyze", PROMPT, "--json", "--k", "3", "--verify", "4")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert set(data["model"]) >= {"name", "weights_sha256", "n_layers", "neurons_per_layer"}
    assert data["target"]["token"] == " Paris" and set(data["target"]) >= {"token", "id", "prob"}
    assert data["method"] == "attribution" and data["k"] == 3 and len(data["tokens"]) == 5
    assert len(data["nodes"]) == 90 and data["nodes"][0]["id"].startswith("L0.N")
    assert set(data["nodes"][0]) >= {"id", "layer", "neuron", "impact", "activation"}
    assert set(data["edges"][0]) >= {"source", "target", "weight"}


def test_ablate_and_neuron_json():
    out = run("ablate", PROMPT, "--neurons", "L20.N5,L25.N7", "--json", "--continuation", "2")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert {"baseline", "ablated", "kl"} <= set(data)
    assert set(data["baseline"]) >= {"target_prob", "top"} and set(data["baseline"]["top"][0]) >= {"token", "prob"}
    out = run("neuron", "L3.N1207", "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["id"] == "L3.N1207"


@pytest.mark.parametrize("args, message", [
    (("analyze", "   "), "prompt is empty"),
    (("analyze", "word " * 600), "limit is 512"),
    (("analyze", PROMPT, "--target", "Parisian capital"), "not one"),
    (("ablate", PROMPT, "--neurons", "L99.N1"), "does not exist"),
    (("ablate", PROMPT, "--neurons", "layer3"), "L<layer>.N<index>"),
    (("neuron", "L3.N1", "--model", "no-such-model"), "not in the model store"),
])
def test_bad_input_exits_with_one_sentence(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
    assert out.stderr.strip().count("\n") == 0


def test_serve_with_unknown_model_fails_fast_with_one_sentence():
    out = run("serve", "--model", "no-such-model", "--port", "1")
    assert out.returncode == 2 and "not in the model store" in out.stderr and "Traceback" not in out.stderr
