"""Job lifecycle: progress over server-sent events, queue positions, cancel, timeout, queue full,
failures leaving no result row, and cached reads answered while a long job runs."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor


def _until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def _submit(client, prompt: str) -> dict:
    response = client.post("/api/analyses", json={"prompt": prompt})
    assert response.status_code == 202, response.text
    return response.json()["job"]


def test_events_stream_progress_then_done(client, helpers):
    job = _submit(client, "the dog runs to the")
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = helpers.sse_events(response.read().decode())
    names = [name for name, _ in events]
    assert names[-1] == "done" and set(names[:-1]) <= {"progress"}
    final = json.loads(events[-1][1])
    assert final["status"] == "done" and final["url"].startswith("/a/") and final["progress"] == 1.0
    assert client.get(final["url"]).status_code == 200
    # a finished job's stream answers at once with its final event
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as response:
        assert [n for n, _ in helpers.sse_events(response.read().decode())] == ["done"]


def test_events_report_each_phase(client, blocker, helpers):
    job = _submit(client, "a slow horse")
    assert blocker.started.wait(10)
    jobs = client.app.state.services.jobs
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(lambda: client.get(f"/api/jobs/{job['id']}/events").text)
        _until(lambda: jobs.listeners(job["id"]) == 1)
        blocker.release.set()
        events = helpers.sse_events(future.result(timeout=30))
    phases = [json.loads(data)["phase"] for name, data in events if name == "progress"]
    assert {"forward", "edges", "verify"} <= set(phases)
    assert events[-1][0] == "done"


def test_queue_position_and_cancel_of_a_queued_job(client, blocker, helpers):
    running = _submit(client, "a slow cat")
    assert blocker.started.wait(10)
    queued = _submit(client, "a slow dog")
    assert queued["status"] == "queued" and queued["queue_position"] == 0
    assert client.get("/healthz").json()["queue"] == 1

    cancelled = client.delete(f"/api/jobs/{queued['id']}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert client.get(f"/api/jobs/{queued['id']}").json()["status"] == "cancelled"
    with client.stream("GET", f"/api/jobs/{queued['id']}/events") as response:
        assert [n for n, _ in helpers.sse_events(response.read().decode())] == ["cancelled"]

    blocker.release.set()
    assert helpers.wait_job(client, running["id"])["status"] == "done"
    assert [a["prompt"] for a in client.get("/api/analyses").json()] == ["a slow cat"]


def test_cancel_a_running_job_leaves_no_result(client, blocker, helpers):
    job = _submit(client, "a slow bird")
    assert blocker.started.wait(10)
    jobs = client.app.state.services.jobs
    with ThreadPoolExecutor(1) as pool:
        stream = pool.submit(lambda: client.get(f"/api/jobs/{job['id']}/events").text)
        _until(lambda: jobs.listeners(job["id"]) == 1)
        response = client.delete(f"/api/jobs/{job['id']}")
        events = helpers.sse_events(stream.result(timeout=30))
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert events[0][0] == "progress" and json.loads(events[0][1])["status"] == "running"
    assert events[-1][0] == "cancelled" and json.loads(events[-1][1])["result_id"] is None
    assert client.get("/api/analyses").json() == []
    # deleting again is harmless; a new request computes afresh
    assert client.delete(f"/api/jobs/{job['id']}").json()["status"] == "cancelled"
    assert client.post("/api/analyses", json={"prompt": "a slow bird"}).status_code == 202


def test_job_timeout_fails_the_job(make_client, blocker, helpers):
    client = make_client(job_timeout_s=0.3)
    job = _submit(client, "a slow fish")
    final = helpers.wait_job(client, job["id"])
    assert final["status"] == "failed" and "timed out" in final["error"]
    assert client.get("/api/analyses").json() == []


def test_queue_full_answers_503_with_retry_after(make_client, blocker, helpers):
    client = make_client(queue_limit=1)
    _submit(client, "a slow cow")
    assert blocker.started.wait(10)
    _submit(client, "a slow sheep")
    full = client.post("/api/analyses", json={"prompt": "a slow lion"})
    assert full.status_code == 503
    assert int(full.headers["retry-after"]) >= 1
    assert full.json()["error"]["code"] == "queue_full" and "retry" in full.json()["error"]["message"]
    # identical requests still join their job, cached reads still work
    assert client.post("/api/analyses", json={"prompt": "a slow sheep"}).status_code == 202
    assert client.get("/healthz").status_code == 200


def test_cached_reads_are_answered_while_a_long_job_runs(client, blocker, helpers):
    done = helpers.analyze(client)
    _submit(client, "a slow wolf")
    assert blocker.started.wait(10)  # the engine (and its lock) is busy from here on
    started = time.perf_counter()
    assert client.post("/api/analyses", json={"prompt": helpers.PROMPT}).status_code == 200
    assert client.get(f"/api/analyses/{done['id']}").status_code == 200
    assert client.get(f"/a/{done['slug']}.json").status_code == 200
    assert client.get(f"/a/{done['slug']}").status_code == 200
    assert client.get("/api/analyses").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert time.perf_counter() - started < 5.0  # the job itself never ends until released
    assert not blocker.release.is_set()


def test_engine_failure_fails_the_job_without_a_result(client, tiny_engine, monkeypatch, helpers):
    from app.engine.errors import BadInput

    real = tiny_engine.analyze

    def failing(prompt, **kwargs):
        real(prompt, **kwargs)  # the real computation runs, then storing is refused by a late error
        raise BadInput("the engine refused this input; try another prompt")

    monkeypatch.setattr(tiny_engine, "analyze", failing)
    job = _submit(client, "the sun is")
    final = helpers.wait_job(client, job["id"])
    assert final["status"] == "failed" and "refused" in final["error"] and final["result_id"] is None
    assert client.get("/api/analyses").json() == []


def test_unexpected_worker_error_is_contained(client, tiny_engine, monkeypatch, helpers):
    def broken(prompt, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(tiny_engine, "analyze", broken)
    final = helpers.wait_job(client, _submit(client, "the moon is")["id"])
    assert final["status"] == "failed" and "internal error" in final["error"]
    assert client.get("/healthz").status_code == 200


def test_shutdown_fails_queued_jobs(make_settings, tiny_engine, blocker, helpers):
    from fastapi.testclient import TestClient

    from app.main import create_app

    settings = make_settings()
    with TestClient(create_app(settings, engine=tiny_engine)) as client:
        running = _submit(client, "a slow tiger")
        assert blocker.started.wait(10)
        queued = _submit(client, "a slow bear")
        releaser = threading.Timer(0.5, blocker.release.set)
        releaser.start()
    releaser.join()
    with TestClient(create_app(settings, engine=tiny_engine)) as client:
        for job in (queued, running):
            final = client.get(f"/api/jobs/{job['id']}").json()
            assert final["status"] == "failed" and "server stopped" in final["error"]
        assert client.get("/api/analyses").json() == []


def test_ablation_while_the_model_is_busy_answers_503_then_works(make_client, blocker, helpers):
    client = make_client(engine_wait_s=0.3)
    analysis = helpers.analyze(client)
    slow = _submit(client, "a slow king")
    assert blocker.started.wait(10)  # a long analysis holds the engine lock
    url = f"/api/analyses/{analysis['id']}/ablations"
    busy = client.post(url, json={"neurons": ["L0.N1"]})
    assert busy.status_code == 503 and busy.headers["retry-after"] == "5"
    assert busy.json()["error"]["code"] == "queue_full" and "busy" in busy.json()["error"]["message"]
    blocker.release.set()
    assert helpers.wait_job(client, slow["id"])["status"] == "done"
    assert client.post(url, json={"neurons": ["L0.N1"]}).status_code == 200


def test_engine_gate_refuses_past_its_waiting_limit():
    import anyio

    from app.web.errors import QueueFull
    from app.web.jobs import EngineGate

    async def scenario():
        gate, release = EngineGate(threads=1, max_waiting=1), threading.Event()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(gate.run, release.wait, 5)
            await anyio.sleep(0.05)
            try:
                await gate.run(lambda: None)
            except QueueFull as exc:
                assert exc.retry_after and "busy" in exc.message
            else:
                raise AssertionError("the gate let a second call wait")
            release.set()

    anyio.run(scenario)


def test_queued_analysis_waits_while_interactive_calls_hold_the_engine(client):
    """A queued job starts only once no live ablation is waiting (bounded), so ablations are not starved."""
    jobs = client.app.state.services.jobs
    waiting = {"n": 1}
    jobs.interactive = lambda: waiting["n"]
    job = _submit(client, "the cat sees the")
    time.sleep(0.3)
    assert client.get(f"/api/jobs/{job['id']}").json()["status"] == "queued"  # the tiny job needs ~50 ms
    waiting["n"] = 0
    _until(lambda: client.get(f"/api/jobs/{job['id']}").json()["status"] == "done")
