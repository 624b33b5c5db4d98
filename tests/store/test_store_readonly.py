"""Read-only sessions: on SQLite they read beside an open write transaction instead of queueing."""

import time

from app.store import repo
from app.store.session import make_sessionmaker, session_scope


def _save(s, key: str):
    return repo.save_result(s, key=key, kind="analysis", model_name="m", weights_sha256="w" * 64,
                            request={"prompt": "p"}, payload={"x": 1})


def test_readers_do_not_wait_for_an_open_writer(engine):
    writer_factory = make_sessionmaker(engine)
    reader_factory = make_sessionmaker(engine, readonly=True)
    with session_scope(writer_factory) as s:
        saved = _save(s, "k1").id
    writer = writer_factory()
    try:
        _save(writer, "k2")  # holds the write lock (BEGIN IMMEDIATE on SQLite) until commit
        started = time.monotonic()
        with session_scope(reader_factory) as r:
            assert repo.get_result(r, id=saved).payload == {"x": 1}
            assert repo.get_result_by_key(r, key="k2") is None  # uncommitted work is invisible
        assert time.monotonic() - started < 2.0
    finally:
        writer.rollback()
        writer.close()


def test_readonly_sessions_see_committed_rows(engine):
    with session_scope(make_sessionmaker(engine)) as s:
        saved = _save(s, "k3").id
    with session_scope(make_sessionmaker(engine, readonly=True)) as r:
        assert repo.get_result_by_key(r, key="k3").id == saved
