"""Circuits through the real app on the tiny engine: job + SSE, content-keyed cache, group ablations, views,
permalinks across restarts, gzip, warming, and clear 4xx answers for bad input (docs/CONTRACTS.md)."""

from __future__ import annotations

import copy
import gzip
import json
import threading
from collections import Counter
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.engine import circuits as engine_circuits
from app.engine.ids import Ablation
from app.main import FRONTEND, create_app
from app.store import repo
from app.store.session import session_scope
from app.web import circuits as web_circuits

PROMPT = "the capital of france is"
FAST = {"tau": 4, "k": 4, "layers": "1-2", "fast": True}  # a sub-second circuit on the tiny model


@pytest.fixture
def counted(tiny_engine, monkeypatch) -> Counter:
    """Counts the engine's circuit and ablate calls (still calling the real ones)."""
    counter: Counter = Counter()
    for name in ("circuit", "ablate"):
        real = getattr(tiny_engine, name)

        def wrapped(*args, _real=real, _name=name, **kwargs):
            counter[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(tiny_engine, name, wrapped)
    return counter


def make_circuit(client: TestClient, helpers, **body) -> dict:
    """POST a circuit, follow its job if one was queued, return the stored circuit."""
    response = client.post("/api/circuits", json={"prompt": PROMPT, **FAST, **body})
    assert response.status_code in (200, 202), response.text
    data = response.json()
    if data["status"] == "done":
        return data["circuit"]
    job = helpers.wait_job(client, data["job"]["id"], timeout=120)
    assert job["status"] == "done", job
    return client.get(f"/api/circuits/{job['result_id']}").json()


# ---------------------------------------------------------------- compute, cache, jobs


def test_circuit_job_streams_progress_then_is_served_from_the_store(client, counted, helpers):
    first = client.post("/api/circuits", json={"prompt": PROMPT, **FAST})
    assert first.status_code == 202 and first.json()["status"] == "queued"
    job_id = first.json()["job"]["id"]

    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        events = helpers.sse_events("".join(stream.iter_text()))
    assert events[-1][0] == "done" and all(name == "progress" for name, _ in events[:-1])
    done = json.loads(events[-1][1])
    assert done["url"].startswith("/c/") and done["result_id"]
    phases = {json.loads(data)["phase"] for name, data in events if name == "progress"}
    assert len(phases) >= 2 or events[0][0] == "done"  # progress was pushed (unless it finished first)

    stored = client.get(f"/api/circuits/{done['result_id']}").json()
    assert stored["url"] == done["url"] == f"/c/{stored['slug']}" and stored["created_at"]
    result = stored["result"]
    assert result["kind"] == "circuit" and result["prompts"][0]["prompt"] == PROMPT
    assert result["params"]["tau"] == 4 and result["params"]["k"] == 4 and result["params"]["layers"] == [1, 2]
    assert result["groups"] and {"fidelity", "group_edges", "layers", "root", "neurons"} <= set(result)
    assert stored["request"] == {"prompt": PROMPT, "prompts": [PROMPT], "target": None, "contrast": None,
                                 "tau": 4, "k": 4, "layers": "1-2", "fast": True, "corpus": None,
                                 "model": "tiny-llama-s0"}

    # the same circuit again (and the same window written as a count of last layers) is a cache hit
    for layers in ("1-2", "2", None):
        again = client.post("/api/circuits", json={"prompt": PROMPT, **FAST, "layers": layers})
        assert again.status_code == 200, layers
        assert again.json() == {"status": "done", "circuit": stored}
    assert counted["circuit"] == 1


@pytest.fixture
def held(tiny_engine, monkeypatch) -> threading.Event:
    """Circuits pause at their first progress report until the returned event is set (or they are
    cancelled: the engine then raises Cancelled itself at its next phase)."""
    release = threading.Event()
    real = tiny_engine.circuit

    def circuit(*args, progress=None, should_cancel=None, **kwargs):
        def hold(phase, fraction, message):
            if progress is not None:
                progress(phase, fraction, message)
            while not release.wait(0.01):
                if should_cancel is not None and should_cancel():
                    return

        return real(*args, progress=hold, should_cancel=should_cancel, **kwargs)

    monkeypatch.setattr(tiny_engine, "circuit", circuit)
    yield release
    release.set()


def test_identical_circuits_in_flight_share_one_job(client, held, counted, helpers):
    a = client.post("/api/circuits", json={"prompt": PROMPT, **FAST}).json()
    b = client.post("/api/circuits", json={"prompt": PROMPT, **FAST, "layers": "2"}).json()  # same window
    assert a["status"] == b["status"] == "queued" and a["job"]["id"] == b["job"]["id"]
    held.set()
    assert helpers.wait_job(client, a["job"]["id"], timeout=120)["status"] == "done"
    assert client.post("/api/circuits", json={"prompt": PROMPT, **FAST}).status_code == 200
    assert counted["circuit"] == 1


def test_a_circuit_job_can_be_cancelled(client, held, helpers):
    job_id = client.post("/api/circuits", json={"prompt": PROMPT, **FAST}).json()["job"]["id"]
    helpers.wait_job(client, job_id, until={"running"})
    cancelled = client.delete(f"/api/jobs/{job_id}").json()
    assert cancelled["status"] == "cancelled" and cancelled["result_id"] is None
    again = client.post("/api/circuits", json={"prompt": PROMPT, **FAST})
    assert again.status_code == 202  # nothing was stored; a new job computes it


def test_parameters_prompts_and_corpus_are_part_of_the_key(client, counted, helpers):
    base = make_circuit(client, helpers)
    other_tau = make_circuit(client, helpers, tau=3)
    two = make_circuit(client, helpers, prompts=[PROMPT, "the dog runs to the"])  # prompt deduplicated
    corpus = make_circuit(client, helpers, corpus=["the cat sat on the mat", "  ", "paris is in france"])
    assert len({base["id"], other_tau["id"], two["id"], corpus["id"]}) == 4
    assert counted["circuit"] == 4
    assert [p["prompt"] for p in two["result"]["prompts"]] == [PROMPT, "the dog runs to the"]
    assert two["request"]["prompts"] == [PROMPT, "the dog runs to the"]
    assert corpus["request"]["corpus"]["texts"] == 2 and len(corpus["request"]["corpus"]["sha256"]) == 64
    assert corpus["result"]["params"]["corpus"]["shipped"] is False
    # blank lines and surrounding spaces do not change the corpus
    same = client.post("/api/circuits", json={"prompt": PROMPT, **FAST,
                                              "corpus": ["the cat sat on the mat ", "paris is in france"]})
    assert same.status_code == 200 and same.json()["circuit"]["id"] == corpus["id"]


def test_job_of_a_circuit_points_at_the_circuit_page(client, helpers):
    job_id = client.post("/api/circuits", json={"prompt": "one two three", **FAST}).json()["job"]["id"]
    job = helpers.wait_job(client, job_id, timeout=120)
    circuit = client.get(f"/api/circuits/{job['result_id']}").json()
    assert job["status"] == "done" and job["url"] == circuit["url"] and job["url"].startswith("/c/")


# ---------------------------------------------------------------- group ablations


def test_group_ablation_equals_engine_ablate_of_the_group_neurons(client, counted, tiny_engine, helpers):
    circuit = make_circuit(client, helpers)
    result = circuit["result"]
    groups = [g["id"] for g in result["groups"][:2]]
    url = f"/api/circuits/{circuit['id']}/ablations"

    response = client.post(url, json={"groups": groups, "mode": "zero"})
    assert response.status_code == 200, response.text
    body = response.json()
    members = [n for g in groups for n in engine_circuits.group_ablation(result, g).neurons]
    expected = tiny_engine.ablate(PROMPT, Ablation(tuple(members)), continuation=8)
    assert body["result"] == json.loads(json.dumps(expected))
    assert body["result"]["ablation"]["neurons"] == [str(n) for n in sorted(set(members))]

    # cached by content key: the same groups in another order compute nothing new
    again = client.post(url, json={"groups": list(reversed(groups)) + groups[:1]})
    assert again.json() == body and counted["ablate"] == 2  # one by the API, one by this test

    # stored as a child of the circuit
    svc = client.app.state.services
    with session_scope(svc.sessions) as s:
        row = repo.get_result(s, id=body["id"])
        assert row.kind == "ablation" and row.parent_id == circuit["id"]
        assert row.request["circuit_id"] == circuit["id"] and set(row.request["groups"]) == set(groups)

    # groups plus extra neurons, scaled: the union of both
    extra = client.post(url, json={"groups": groups[:1], "neurons": ["L0.N3"], "mode": "scale", "factor": 0.5,
                                   "continuation": 2}).json()["result"]["ablation"]
    first = [str(n) for n in engine_circuits.group_ablation(result, groups[0]).neurons]
    assert set(extra["neurons"]) == {*first, "L0.N3"} and extra["mode"] == "scale" and extra["factor"] == 0.5

    # the root's core set is a group too
    root = client.post(url, json={"groups": ["root"]}).json()["result"]["ablation"]["neurons"]
    assert set(root) == {row["neuron"] for row in result["root"]["core"]}


def test_group_ablation_runs_on_the_first_prompt_with_the_target(client, tiny_engine, helpers):
    circuit = make_circuit(client, helpers, prompt="the dog runs to the", prompts=[PROMPT], target="paris")
    group = circuit["result"]["groups"][0]
    body = client.post(f"/api/circuits/{circuit['id']}/ablations", json={"groups": [group["id"]]}).json()
    expected = tiny_engine.ablate("the dog runs to the", Ablation(tuple(engine_circuits.group_ablation(
        circuit["result"], group["id"]).neurons)), target="paris")
    assert body["result"] == json.loads(json.dumps(expected)) and body["result"]["target"]["token"] == "paris"


# ---------------------------------------------------------------- views and permalinks


def test_view_state_from_the_query_and_its_ablation(client, helpers):
    circuit = make_circuit(client, helpers)
    groups = [g["id"] for g in circuit["result"]["groups"]]
    bare = client.get(f"/c/{circuit['slug']}.json").json()
    assert bare == {"circuit": circuit, "state": {"grp": None, "gabl": [], "neurons": [], "mode": "zero",
                                                  "factor": 0.0}, "ablation": None}

    query = {"grp": groups[0], "gabl": f"{groups[-1]},{groups[0]}", "mode": "scale", "factor": "0.25"}
    view = client.get(f"/c/{circuit['slug']}.json", params=query).json()
    assert view["state"]["grp"] == groups[0] and view["state"]["gabl"] == [groups[0], groups[-1]]
    assert view["state"]["mode"] == "scale" and view["state"]["factor"] == 0.25
    direct = client.post(f"/api/circuits/{circuit['id']}/ablations",
                         json={"groups": [groups[0], groups[-1]], "mode": "scale", "factor": 0.25}).json()
    assert view["ablation"] == direct["result"]


def test_circuit_permalink_survives_a_restart(make_settings, tiny_engine, counted, helpers):
    settings = make_settings()
    with TestClient(create_app(settings, engine=tiny_engine)) as client:
        circuit = make_circuit(client, helpers)
        groups = [g["id"] for g in circuit["result"]["groups"]]
        state = {"grp": groups[1], "gabl": [groups[0]], "mode": "mean"}
        response = client.post("/api/permalinks", json={"analysis_id": circuit["id"], "state": state})
        assert response.status_code == 200, response.text
        link = response.json()
        assert link["url"] == f"/c/{circuit['slug']}?v={link['slug']}"
        again = client.post("/api/permalinks", json={"analysis_id": circuit["id"], "state": state}).json()
        assert again == link  # content-addressed
        json_url = link["url"].replace(f"/c/{circuit['slug']}", f"/c/{circuit['slug']}.json")
        before = client.get(json_url).json()
    computed = dict(counted)
    assert before["state"] == {"grp": groups[1], "gabl": [groups[0]], "neurons": [], "mode": "mean", "factor": 0.0}
    assert before["ablation"]["ablation"]["mode"] == "mean"

    with TestClient(create_app(settings, engine=tiny_engine)) as client:  # a new app on the same file
        after = client.get(json_url).json()
        if (FRONTEND / "templates" / "circuit.html").is_file():
            assert client.get(link["url"]).status_code == 200
    assert after == before
    assert dict(counted) == computed  # served from the database, nothing recomputed


def test_analysis_permalinks_are_unchanged_by_circuit_fields(client, helpers):
    analysis = helpers.analyze(client)
    link = client.post("/api/permalinks", json={"analysis_id": analysis["id"],
                                                "state": {"thr": 0.5, "grp": "G1.0", "gabl": ["G1.0"]}}).json()
    assert link["url"].startswith(f"/a/{analysis['slug']}?v=")
    view = client.get(link["url"].replace("?", ".json?")).json()
    assert view["state"] == {"sel": [], "abl": None, "thr": 0.5, "method": None}


def test_circuit_page_renders(client, helpers):
    if not (FRONTEND / "templates" / "circuit.html").is_file():
        pytest.skip("frontend/templates/circuit.html is not written yet")
    circuit = make_circuit(client, helpers)
    page = client.get(circuit["url"], headers={"accept": "text/html"})
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    group = circuit["result"]["groups"][0]["id"]
    assert client.get(circuit["url"], params={"grp": group, "gabl": group}).status_code == 200


# ---------------------------------------------------------------- large results


def test_large_circuits_are_stored_and_served_gzipped(client, helpers):
    circuit = make_circuit(client, helpers)
    big = copy.deepcopy(circuit["result"])
    words = (Path(engine_circuits.__file__).parent / "data" / "reference.txt").read_text().split()
    for i, row in enumerate(big["neurons"] * 40):  # ~1.5 MB of varied JSON, like a SmolLM2 circuit
        big["neurons"].append({**row, "id": f"L1.N{i % 64}", "note": " ".join(words[i % 500:i % 500 + 60])})
    size = len(json.dumps(big))
    assert 1_000_000 < size < 4_000_000
    svc = client.app.state.services
    with session_scope(svc.sessions) as s:
        row = repo.save_result(s, key="k" * 64, kind="circuit", model_name="tiny-llama-s0", weights_sha256="w",
                               request={"prompt": PROMPT}, payload=big)
        big_id = row.id

    response = client.get(f"/api/circuits/{big_id}", headers={"accept-encoding": "gzip"})
    assert response.status_code == 200 and response.headers["content-encoding"] == "gzip"
    assert response.json()["result"] == big  # the client decoded it
    with client.stream("GET", f"/api/circuits/{big_id}", headers={"accept-encoding": "gzip"}) as sent:
        raw = b"".join(sent.iter_raw())  # the bytes on the wire
    assert len(raw) < size / 3 and json.loads(gzip.decompress(raw))["result"] == big
    # small answers stay plain, event streams are never compressed
    assert "content-encoding" not in client.get("/healthz", headers={"accept-encoding": "gzip"}).headers


# ---------------------------------------------------------------- warming


def test_warming_fills_the_corpus_cache_in_the_background(client, tiny_engine):
    svc = client.app.state.services
    stop = threading.Event()
    thread = web_circuits.warm_in_background(svc, stop, idle_s=0.05, poll_s=0.01)
    assert thread is not None
    thread.join(60)
    assert not thread.is_alive()
    lo, hi = engine_circuits.resolve_window(None, tiny_engine.n_layers)
    cache = engine_circuits.reference_cache(tiny_engine)
    assert set(range(lo - 1, hi + 1)) <= set(cache.acts)
    assert tiny_engine.lock.acquire(blocking=False)  # released
    tiny_engine.lock.release()


def test_warming_waits_for_a_busy_model_and_stops_on_shutdown(client, tiny_engine):
    svc = client.app.state.services
    stop = threading.Event()
    holder_ready, release = threading.Event(), threading.Event()

    def hold():
        with tiny_engine.lock:
            holder_ready.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holder_ready.wait(5)
    try:
        thread = web_circuits.warm_in_background(svc, stop, idle_s=0.0, poll_s=0.01)
        thread.join(0.2)
        assert thread.is_alive()  # waiting for the model, not blocking on it
        stop.set()
        thread.join(5)
        assert not thread.is_alive()
    finally:
        release.set()
        holder.join(5)


def test_app_warms_only_when_asked_and_stops_warming_at_shutdown(make_settings, tiny_engine):
    with TestClient(create_app(make_settings(), engine=tiny_engine)) as client:
        assert client.app.state.services.background == []  # an injected engine is left alone
    with TestClient(create_app(make_settings(), engine=tiny_engine, warm_circuits=True)) as client:
        services = client.app.state.services
        [thread] = services.background
        assert thread.is_alive() and client.get("/healthz").status_code == 200  # readiness not delayed
    assert services.stopping.is_set() and not thread.is_alive()


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "status", "code", "words"),
    [
        ({}, 422, "invalid_request", ["prompt"]),
        ({"prompts": []}, 422, "invalid_request", ["prompt"]),
        ({"prompt": "   "}, 422, "invalid_request", ["non-whitespace"]),
        ({"prompts": [PROMPT, " "]}, 422, "invalid_request", ["non-whitespace"]),
        ({"prompts": [f"{PROMPT} {i}" for i in range(17)]}, 422, "invalid_request", ["16"]),
        ({"prompt": "a b", "prompts": [f"{PROMPT} {i}" for i in range(16)]}, 422, "invalid_request", ["16"]),
        ({"prompt": PROMPT, "layers": "abc"}, 422, "invalid_request", ["layers"]),
        ({"prompt": PROMPT, "layers": "2-"}, 422, "invalid_request", ["layers"]),
        ({"prompt": PROMPT, "layers": "0-2"}, 422, "invalid_layers", ["0-2", "LO"]),
        ({"prompt": PROMPT, "layers": "1-7"}, 422, "invalid_layers", ["layers 0-2"]),
        ({"prompt": PROMPT, "layers": "1"}, 422, "invalid_layers", ["at least 2"]),
        ({"prompt": PROMPT, "tau": 0}, 422, "invalid_request", ["tau"]),
        ({"prompt": PROMPT, "tau": 65}, 422, "invalid_request", ["tau"]),
        ({"prompt": PROMPT, "k": 1}, 422, "invalid_request", ["k"]),
        ({"prompt": PROMPT, "k": 201}, 422, "invalid_request", ["k"]),
        ({"prompt": PROMPT, "corpus": ["", "  "]}, 422, "invalid_request", ["corpus"]),
        ({"prompt": PROMPT, "corpus": ["x" * 2001]}, 422, "invalid_request", ["corpus"]),
        ({"prompt": PROMPT, "corpus": ["x"] * 2001}, 422, "invalid_request", ["corpus"]),
        ({"prompt": PROMPT, "target": "paris france"}, 422, "target_not_single_token", ["target"]),
        ({"prompt": PROMPT, "model": "other"}, 404, "unknown_model", ["other"]),
        ({"prompt": " ".join(["cat"] * 300)}, 413, "prompt_too_long", ["limit is 256"]),
    ],
)
def test_bad_circuit_requests_get_clear_errors(client, body, status, code, words):
    response = client.post("/api/circuits", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    for word in words:
        assert word in error["message"], (word, error["message"])


def test_bad_ablations_views_and_ids(client, helpers):
    circuit = make_circuit(client, helpers)
    analysis = helpers.analyze(client)
    url = f"/api/circuits/{circuit['id']}/ablations"
    cases = [
        (client.post(url, json={"groups": ["G9.9"]}), 422, "unknown_group"),
        (client.post(url, json={"groups": ["group one"]}), 422, "invalid_request"),
        (client.post(url, json={}), 422, "invalid_request"),
        (client.post(url, json={"groups": [], "neurons": []}), 422, "invalid_request"),
        (client.post(url, json={"neurons": ["L9.N1"]}), 422, "neuron_out_of_range"),
        (client.post(url, json={"groups": [circuit["result"]["groups"][0]["id"]], "mode": "melt"}), 422,
         "invalid_request"),
        (client.post("/api/circuits/nope/ablations", json={"groups": ["G1.0"]}), 404, "not_found"),
        (client.post(f"/api/circuits/{analysis['id']}/ablations", json={"groups": ["G1.0"]}), 404, "not_found"),
        (client.get("/api/circuits/nope"), 404, "not_found"),
        (client.get(f"/api/circuits/{analysis['id']}"), 404, "not_found"),
        (client.get(f"/api/analyses/{circuit['id']}"), 404, "not_found"),
        (client.get("/c/nope.json"), 404, "not_found"),
        (client.get(f"/c/{analysis['slug']}.json"), 404, "not_found"),
        (client.get(f"/a/{circuit['slug']}.json"), 404, "not_found"),
        (client.get(f"/c/{circuit['slug']}.json", params={"v": "nope"}), 404, "not_found"),
        (client.get(f"/c/{circuit['slug']}.json", params={"grp": "G9.9"}), 422, "unknown_group"),
        (client.get(f"/c/{circuit['slug']}.json", params={"gabl": "G1.0,bogus"}), 422, "unknown_group"),
        (client.get(f"/c/{circuit['slug']}.json", params={"mode": "melt"}), 400, "bad_input"),
        (client.get(f"/c/{circuit['slug']}.json", params={"abl": "L1.X"}), 400, "bad_input"),
        (client.post("/api/permalinks", json={"analysis_id": circuit["id"], "state": {"gabl": ["G9.9"]}}), 422,
         "unknown_group"),
        (client.post("/api/permalinks", json={"analysis_id": "nope", "state": {}}), 404, "not_found"),
    ]
    for response, status, code in cases:
        assert response.status_code == status, (response.request.url, response.text)
        error = response.json()["error"]
        assert error["code"] == code and error["message"], (response.request.url, error)


# ---------------------------------------------------------------- fuzzing with a real circuit


def test_fuzzed_circuit_requests_never_fail_the_server(make_settings, tiny_engine, helpers):
    """Schemathesis over the circuit operations with the ids of a stored circuit (test_fuzz.py covers the
    whole schema with unknown ids): group ablations with random groups, neurons, modes and factors, and
    views with random query states, all answer < 500 with the one error shape."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.python import asgi

    app = create_app(make_settings(queue_limit=10_000, job_timeout_s=5), engine=tiny_engine)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    try:
        raw = asgi.get_client(app)
        job = raw.post("/api/circuits", json={"prompt": PROMPT, **FAST}).json()["job"]
        for _ in range(1200):
            state = raw.get(f"/api/jobs/{job['id']}").json()
            if state["status"] in helpers.TERMINAL:
                break
            threading.Event().wait(0.05)
        assert state["status"] == "done", state
        circuit = raw.get(f"/api/circuits/{state['result_id']}").json()
        known = {"circuit_id": circuit["id"], "slug": circuit["slug"]}
        fuzzed = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            names = {p.name for p in operation.path_parameters}
            if not (operation.path.startswith(("/api/circuits/", "/c/")) and names <= set(known)):
                continue
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
                @given(case=operation.as_strategy(generation_mode=mode,
                                                  path_parameters={k: known[k] for k in names}))
                def run(case):
                    response = case.call(timeout=60)
                    assert response.status_code < 500, (case.method, case.formatted_path, case.query,
                                                        repr(case.body)[:300], response.text[:300])
                    if response.status_code >= 400 and "json" in response.headers.get("content-type", [""])[0]:
                        assert response.json()["error"]["code"]

                try:
                    run()
                except Unsatisfiable:  # invalid data for an operation whose only input is the fixed id
                    continue
                fuzzed += 1
        assert fuzzed >= 6  # the API resource, its ablations, the page and its twin; valid and invalid
    finally:
        asgi.shutdown_lifespans()


# ---------------------------------------------------------------- the real default model


@pytest.mark.real_model
def test_real_model_circuit_end_to_end(tmp_path, helpers):
    """SmolLM2 loaded by the app itself (so the corpus is warmed in the background): a fast circuit over the
    top layers through the job queue, served gzipped, with a group ablation on its prompt."""
    from app.settings import Settings

    model, model_dir = "SmolLM2-135M-Instruct", FRONTEND.parent / "models"
    if not (model_dir / model / "config.json").is_file():
        pytest.skip(f"{model} is not prepared in {model_dir}; run `circuitscope models --prepare`")
    settings = Settings(data_dir=tmp_path / "data", model_dir=model_dir, model=model)
    with TestClient(create_app(settings)) as client:
        body = {"prompt": "The capital of France is", "target": " Paris", "tau": 8, "k": 20, "layers": "27-29",
                "fast": True}
        circuit = make_circuit(client, helpers, **body)
        result = circuit["result"]
        assert result["model"]["name"] == model and result["params"]["layers"] == [27, 29]
        assert result["prompts"][0]["target"]["token"] == " Paris" and result["groups"]
        with client.stream("GET", f"/api/circuits/{circuit['id']}", headers={"accept-encoding": "gzip"}) as sent:
            raw = b"".join(sent.iter_raw())
        assert sent.headers["content-encoding"] == "gzip" and len(raw) < len(json.dumps(circuit)) / 3
        group = result["groups"][0]["id"]
        ablation = client.post(f"/api/circuits/{circuit['id']}/ablations", json={"groups": [group]}).json()
        assert ablation["result"]["baseline"]["target_prob"] == pytest.approx(
            result["prompts"][0]["target"]["prob"], rel=1e-3)
        assert client.post("/api/circuits", json=body).status_code == 200
