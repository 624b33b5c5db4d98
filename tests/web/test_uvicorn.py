"""A real uvicorn on 127.0.0.1: health, an analysis followed over real server-sent events, and a server
killed (SIGKILL) mid-job that restarts into a consistent database."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
from fastapi.testclient import TestClient

from app.main import create_app

REPO = Path(__file__).resolve().parents[2]


def _wait_done(http: httpx.Client, job_id: str, until=("done", "failed", "cancelled"), timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while (job := http.get(f"/api/jobs/{job_id}").json())["status"] not in until:
        assert time.monotonic() < deadline, job
        time.sleep(0.05)
    return job


def test_real_server_health_and_one_analysis(make_settings, tiny_engine, live_server, helpers):
    with live_server(create_app(make_settings(), engine=tiny_engine)) as base, \
            httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/healthz").json()["status"] == "ok"
        job = http.post("/api/analyses", json={"prompt": helpers.PROMPT}).json()["job"]
        with http.stream("GET", f"/api/jobs/{job['id']}/events") as response:
            text = "".join(chunk for chunk in response.iter_text())
        events = helpers.sse_events(text)
        assert events[-1][0] == "done"
        url = json.loads(events[-1][1])["url"]
        page = http.get(url)
        assert page.status_code == 200 and helpers.PROMPT in page.text
        cached = http.post("/api/analyses", json={"prompt": helpers.PROMPT})
        assert cached.status_code == 200 and cached.json()["analysis"]["url"] == url
        bad = http.post("/api/analyses", content=b"{", headers={"content-type": "application/json"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "malformed_json"


def _start_server(data_dir: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(REPO / "tests/web/serve_tiny.py"), str(data_dir), str(port)],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_healthy(http: httpx.Client, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        try:
            if http.get("/healthz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_kill_mid_job_then_restart_is_consistent(make_settings, tiny_engine, helpers):
    settings = make_settings()
    port = _free_port()
    proc = _start_server(settings.data_dir, port)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            _wait_healthy(http, proc)
            first = http.post("/api/analyses", json={"prompt": helpers.PROMPT}).json()["job"]
            finished = _wait_done(http, first["id"])
            assert finished["status"] == "done"
            stored = http.get(f"/api/analyses/{finished['result_id']}").json()
            slow = http.post("/api/analyses", json={"prompt": "a slow cat"}).json()["job"]
            _wait_done(http, slow["id"], until=("running",))
            waiting = http.post("/api/analyses", json={"prompt": "a slow dog"}).json()["job"]
            assert waiting["status"] == "queued"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    db_file = settings.data_dir / "circuitscope.db"
    with sqlite3.connect(db_file) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert raw.execute("SELECT status FROM jobs WHERE id = ?", (slow["id"],)).fetchone() == ("running",)

    with TestClient(create_app(settings, engine=tiny_engine)) as client:
        for job_id in (slow["id"], waiting["id"]):
            job = client.get(f"/api/jobs/{job_id}").json()
            assert job["status"] == "failed" and "interrupted" in job["error"] and job["result_id"] is None
        assert client.get(f"/api/analyses/{stored['id']}").json() == stored
        assert [a["id"] for a in client.get("/api/analyses").json()] == [stored["id"]]
        # the interrupted request can simply be sent again
        assert client.post("/api/analyses", json={"prompt": "a slow cat", "k": 2}).status_code == 202


def test_event_stream_listener_is_dropped_when_the_client_leaves(make_settings, tiny_engine, blocker,
                                                                 live_server):
    app = create_app(make_settings(), engine=tiny_engine)
    with live_server(app) as base, httpx.Client(base_url=base, timeout=30) as http:
        job = http.post("/api/analyses", json={"prompt": "a slow star"}).json()["job"]
        assert blocker.started.wait(10)
        jobs = app.state.services.jobs
        with http.stream("GET", f"/api/jobs/{job['id']}/events") as response:
            lines = response.iter_lines()  # keep the iterator: dropping it closes the connection
            first = next(lines)
            assert first.startswith("event: progress") and jobs.listeners(job["id"]) == 1
        deadline = time.monotonic() + 10
        while jobs.listeners(job["id"]):
            assert time.monotonic() < deadline, "listener kept after the client left"
            time.sleep(0.05)
        blocker.release.set()
        assert _wait_done(http, job["id"])["status"] == "done"
