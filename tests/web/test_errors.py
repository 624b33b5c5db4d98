"""Bad input gets a clear 4xx: JSON ``{"error": {"code", "message"}}`` saying what is wrong and what to do."""

from __future__ import annotations

import json

import pytest

MODEL = "tiny-llama-s0"
JSON = {"content-type": "application/json"}


def assert_error(response, status: int, code: str, *words: str) -> dict:
    """The response is the documented error shape with this status and code, mentioning ``words``."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"code", "message"} and error["code"] == code, error
    assert len(error["message"]) > 10
    for word in words:
        assert word.lower() in error["message"].lower(), error["message"]
    return error


@pytest.fixture
def analysis(client, helpers) -> dict:
    return helpers.analyze(client)


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"prompt": ""}, 422, "invalid_request", ["prompt", "at least 1"]),
        ({"prompt": "   \n "}, 422, "invalid_request", ["prompt", "non-whitespace"]),
        ({"prompt": "x" * 20_001}, 413, "prompt_too_long", ["20000", "shorten"]),
        ({"prompt": " ".join(["cat"] * 300)}, 413, "prompt_too_long", ["300 tokens", "limit is 256"]),
        ({"prompt": "the cat", "model": "gpt-17"}, 404, "unknown_model", ["gpt-17", MODEL]),
        ({"prompt": "the cat", "target": "big dog"}, 422, "target_not_single_token", ["2 tokens"]),
        ({"prompt": "the cat", "contrast": "big dog"}, 422, "target_not_single_token", ["contrast"]),
        ({"prompt": "the cat", "method": "vibes"}, 422, "invalid_request", ["method"]),
        ({"prompt": "the cat", "k": 0}, 422, "invalid_request", ["k"]),
        ({"prompt": "the cat", "k": 65}, 422, "invalid_request", ["k", "64"]),
        ({"prompt": "the cat", "ig_steps": 129}, 422, "invalid_request", ["ig_steps"]),
        ({"prompt": "the cat", "k": "five"}, 422, "invalid_request", ["k"]),
        ({"prompt": "\ud800 cat"}, 422, "invalid_request", ["prompt", "unicode"]),
        ({}, 422, "invalid_request", ["prompt", "required"]),
        ([1, 2], 422, "invalid_request", ["json object"]),
    ],
)
def test_bad_analysis_requests(client, body, status, code, words):
    content = json.dumps(body).encode()  # ASCII-escaped, so a lone surrogate travels as \ud800
    response = client.post("/api/analyses", content=content, headers={"content-type": "application/json"})
    assert_error(response, status, code, *words)


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({"neurons": ["L1.N99999"]}, 422, "neuron_out_of_range", ["layers 0-2", "0-63"]),
        ({"neurons": ["L7.N1"]}, 422, "neuron_out_of_range", ["L7.N1"]),
        ({"neurons": ["neuron five"]}, 400, "bad_input", ["L3.N1207"]),
        ({"neurons": []}, 422, "invalid_request", ["neurons"]),
        ({"neurons": ["L0.N1"] * 2001}, 422, "invalid_request", ["2000"]),
        ({"neurons": ["L0.N1"], "mode": "melt"}, 422, "invalid_request", ["mode"]),
        ({"neurons": ["L0.N1"], "mode": "scale", "factor": 1e9}, 422, "invalid_request", ["factor"]),
        ({"neurons": ["L0.N1"], "positions": [99]}, 400, "bad_input", ["positions"]),
        ({"neurons": ["L0.N1"], "continuation": 65}, 422, "invalid_request", ["continuation"]),
    ],
)
def test_bad_ablation_requests(client, analysis, body, status, code, words):
    response = client.post(f"/api/analyses/{analysis['id']}/ablations", json=body)
    assert_error(response, status, code, *words)


def test_non_finite_numbers_are_refused(client, analysis):
    response = client.post(f"/api/analyses/{analysis['id']}/ablations", content=b'{"neurons":["L0.N1"],'
                           b'"mode":"scale","factor":Infinity}', headers={"content-type": "application/json"})
    assert_error(response, 422, "invalid_request", "factor")


def test_malformed_json(client):
    response = client.post("/api/analyses", content=b'{"prompt": "the cat', headers=JSON)
    assert_error(response, 400, "malformed_json", "not valid json")


def test_non_utf8_body(client):
    response = client.post("/api/analyses", content=b'{"prompt": "caf\xe9"}',
                           headers={"content-type": "application/json"})
    assert_error(response, 400, "bad_body", "utf-8")


def test_wrong_content_type(client):
    response = client.post("/api/analyses", content=b"prompt=the+cat",
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"


def test_oversized_body(client):
    response = client.post("/api/analyses", content=b'{"prompt": "' + b"a" * (2 << 20) + b'"}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("method", "path", "words"),
    [
        ("GET", "/api/analyses/nope", ["analysis", "GET /api/analyses"]),
        ("POST", "/api/analyses/nope/ablations", ["analysis"]),
        ("GET", "/api/jobs/nope", ["job"]),
        ("GET", "/api/jobs/nope/events", ["job"]),
        ("DELETE", "/api/jobs/nope", ["job"]),
        ("GET", "/a/nope.json", ["/a/nope"]),
        ("GET", "/a/nope", ["/a/nope"]),
        ("GET", "/api/no-such-endpoint", ["/docs"]),
    ],
)
def test_unknown_ids_are_404(client, method, path, words):
    kwargs = {"json": {"neurons": ["L0.N1"]}} if method == "POST" else {}
    assert_error(client.request(method, path, **kwargs), 404, "not_found", *words)


def test_unknown_permalink_view_and_analysis(client, analysis):
    view = f"/a/{analysis['slug']}.json"
    assert_error(client.get(view, params={"v": "zzzzzzzzzz"}), 404, "not_found", "?v=")
    response = client.post("/api/permalinks", json={"analysis_id": "nope", "state": {}})
    assert_error(response, 404, "not_found", "analysis")


def test_bad_permalink_state(client, analysis):
    body = {"analysis_id": analysis["id"], "state": {"sel": ["L9.N0"]}}
    response = client.post("/api/permalinks", json=body)
    assert_error(response, 422, "neuron_out_of_range", "L9.N0")
    response = client.post("/api/permalinks", json={"analysis_id": analysis["id"], "state": {"thr": "high"}})
    assert_error(response, 422, "invalid_request", "thr")


def test_bad_view_query(client, analysis):
    view = f"/a/{analysis['slug']}.json"
    assert_error(client.get(view, params={"sel": "L0.Nx"}), 400, "bad_input", "L0.Nx")
    assert_error(client.get(f"/a/{analysis['slug']}.json", params={"abl": "L0.N1", "mode": "melt"}),
                 400, "bad_input", "mode")
    assert_error(client.get(f"/a/{analysis['slug']}.json", params={"thr": "nan"}), 400, "bad_input", "thr")


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        (f"/api/models/{MODEL}/neurons/L3.N0", 422, "neuron_out_of_range"),
        (f"/api/models/{MODEL}/neurons/L0.N64", 422, "neuron_out_of_range"),
        (f"/api/models/{MODEL}/neurons/layer0", 400, "bad_input"),
        ("/api/models/gpt-17/neurons/L0.N1", 404, "unknown_model"),
        (f"/m/{MODEL}/n/L99.N0.json", 422, "neuron_out_of_range"),
        ("/m/gpt-17/n/L0.N0.json", 404, "unknown_model"),
        (f"/api/models/{MODEL}/neurons/L0.N1?analysis=nope", 404, "not_found"),
    ],
)
def test_bad_neurons_and_models(client, path, status, code):
    assert_error(client.get(path), status, code)


def test_method_not_allowed(client):
    assert_error(client.put("/api/analyses"), 405, "method_not_allowed")


def test_browsers_get_an_error_page(client):
    response = client.get("/a/nope", headers={"accept": "text/html"})
    assert response.status_code == 404 and "text/html" in response.headers["content-type"]
    assert "no analysis at /a/nope" in response.text
    response = client.get("/m/gpt-17/n/L0.N0", headers={"accept": "text/html"})
    assert response.status_code == 404 and "gpt-17" in response.text
