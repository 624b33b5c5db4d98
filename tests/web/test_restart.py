"""Durability: permalinks survive restarts; a job left running by a dead process is failed at the next
start while every finished analysis stays intact."""

from __future__ import annotations

from fastapi.testclient import TestClient

from app.main import create_app
from app.store import repo
from app.store.session import make_engine, make_sessionmaker, session_scope


def test_permalink_survives_restart(make_settings, tiny_engine, calls, helpers):
    settings = make_settings()
    with TestClient(create_app(settings, engine=tiny_engine)) as client:
        analysis = helpers.analyze(client)
        ids = [n["id"] for n in analysis["result"]["nodes"][:3]]
        state = {"sel": ids, "abl": {"neurons": ids[:2], "mode": "scale", "factor": 0.25}, "thr": 0.1,
                 "method": "attribution"}
        link = client.post("/api/permalinks", json={"analysis_id": analysis["id"], "state": state}).json()
        json_url = link["url"].replace(f"/a/{analysis['slug']}", f"/a/{analysis['slug']}.json")
        before = client.get(json_url).json()
    computed = dict(calls)

    with TestClient(create_app(settings, engine=tiny_engine)) as client:  # a new app on the same file
        after = client.get(json_url).json()
        assert client.get(link["url"]).status_code == 200
    assert after == before
    assert after["state"]["abl"]["factor"] == 0.25 and after["ablation"] is not None
    assert dict(calls) == computed  # served from the database, nothing recomputed


def test_job_left_running_is_failed_at_next_start(make_settings, tiny_engine, helpers):
    settings = make_settings()
    with TestClient(create_app(settings, engine=tiny_engine)) as client:
        finished = helpers.analyze(client)

    # what a killed server leaves behind: one job running, one queued, no result for either
    db = make_engine(settings.database_url)
    with session_scope(make_sessionmaker(db)) as s:
        running = repo.create_job(s, key="k1", kind="analysis", request={"prompt": "x"}).id
        repo.update_job(s, id=running, status="running", phase="forward", progress=0.4)
        queued = repo.create_job(s, key="k2", kind="analysis", request={"prompt": "y"}).id
    db.dispose()

    with TestClient(create_app(settings, engine=tiny_engine)) as client:
        for job_id in (running, queued):
            job = client.get(f"/api/jobs/{job_id}").json()
            assert job["status"] == "failed" and "interrupted" in job["error"] and job["result_id"] is None
        assert client.get(f"/api/analyses/{finished['id']}").json() == finished
        assert [a["id"] for a in client.get("/api/analyses").json()] == [finished["id"]]
