"""Tables of the cache (SQLAlchemy 2.0 declarative style).

- ``results``    — one computed analysis / ablation / circuit, addressed by its content ``key``
  (sha256 of everything that determines it) and by a short url-safe ``slug`` derived from the key.
- ``jobs``       — one background computation: status, phase, progress, and the result it produced.
- ``permalinks`` — a result plus a view state (selection, ablations, threshold, method); the slug is
  content-addressed, so the same (result, state) always gets the same slug.

Timestamps are timezone-aware UTC on every backend (SQLite stores naive text; ``UTCDateTime`` puts the
zone back). Constraint names follow ``NAMING_CONVENTION`` so Alembic batch migrations on SQLite can
address them. The schema itself is created by ``alembic/versions``; a test checks the two agree.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import JSON, CheckConstraint, DateTime, Float, ForeignKey, Index, MetaData, String, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

RESULT_KINDS = ("analysis", "ablation", "circuit")
JOB_STATUSES = ("queued", "running", "done", "failed", "cancelled")
ACTIVE_STATUSES = ("queued", "running")
TERMINAL_STATUSES = ("done", "failed", "cancelled")


def utcnow() -> datetime:
    """Current time as an aware UTC datetime (the only kind this store writes)."""
    return datetime.now(timezone.utc)


def new_id() -> str:
    """A fresh primary key: uuid4 as 32 hex characters."""
    return uuid.uuid4().hex


def _in(column: str, values: tuple[str, ...]) -> str:
    """SQL text for a CHECK that ``column`` takes one of ``values``."""
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _iso(value: datetime | None) -> str | None:
    """ISO-8601 text of a timestamp (None stays None)."""
    return value.isoformat() if value is not None else None


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that always binds UTC and always returns aware UTC datetimes.

    Why: SQLite has no time zones and hands back naive values; PostgreSQL hands back the session's
    zone. Normalising here keeps ``created_at`` comparable and its ``isoformat()`` stable everywhere.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive datetimes (ambiguous); store everything else as UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column; use app.store.tables.utcnow()")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Attach UTC to naive values (SQLite) and convert aware ones (PostgreSQL) to UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    """Declarative base carrying the shared metadata (with the constraint naming convention)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Result(Base):
    """A computed result (analysis, ablation or circuit), stored once per content key."""

    __tablename__ = "results"
    __table_args__ = (
        CheckConstraint(_in("kind", RESULT_KINDS), name="kind"),
        Index("ix_results_kind_created_at", "kind", "created_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    kind: Mapped[str] = mapped_column(String(16))
    slug: Mapped[str] = mapped_column(String(16), unique=True)
    parent_id: Mapped[str | None] = mapped_column(
        ForeignKey("results.id", ondelete="SET NULL"), index=True, default=None
    )
    model_name: Mapped[str] = mapped_column(String(255))
    weights_sha256: Mapped[str] = mapped_column(String(64))
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able view of the row (what the web layer returns)."""
        return {
            "id": self.id,
            "key": self.key,
            "slug": self.slug,
            "kind": self.kind,
            "parent_id": self.parent_id,
            "model_name": self.model_name,
            "weights_sha256": self.weights_sha256,
            "request": self.request,
            "payload": self.payload,
            "created_at": _iso(self.created_at),
        }


class Job(Base):
    """A background computation and its progress; ``result_id`` is set when it is done."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        CheckConstraint("progress >= 0 AND progress <= 1", name="progress"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    key: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued")
    phase: Mapped[str] = mapped_column(String(64), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    result_id: Mapped[str | None] = mapped_column(ForeignKey("results.id", ondelete="SET NULL"), default=None)
    request: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able view of the row (what the job/progress endpoints return)."""
        return {
            "id": self.id,
            "key": self.key,
            "kind": self.kind,
            "status": self.status,
            "phase": self.phase,
            "progress": self.progress,
            "message": self.message,
            "error": self.error,
            "result_id": self.result_id,
            "request": self.request,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
        }


class Permalink(Base):
    """A shareable view: a result plus its view state, under a content-addressed slug."""

    __tablename__ = "permalinks"

    slug: Mapped[str] = mapped_column(String(16), primary_key=True)
    result_id: Mapped[str] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"), index=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able view of the row."""
        return {
            "slug": self.slug,
            "result_id": self.result_id,
            "state": self.state,
            "created_at": _iso(self.created_at),
        }
