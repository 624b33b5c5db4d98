"""Jobs: lifecycle, final states, start-up clean-up, and atomic result + job completion."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from app.store import repo
from app.store.session import make_engine, make_sessionmaker, session_scope
from app.store.tables import Result

REQUEST = {"prompt": "The capital of France is", "method": "attribution", "k": 5}


def _result_fields(key: str) -> dict:
    """Keyword arguments for store_job_result / save_result, minus the job."""
    return {
        "key": key,
        "kind": "analysis",
        "model_name": "tiny-llama",
        "weights_sha256": "cd" * 32,
        "request": REQUEST,
        "payload": {"kind": "analysis", "nodes": []},
    }


def _results(s) -> int:
    """Number of stored results."""
    return s.scalar(select(func.count()).select_from(Result))


def test_job_lifecycle(factory):
    key = repo.content_key(prompt="lifecycle")
    with session_scope(factory) as s:
        job = repo.create_job(s, key=key, kind="analysis", request=REQUEST)
        assert (job.status, job.phase, job.progress, job.error) == ("queued", "queued", 0.0, None)
        created = job.updated_at
    with session_scope(factory) as s:
        assert repo.active_job_for_key(s, key=key).id == job.id
        job = repo.update_job(
            s, id=job.id, status="running", phase="impacts", progress=0.4, message="ig 3/16"
        )
        assert (job.status, job.phase, job.progress, job.message) == ("running", "impacts", 0.4, "ig 3/16")
        assert job.updated_at >= created
        assert repo.update_job(s, id=job.id, progress=7).progress == 1.0  # clamped, other fields kept
        assert repo.update_job(s, id=job.id, progress=-1).phase == "impacts"
    with session_scope(factory) as s:
        result = repo.store_job_result(s, job_id=job.id, **_result_fields(key))
    with session_scope(factory) as s:
        done = repo.get_job(s, id=job.id)
        assert (done.status, done.result_id, done.progress) == ("done", result.id, 1.0)
        assert repo.active_job_for_key(s, key=key) is None
        d = done.to_dict()
        assert d["status"] == "done" and d["request"] == REQUEST and d["created_at"].endswith("+00:00")
        assert repo.get_job(s, id="0" * 32) is None


def test_job_errors(session):
    with pytest.raises(repo.NotFound):
        repo.update_job(session, id="0" * 32, progress=0.5)
    job = repo.create_job(session, key="k", kind="analysis", request={})
    with pytest.raises(ValueError):
        repo.update_job(session, id=job.id, status="exploded")
    with pytest.raises(ValueError):
        repo.fail_job(session, id=job.id, error="x", status="done")


def test_final_states_are_final(session):
    cancelled = repo.create_job(session, key="k", kind="analysis", request={})
    repo.fail_job(session, id=cancelled.id, error="cancelled by the user", status="cancelled")
    assert repo.update_job(session, id=cancelled.id, status="running", progress=0.9).status == "cancelled"
    failed = repo.create_job(session, key="k2", kind="analysis", request={})
    assert repo.fail_job(session, id=failed.id, error="PromptTooLong: 900 > 512").error.startswith("Prompt")
    assert repo.get_job(session, id=failed.id).status == "failed"
    assert repo.active_job_for_key(session, key="k") is None

    # a result that arrives after cancellation is still cached, but the job stays cancelled
    result = repo.store_job_result(session, job_id=cancelled.id, **_result_fields("late"))
    assert repo.get_result(session, id=result.id) is not None
    assert repo.get_job(session, id=cancelled.id).status == "cancelled"


def test_fail_interrupted_jobs(engine, db_url):
    factory = make_sessionmaker(engine)
    with session_scope(factory) as s:
        queued = repo.create_job(s, key="q", kind="analysis", request={})
        running = repo.create_job(s, key="r", kind="ablation", request={})
        repo.update_job(s, id=running.id, status="running", phase="verify", progress=0.7)
        done = repo.create_job(s, key="d", kind="analysis", request={})
        repo.store_job_result(s, job_id=done.id, **_result_fields("d"))
        failed = repo.create_job(s, key="f", kind="analysis", request={})
        repo.fail_job(s, id=failed.id, error="boom")
    engine.dispose()
    restarted = make_engine(db_url)  # a new process starts
    try:
        with session_scope(make_sessionmaker(restarted)) as s:
            assert repo.fail_interrupted_jobs(s) == 2
        with session_scope(make_sessionmaker(restarted)) as s:
            for job_id in (queued.id, running.id):
                job = repo.get_job(s, id=job_id)
                assert (job.status, job.error) == ("failed", repo.INTERRUPTED)
            assert repo.get_job(s, id=done.id).status == "done"
            assert repo.get_job(s, id=failed.id).error == "boom"
            assert repo.active_job_for_key(s, key="q") is None
            assert repo.fail_interrupted_jobs(s) == 0
    finally:
        restarted.dispose()


def test_store_job_result_is_atomic(factory, monkeypatch):
    with session_scope(factory) as s:
        job = repo.create_job(s, key="atomic", kind="analysis", request=REQUEST)
        repo.update_job(s, id=job.id, status="running")

    def broken_finish(s, *, id, result_id):
        raise RuntimeError("disk full")

    monkeypatch.setattr(repo, "finish_job", broken_finish)
    with session_scope(factory) as s:
        with pytest.raises(RuntimeError, match="disk full"):
            repo.store_job_result(s, job_id=job.id, **_result_fields("atomic"))
        # the caller kept its session: the savepoint alone was undone
        assert repo.get_result_by_key(s, key="atomic") is None
        assert repo.get_job(s, id=job.id).status == "running"
    with pytest.raises(RuntimeError), session_scope(factory) as s:
        repo.store_job_result(s, job_id=job.id, **_result_fields("atomic"))
    with session_scope(factory) as s:
        assert _results(s) == 0
        assert repo.get_job(s, id=job.id).status == "running"


def test_store_job_result_for_missing_job_writes_nothing(factory):
    with pytest.raises(repo.NotFound), session_scope(factory) as s:
        repo.store_job_result(s, job_id="0" * 32, **_result_fields("orphan"))
    with session_scope(factory) as s:
        assert _results(s) == 0


def test_store_job_result_reuses_a_cached_result(factory):
    with session_scope(factory) as s:
        cached = repo.save_result(s, **_result_fields("cached"))
        job = repo.create_job(s, key="cached", kind="analysis", request=REQUEST)
    with session_scope(factory) as s:
        result = repo.store_job_result(s, job_id=job.id, **_result_fields("cached"))
        assert result.id == cached.id
        assert repo.get_job(s, id=job.id).result_id == cached.id
        assert _results(s) == 1
