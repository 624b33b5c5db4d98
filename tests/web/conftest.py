"""Web test fixtures: real apps (create_app) on the tiny engine, each on its own SQLite file.

``blocker`` pauses real analyses at their first phase so tests can observe queued/running jobs,
cancel them, or time them out; ``calls`` counts real engine calls to prove cache hits.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from contextlib import ExitStack

import pytest
from fastapi.testclient import TestClient

from app.main import create_app

TERMINAL = {"done", "failed", "cancelled"}
PROMPT = "the capital of france is"


@pytest.fixture
def make_client(make_settings, tiny_engine):
    """``make_client(**settings_overrides)`` -> a TestClient whose lifespan has run (closed at teardown)."""
    with ExitStack() as stack:

        def make(engine=None, **overrides) -> TestClient:
            app = create_app(make_settings(**overrides), engine=engine or tiny_engine)
            return stack.enter_context(TestClient(app))

        yield make


@pytest.fixture
def client(make_client) -> TestClient:
    return make_client()


class Blocker:
    """Wraps the real ``engine.analyze``: runs whose prompt contains ``word`` pause at every phase until
    ``release`` is set or the job is cancelled / times out (the engine then raises Cancelled itself)."""

    def __init__(self, engine, word: str = "slow"):
        self.real, self.word = engine.analyze, word
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self, prompt, *, progress=None, should_cancel=None, **kwargs):
        if self.word not in prompt:
            return self.real(prompt, progress=progress, should_cancel=should_cancel, **kwargs)

        def hold(phase, fraction, message):
            if progress is not None:
                progress(phase, fraction, message)
            self.started.set()
            while not self.release.wait(0.01):
                if should_cancel is not None and should_cancel():
                    return

        return self.real(prompt, progress=hold, should_cancel=should_cancel, **kwargs)


@pytest.fixture
def blocker(tiny_engine, monkeypatch):
    """Install a Blocker on the shared engine; released at teardown (before the apps close)."""
    block = Blocker(tiny_engine)
    monkeypatch.setattr(tiny_engine, "analyze", block)
    yield block
    block.release.set()


@pytest.fixture
def calls(tiny_engine, monkeypatch) -> Counter:
    """Counts calls of the engine's analyze / ablate / neuron methods (still calling the real ones)."""
    counter: Counter = Counter()
    for name in ("analyze", "ablate", "neuron", "neuron_activations"):
        real = getattr(tiny_engine, name)

        def counted(*args, _real=real, _name=name, **kwargs):
            counter[_name] += 1
            return _real(*args, **kwargs)

        monkeypatch.setattr(tiny_engine, name, counted)
    return counter


class Helpers:
    """Small request helpers shared by the web tests (a fixture, so no test imports conftest)."""

    PROMPT = PROMPT
    TERMINAL = TERMINAL

    @staticmethod
    def wait_job(client: TestClient, job_id: str, timeout: float = 30.0, until=TERMINAL) -> dict:
        return wait_job(client, job_id, timeout, until)

    @staticmethod
    def analyze(client: TestClient, **body) -> dict:
        return analyze(client, **body)

    @staticmethod
    def sse_events(text: str) -> list[tuple[str, str]]:
        return sse_events(text)


@pytest.fixture
def helpers() -> type[Helpers]:
    return Helpers


def wait_job(client: TestClient, job_id: str, timeout: float = 30.0, until=TERMINAL) -> dict:
    """Poll ``GET /api/jobs/{id}`` until its status is in ``until``."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stuck: {job}")
        time.sleep(0.02)


def analyze(client: TestClient, **body) -> dict:
    """POST an analysis, follow its job if one was queued, return the stored analysis."""
    response = client.post("/api/analyses", json={"prompt": PROMPT, **body})
    assert response.status_code in (200, 202), response.text
    data = response.json()
    if data["status"] == "done":
        return data["analysis"]
    job = wait_job(client, data["job"]["id"])
    assert job["status"] == "done", job
    return client.get(f"/api/analyses/{job['result_id']}").json()


def sse_events(text: str) -> list[tuple[str, str]]:
    """Parse a server-sent-event stream into (event, data) pairs (pings skipped)."""
    events, name, data = [], None, []
    for line in text.splitlines():
        if line.startswith("event:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("data:"):
            data.append(line.split(":", 1)[1].strip())
        elif not line.strip() and (name or data):
            events.append((name or "message", "\n".join(data)))
            name, data = None, []
    if name or data:
        events.append((name or "message", "\n".join(data)))
    return events
