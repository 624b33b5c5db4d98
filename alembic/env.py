"""Alembic environment for the CircuitScope cache.

The URL comes from the config's ``sqlalchemy.url`` (set by ``app.store.session.upgrade``) or, for the
``alembic`` command line, from the ``CIRCUITSCOPE_DATABASE_URL`` environment variable. Connections are
made by ``app.store.session.make_engine`` so migrations see the same SQLite setup as the app
(WAL, busy timeout, transactional DDL via our own BEGIN). On SQLite, ``render_as_batch`` turns ALTERs
into table rebuilds; foreign keys are switched off for that connection while rebuilding and checked
before the transaction commits.
"""

from __future__ import annotations

import os
import sys
from logging.config import fileConfig
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, event

from alembic import context

try:
    import app.store.tables  # noqa: F401  (the package may not be installed when run from a checkout)
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.store.session import is_sqlite, make_engine
from app.store.tables import Base

config = context.config
if config.config_file_name is not None and Path(config.config_file_name).is_file():
    fileConfig(config.config_file_name)  # logging setup, only when an alembic.ini is actually present

target_metadata = Base.metadata
URL_ENV = "CIRCUITSCOPE_DATABASE_URL"


def database_url() -> str:
    """The URL to migrate: the config option first, then the environment variable."""
    has_section = config.file_config.has_section(config.config_ini_section)  # absent for the CLI
    url = (config.get_main_option("sqlalchemy.url") if has_section else None) or os.environ.get(URL_ENV)
    if not url:
        raise RuntimeError(f"no database URL: set sqlalchemy.url in the Alembic config or {URL_ENV}")
    return url


def run_migrations_offline() -> None:
    """Emit the migration SQL as a script (``alembic upgrade head --sql``) without connecting."""
    url = database_url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=is_sqlite(url),
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
    """SQLite batch rebuilds drop and recreate referenced tables: keep FK actions out of the way."""
    dbapi_connection.execute("PRAGMA foreign_keys = OFF")


def _check_foreign_keys(connection: Connection) -> None:
    """Fail (and so roll back) the SQLite migration if it left dangling foreign keys."""
    problems = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if problems:
        raise RuntimeError(f"migration left foreign key violations: {problems[:5]}")


def run_migrations_online() -> None:
    """Connect and migrate inside one transaction (transactional DDL on SQLite and PostgreSQL)."""
    url = database_url()
    sqlite = is_sqlite(url)
    engine = make_engine(url)
    if sqlite:
        event.listen(engine, "connect", _foreign_keys_off)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=sqlite)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    _check_foreign_keys(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
