"""Schema-driven fuzzing (schemathesis) over the whole OpenAPI schema, in-process over ASGI: no request
a client can send may produce a 5xx.

Two passes per generation mode (valid and invalid data): one with generated path parameters (mostly
unknown ids), one with real ids of a stored analysis, so the engine paths (ablations with random
neurons, modes, factors and positions; neuron look-ups; view states) are fuzzed too. Bounded by
``max_examples`` per operation; the run takes well under a minute on the tiny model.
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.python import asgi

from app.main import create_app

MODEL = "tiny-llama-s0"
EXAMPLES = 15


@pytest.fixture
def schema(make_settings, tiny_engine, helpers):
    """The app's schema, loaded over ASGI (which starts its lifespan); a real analysis is stored first."""
    app = create_app(make_settings(queue_limit=10_000, job_timeout_s=5), engine=tiny_engine)
    loaded = schemathesis.openapi.from_asgi("/openapi.json", app)
    client = asgi.get_client(app)
    job = client.post("/api/analyses", json={"prompt": helpers.PROMPT}).json()["job"]
    for _ in range(600):
        state = client.get(f"/api/jobs/{job['id']}").json()
        if state["status"] == "done":
            break
        time.sleep(0.05)
    analysis = client.get(f"/api/analyses/{state['result_id']}").json()
    loaded.known = {"analysis_id": analysis["id"], "slug": analysis["slug"], "model": MODEL,
                    "job_id": job["id"], "neuron_id": analysis["result"]["nodes"][0]["id"]}
    yield loaded
    asgi.shutdown_lifespans()


def _fuzz(operation, mode: GenerationMode, path_parameters: dict | None) -> bool:
    """Run bounded examples against one operation; False when the mode cannot generate any."""
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
    def run(case):
        response = case.call(timeout=60)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path} {case.query} {case.body!r:.300} -> "
            f"{response.status_code} {response.text[:300]}"
        )
        content_type = " ".join(response.headers.get("content-type", []))
        if response.status_code >= 400 and content_type.startswith("application/json"):
            error = response.json()["error"]
            assert error["code"] and error["message"]

    try:
        run()
    except Unsatisfiable:  # e.g. invalid data for an operation that takes no input at all
        return False
    return True


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_request_yields_a_server_error(schema, mode):
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 16
    fuzzed = 0
    for operation in operations:
        names = {p.name for p in operation.path_parameters}
        fuzzed += _fuzz(operation, mode, None)
        known = {k: v for k, v in schema.known.items() if k in names}
        if "job_id" in known and operation.method.upper() == "DELETE":
            continue  # cancelling the finished seed job is covered elsewhere
        if known and mode == GenerationMode.POSITIVE:
            _fuzz(operation, mode, known)
    assert fuzzed >= (16 if mode == GenerationMode.POSITIVE else 10)
