"""Results and permalinks: content keys, slugs, idempotent saves, the concurrent-insert race."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from app.store import repo
from app.store.session import make_engine, make_sessionmaker, session_scope
from app.store.tables import Permalink, Result

SLUG = re.compile(r"^[a-z2-7]{10,16}$")


def _save(s, key, kind="analysis", payload=None, parent_id=None):
    """save_result with test defaults."""
    return repo.save_result(
        s,
        key=key,
        kind=kind,
        model_name="tiny-llama",
        weights_sha256="ab" * 32,
        request={"prompt": "The capital of France is", "method": "attribution"},
        payload=payload if payload is not None else {"kind": kind, "nodes": [{"id": "L0.N1"}]},
        parent_id=parent_id,
    )


def _count(s, model=Result) -> int:
    """Rows in a table."""
    return s.scalar(select(func.count()).select_from(model))


def test_content_key_is_canonical():
    a = repo.content_key(weights="w", prompt="p", params={"k": 5, "method": "ig"})
    b = repo.content_key(params={"method": "ig", "k": 5}, prompt="p", weights="w")
    assert a == b and re.fullmatch(r"[0-9a-f]{64}", a)
    assert a != repo.content_key(weights="w", prompt="p", params={"k": 6, "method": "ig"})
    assert repo.content_key(x=(1, 2)) == repo.content_key(x=[1, 2])
    with pytest.raises(ValueError):
        repo.content_key(x=float("nan"))


def test_save_then_get_by_id_key_slug(factory):
    key = repo.content_key(prompt="hello")
    with session_scope(factory) as s:
        saved = _save(s, key)
        saved_dict = saved.to_dict()
    assert SLUG.match(saved.slug) and len(saved.slug) == 10
    with session_scope(factory) as s:
        assert repo.get_result(s, id=saved.id).to_dict() == saved_dict
        assert repo.get_result_by_key(s, key=key).id == saved.id
        assert repo.get_result_by_slug(s, slug=saved.slug).id == saved.id
        assert repo.get_result_by_key(s, key="missing") is None
        assert repo.get_result_by_slug(s, slug="missing") is None
        assert repo.get_result(s, id="0" * 32) is None
        row = repo.get_result(s, id=saved.id)
    assert row.created_at.tzinfo is not None and row.created_at.utcoffset() == timezone.utc.utcoffset(None)
    d = row.to_dict()
    assert {"id", "slug", "kind", "request", "payload", "created_at", "parent_id"} <= d.keys()
    assert d["payload"] == {"kind": "analysis", "nodes": [{"id": "L0.N1"}]}
    assert d["created_at"].endswith("+00:00")


def test_save_is_idempotent(factory):
    key = repo.content_key(prompt="same")
    with session_scope(factory) as s:
        first = _save(s, key)
    with session_scope(factory) as s:
        again = _save(s, key, payload={"different": True})
        assert again.id == first.id and again.payload == first.payload
        assert _count(s) == 1


def test_save_validates_input(session):
    with pytest.raises(ValueError, match="kind"):
        _save(session, "k1", kind="nonsense")
    with pytest.raises(ValueError, match="plain JSON"):
        _save(session, "k2", payload={"x": float("inf")})
    with pytest.raises(repo.NotFound):
        _save(session, "k3", kind="ablation", parent_id="0" * 32)


def test_ablation_points_at_its_analysis(factory):
    with session_scope(factory) as s:
        parent = _save(s, "analysis-key")
        child = _save(s, "ablation-key", kind="ablation", parent_id=parent.id)
    with session_scope(factory) as s:
        assert repo.get_result(s, id=child.id).parent_id == parent.id


def test_slug_collision_lengthens_the_slug(session, monkeypatch):
    monkeypatch.setattr(repo, "_slug_digest", lambda text: "abcdefghijklmnopqrstuvwxyz234567")
    a = _save(session, "key-a")
    b = _save(session, "key-b")
    assert (a.slug, b.slug) == ("abcdefghij", "abcdefghijk")
    assert _save(session, "key-a").id == a.id


def test_list_results_newest_first(factory, monkeypatch):
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    ticks = iter(range(100))
    monkeypatch.setattr(repo, "utcnow", lambda: start + timedelta(seconds=next(ticks)))
    with session_scope(factory) as s:
        ids = [_save(s, f"a{i}").id for i in range(3)]
        _save(s, "ab0", kind="ablation", parent_id=ids[0])
    with session_scope(factory) as s:
        assert [r.id for r in repo.list_results(s)] == ids[::-1]
        assert [r.id for r in repo.list_results(s, limit=2)] == ids[:0:-1]
        assert [r.kind for r in repo.list_results(s, kind="ablation")] == ["ablation"]
        assert len(repo.list_results(s, kind=None)) == 4


def test_insert_race_is_resolved_by_rereading(factory, monkeypatch):
    """Writer A checks the key (missing), writer B commits the same key, then A inserts."""
    key = repo.content_key(prompt="race")
    with session_scope(factory) as s:
        winner = _save(s, key)
    real_lookup = repo.get_result_by_key
    calls = []

    def stale_first_lookup(s, *, key):
        calls.append(key)
        return None if len(calls) == 1 else real_lookup(s, key=key)

    monkeypatch.setattr(repo, "get_result_by_key", stale_first_lookup)
    with session_scope(factory) as s:
        loser = _save(s, key, payload={"loser": True})
        assert loser.id == winner.id and len(calls) == 2  # IntegrityError path taken, then re-read
        repo.create_job(s, key="still-usable", kind="analysis", request={})  # outer transaction intact
    with session_scope(factory) as s:
        assert _count(s) == 1 and _count(s, repo.Job) == 1


def test_concurrent_saves_of_one_key_store_one_row(factory):
    key = repo.content_key(prompt="threads")
    barrier = threading.Barrier(6)

    def writer(n: int) -> str:
        barrier.wait()
        with session_scope(factory) as s:
            return _save(s, key, payload={"writer": n}).id

    with ThreadPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(writer, range(6)))  # re-raises any writer's exception
    assert len(set(ids)) == 1
    with session_scope(factory) as s:
        assert _count(s) == 1


def test_permalink_is_content_addressed(factory):
    with session_scope(factory) as s:
        r1, r2 = _save(s, "r1"), _save(s, "r2")
        state = {"selection": ["L3.N1207"], "ablations": [], "threshold": 0.1, "method": "ig"}
        p = repo.create_permalink(s, result_id=r1.id, state=state)
        reordered = {"method": "ig", "threshold": 0.1, "ablations": [], "selection": ["L3.N1207"]}
        assert repo.create_permalink(s, result_id=r1.id, state=reordered).slug == p.slug
        assert repo.create_permalink(s, result_id=r1.id, state={**state, "threshold": 0.2}).slug != p.slug
        assert repo.create_permalink(s, result_id=r2.id, state=state).slug != p.slug
        assert SLUG.match(p.slug)
        with pytest.raises(repo.NotFound):
            repo.create_permalink(s, result_id="0" * 32, state=state)
    with session_scope(factory) as s:
        again = repo.create_permalink(s, result_id=r1.id, state=state)
        assert again.slug == p.slug and _count(s, Permalink) == 3
        assert repo.get_permalink(s, slug=p.slug).to_dict()["state"] == state
        assert repo.get_permalink(s, slug="missing") is None


def test_permalink_slug_collision_lengthens_the_slug(session, monkeypatch):
    monkeypatch.setattr(repo, "_slug_digest", lambda text: "abcdefghijklmnopqrstuvwxyz234567")
    r = _save(session, "r")
    p1 = repo.create_permalink(session, result_id=r.id, state={"a": 1})
    p2 = repo.create_permalink(session, result_id=r.id, state={"a": 2})
    assert (p1.slug, p2.slug) == ("abcdefghij", "abcdefghijk")
    assert repo.create_permalink(session, result_id=r.id, state={"a": 1}).slug == p1.slug


def test_permalink_survives_a_new_engine(engine, db_url):
    with session_scope(make_sessionmaker(engine)) as s:
        r = _save(s, "survivor")
        slug = repo.create_permalink(s, result_id=r.id, state={"selection": ["L1.N2"]}).slug
    engine.dispose()
    fresh = make_engine(db_url)  # as after a server restart
    try:
        with session_scope(make_sessionmaker(fresh)) as s:
            p = repo.get_permalink(s, slug=slug)
            assert p.state == {"selection": ["L1.N2"]}
            assert repo.get_result(s, id=p.result_id).slug == r.slug
            assert repo.create_permalink(s, result_id=r.id, state={"selection": ["L1.N2"]}).slug == slug
    finally:
        fresh.dispose()
