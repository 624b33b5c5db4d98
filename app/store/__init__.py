"""The cache: SQLAlchemy 2.0 tables, engine/session helpers and keyword-only repository functions.

Rooms: this package never imports torch, fastapi, ``app.engine`` or ``app.web``; it stores plain JSON.

- ``tables``  — ``results``, ``jobs``, ``permalinks`` (declarative models with ``to_dict()``).
- ``session`` — ``make_engine`` (SQLite WAL / PostgreSQL), ``make_sessionmaker``, ``session_scope``,
  ``upgrade`` (Alembic ``upgrade head`` run programmatically).
- ``repo``    — ``save_result``, ``store_job_result``, jobs, permalinks, ``content_key``.
"""
