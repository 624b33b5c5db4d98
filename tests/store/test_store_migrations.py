"""Migrations and engine setup: ``upgrade head`` builds exactly the schema the tables declare."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlalchemy.exc import IntegrityError

from alembic import command
from app.store import repo
from app.store.session import alembic_config, make_engine, make_sessionmaker, session_scope, upgrade
from app.store.tables import Base, Permalink

REPO = Path(__file__).resolve().parents[2]
TABLES = {"results", "jobs", "permalinks"}


def _diffs_and_revision(url: str) -> tuple[list, str | None]:
    """Autogenerate's differences between the database and ``Base.metadata``, and the stamped revision."""
    eng = make_engine(url)
    try:
        with eng.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return compare_metadata(ctx, Base.metadata), ctx.get_current_revision()
    finally:
        eng.dispose()


def test_upgrade_head_on_empty_database_matches_metadata(db_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the script location must not depend on the working directory
    upgrade(db_url)
    diffs, revision = _diffs_and_revision(db_url)
    assert diffs == []
    head = ScriptDirectory.from_config(alembic_config(db_url)).get_current_head()
    assert revision == head


def test_upgrade_is_repeatable_and_downgrade_removes_everything(db_url):
    upgrade(db_url)
    upgrade(db_url)
    command.downgrade(alembic_config(db_url), "base")
    eng = make_engine(db_url)
    try:
        assert TABLES.isdisjoint(inspect(eng).get_table_names())
    finally:
        eng.dispose()
    upgrade(db_url)
    assert _diffs_and_revision(db_url)[0] == []


def test_sqlite_wal_foreign_keys_busy_timeout(tmp_path):
    path = tmp_path / "does" / "not" / "exist" / "cs.db"
    eng = make_engine(f"sqlite:///{path}")
    try:
        with eng.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert path.is_file()
    finally:
        eng.dispose()


def test_foreign_keys_are_enforced(factory):
    with pytest.raises(IntegrityError), session_scope(factory) as s:
        s.add(Permalink(slug="nosuchresult", result_id="0" * 32, state={}))


def test_alembic_command_line_uses_env_var(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli' / 'cs.db'}"
    env = {**os.environ, "CIRCUITSCOPE_DATABASE_URL": url}
    argv = [sys.executable, "-m", "alembic", "upgrade", "head"]
    run = subprocess.run(argv, check=False, cwd=REPO, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert _diffs_and_revision(url)[0] == []


def test_sessions_work_from_worker_threads(factory):
    """check_same_thread=False: a pooled connection may be used by another thread."""

    def work(_: int) -> int:
        with session_scope(factory) as s:
            return len(s.execute(Base.metadata.tables["results"].select()).all())

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(work, range(8))) == [0] * 8  # map re-raises any worker's exception


def test_make_sessionmaker_keeps_rows_readable_after_commit(engine):
    factory = make_sessionmaker(engine)
    with session_scope(factory) as s:
        job = repo.create_job(s, key="k" * 64, kind="analysis", request={"a": 1})
    assert job.to_dict()["status"] == "queued"  # no DetachedInstanceError after the session closed
