"""Fixtures for the store tests: every database test runs on SQLite and, when one answers, PostgreSQL.

SQLite gets a fresh file under ``tmp_path`` (in a not-yet-existing folder, so ``make_engine`` must
create it). PostgreSQL (``postgresql+psycopg://root@127.0.0.1:5432/test``, trust auth) gets a fresh
schema per test, selected with ``search_path`` in the URL and dropped afterwards, so reruns are clean
and tests never see each other's rows. When no server answers, the PostgreSQL params are skipped
with the reason.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.store.session import make_engine, make_sessionmaker, upgrade

PG_URL = "postgresql+psycopg://root@127.0.0.1:5432/test"
PG_DSN = "host=127.0.0.1 port=5432 dbname=test user=root connect_timeout=3"


@functools.lru_cache(maxsize=1)
def postgres_unavailable() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when the server answers."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        with psycopg.connect(PG_DSN):
            return None
    except (psycopg.Error, OSError) as exc:  # no server, refused, auth: skip, with the reason
        return f"no PostgreSQL answers on 127.0.0.1:5432 (database test, user root): {exc}".strip()


def _pg_admin(sql: str) -> None:
    """Run one statement on the test database in autocommit mode (schema create/drop)."""
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql)


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgres),
    ]
)
def db_url(request: pytest.FixtureRequest, tmp_path) -> Iterator[str]:
    """URL of an empty database: an SQLite file in a new folder, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'nested' / 'circuitscope.db'}"
        return
    reason = postgres_unavailable()
    if reason:
        pytest.skip(reason)
    schema = f"cs_test_{uuid.uuid4().hex[:12]}"
    _pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        _pg_admin(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def is_sqlite(db_url: str) -> bool:
    """True for the SQLite param."""
    return db_url.startswith("sqlite")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    """An engine on a database migrated to head."""
    upgrade(db_url)
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def factory(engine: Engine) -> sessionmaker[Session]:
    """Session factory on the migrated database."""
    return make_sessionmaker(engine)


@pytest.fixture
def session(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One session; the test commits what it wants kept, the rest is rolled back on close."""
    s = factory()
    try:
        yield s
    finally:
        s.close()
