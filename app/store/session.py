"""Database engine, sessions and migrations for the cache.

SQLite (the default) is tuned for one server process with worker threads:
- WAL journal: readers never block the writer and vice versa.
- ``foreign_keys=ON`` (SQLite leaves it off per connection) and a ``busy_timeout`` so a writer waits
  for the lock instead of failing at once.
- ``check_same_thread=False``: the connection pool hands connections to worker threads.
- SQLAlchemy emits ``BEGIN IMMEDIATE`` itself (pysqlite's own BEGIN handling breaks SAVEPOINTs and
  never begins before a SELECT). IMMEDIATE takes the write lock at the start of a transaction, so a
  read-then-write transaction (``save_result`` looks the key up before inserting) waits on
  ``busy_timeout`` instead of failing with SQLITE_BUSY when another writer committed in between.
  Every transaction here is a few short statements; compute never runs inside one.

PostgreSQL URLs (``postgresql+psycopg://...``) are passed through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 30_000
ALEMBIC_DIR = Path(__file__).resolve().parents[2] / "alembic"


def is_sqlite(url: str | URL) -> bool:
    """True when the URL names an SQLite database."""
    return make_url(url).get_backend_name() == "sqlite"


def make_engine(url: str) -> Engine:
    """Create the SQLAlchemy engine for ``url``; SQLite gets WAL, foreign keys, busy timeout, own BEGIN.

    For an SQLite file the parent directory is created, so a fresh checkout just works.
    """
    sa_url = make_url(url)
    if sa_url.get_backend_name() != "sqlite":
        return create_engine(sa_url, pool_pre_ping=True)
    _ensure_sqlite_parent(sa_url)
    engine = create_engine(sa_url, connect_args={"check_same_thread": False}, pool_size=10, max_overflow=40,
                           pool_timeout=10)
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _ensure_sqlite_parent(url: URL) -> None:
    """Create the directory holding an SQLite file (in-memory and ``file:`` URIs are left alone)."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    Path(database).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    """Per-connection SQLite setup: take over BEGIN, then busy timeout, WAL, foreign keys."""
    dbapi_connection.isolation_level = None  # pysqlite must not emit BEGIN; _sqlite_on_begin does
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    """Start SQLite transactions with BEGIN IMMEDIATE (see the module docstring for why), except in
    read-only sessions: a deferred BEGIN lets WAL readers run beside the writer instead of queueing."""
    readonly = connection.get_execution_options().get(READONLY_OPTION, False)
    connection.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


READONLY_OPTION = "circuitscope_readonly"


def make_sessionmaker(engine: Engine, *, readonly: bool = False) -> sessionmaker[Session]:
    """Session factory bound to ``engine``; rows stay readable after commit (``expire_on_commit=False``).

    ``readonly`` sessions are for requests that only read: on SQLite they never take the write lock."""
    bind = engine.execution_options(**{READONLY_OPTION: True}) if readonly else engine
    return sessionmaker(bind=bind, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: yield a session, commit if the block succeeds, roll back if it raises."""
    session = factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def alembic_config(url: str) -> Any:
    """An Alembic ``Config`` for ``url`` with the repo's ``alembic/`` scripts (no alembic.ini needed).

    The script location is resolved from this package, so it works from any working directory.
    """
    from alembic.config import Config

    if not (ALEMBIC_DIR / "env.py").is_file():
        raise RuntimeError(f"Alembic scripts not found at {ALEMBIC_DIR}; run from a source checkout")
    config = Config()
    config.set_main_option("script_location", str(ALEMBIC_DIR))
    # set_main_option goes through configparser interpolation: a literal '%' must be doubled.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database at ``url`` to ``revision`` (default: the newest), creating it if needed."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)
