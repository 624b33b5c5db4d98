"""Repository functions for the cache: keyword-only, each taking a ``Session`` first.

Functions flush but never commit: the caller owns the transaction (``session.session_scope``), so
several calls form one unit of work. Writes that can race are made idempotent with the database's
unique constraints: try the INSERT inside a SAVEPOINT, and on ``IntegrityError`` roll back only the
savepoint and re-read the row the other writer committed.

Slugs are short (10 to 16 characters), lowercase base32 (url-safe) and derived from content:
a result's from its key, a permalink's from (result id, canonical JSON of the view state). On the rare
prefix collision with different content the slug is lengthened one character at a time.

JSON columns hold plain JSON only: values are round-tripped through strict ``json`` (no NaN/Infinity,
which PostgreSQL rejects and browsers cannot parse), so what a save returns equals what a later read
returns.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.store.tables import (
    ACTIVE_STATUSES,
    JOB_STATUSES,
    RESULT_KINDS,
    TERMINAL_STATUSES,
    Job,
    Permalink,
    Result,
    new_id,
    utcnow,
)

SLUG_MIN = 10
SLUG_MAX = 16
INTERRUPTED = "interrupted: the server stopped before this job finished; submit it again"

__all__ = [
    "INTERRUPTED",
    "NotFound",
    "active_job_for_key",
    "canonical_json",
    "content_key",
    "create_job",
    "create_permalink",
    "fail_interrupted_jobs",
    "fail_job",
    "finish_job",
    "get_job",
    "get_permalink",
    "get_result",
    "get_result_by_key",
    "get_result_by_slug",
    "list_results",
    "save_result",
    "store_job_result",
    "update_job",
]


class NotFound(LookupError):
    """A row the caller named (job, result) does not exist."""


# ---------------------------------------------------------------- keys and slugs


def canonical_json(value: Any) -> str:
    """One canonical text for a JSON value: sorted keys, no spaces, UTF-8, NaN/Infinity refused."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def content_key(**parts: Any) -> str:
    """sha256 hex of the canonical JSON of ``parts``: the cache key of a computation.

    The web layer passes everything that determines a result (weights hash, prompt, target, method,
    params, engine version), so equal inputs give equal keys whatever the argument order.
    """
    return hashlib.sha256(canonical_json(parts).encode("utf-8")).hexdigest()


def _plain(value: Any, what: str) -> Any:
    """``value`` as plain JSON (tuples become lists); ValueError when it is not JSON-able."""
    try:
        return json.loads(canonical_json(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} must be plain JSON (no NaN/Infinity, no custom objects): {exc}") from exc


def _slug_digest(text: str) -> str:
    """Lowercase unpadded base32 of sha256(text): 52 url-safe characters to cut slugs from."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return base64.b32encode(digest).decode("ascii").rstrip("=").lower()


def _result_slug(s: Session, *, key: str) -> str:
    """The shortest prefix of the key's digest that no result with another key already uses."""
    digest = _slug_digest(key)
    for length in range(SLUG_MIN, SLUG_MAX + 1):
        owner = s.scalar(select(Result.key).where(Result.slug == digest[:length]))
        if owner is None or owner == key:
            return digest[:length]
    raise RuntimeError(f"no free result slug for key {key}")


def _permalink_slot(s: Session, *, result_id: str, state_json: str) -> tuple[str, Permalink | None]:
    """The permalink slug for (result, state), and the existing row when it is already stored."""
    digest = _slug_digest(f"{result_id}\n{state_json}")
    for length in range(SLUG_MIN, SLUG_MAX + 1):
        row = s.get(Permalink, digest[:length])
        if row is None:
            return digest[:length], None
        if row.result_id == result_id and canonical_json(row.state) == state_json:
            return digest[:length], row
    raise RuntimeError(f"no free permalink slug for result {result_id}")


# ---------------------------------------------------------------- results


def get_result(s: Session, *, id: str) -> Result | None:
    """The result with this id, or None."""
    return s.get(Result, id)


def get_result_by_key(s: Session, *, key: str) -> Result | None:
    """The result stored under this content key, or None (the cache lookup)."""
    return s.scalar(select(Result).where(Result.key == key))


def get_result_by_slug(s: Session, *, slug: str) -> Result | None:
    """The result with this short slug (from a URL), or None."""
    return s.scalar(select(Result).where(Result.slug == slug))


def list_results(s: Session, *, kind: str | None = "analysis", limit: int = 20) -> list[Result]:
    """The newest ``limit`` results of ``kind`` (None: every kind), newest first."""
    query = select(Result).order_by(Result.created_at.desc(), Result.id.desc()).limit(limit)
    if kind is not None:
        query = query.where(Result.kind == kind)
    return list(s.scalars(query))


def save_result(
    s: Session,
    *,
    key: str,
    kind: str,
    model_name: str,
    weights_sha256: str,
    request: dict[str, Any],
    payload: dict[str, Any],
    parent_id: str | None = None,
) -> Result:
    """Store a result under ``key`` once; if the key is already stored return that row instead.

    Safe against a concurrent writer saving the same key: the INSERT runs in a SAVEPOINT, and when the
    unique index rejects it only the savepoint is rolled back and the winner's row is read back.
    """
    existing = get_result_by_key(s, key=key)
    if existing is not None:
        return existing
    if kind not in RESULT_KINDS:
        raise ValueError(f"kind must be one of {RESULT_KINDS}, not {kind!r}")
    if parent_id is not None and s.get(Result, parent_id) is None:
        raise NotFound(f"parent result {parent_id} does not exist")
    row = Result(
        id=new_id(),
        key=key,
        kind=kind,
        slug=_result_slug(s, key=key),
        parent_id=parent_id,
        model_name=model_name,
        weights_sha256=weights_sha256,
        request=_plain(request, "request"),
        payload=_plain(payload, "payload"),
        created_at=utcnow(),
    )
    try:
        with s.begin_nested():
            s.add(row)
    except IntegrityError:
        winner = get_result_by_key(s, key=key)
        if winner is None:
            raise
        return winner
    return row


def store_job_result(
    s: Session,
    *,
    job_id: str,
    key: str,
    kind: str,
    model_name: str,
    weights_sha256: str,
    request: dict[str, Any],
    payload: dict[str, Any],
    parent_id: str | None = None,
) -> Result:
    """Save a job's result and mark the job done, atomically.

    Both writes share one SAVEPOINT: if either fails, neither is kept, so no result exists without
    its job being done and no job is done without its result (even if the caller keeps the session).
    """
    with s.begin_nested():
        result = save_result(
            s,
            key=key,
            kind=kind,
            model_name=model_name,
            weights_sha256=weights_sha256,
            request=request,
            payload=payload,
            parent_id=parent_id,
        )
        finish_job(s, id=job_id, result_id=result.id)
    return result


# ---------------------------------------------------------------- jobs


def _locked_job(s: Session, *, id: str) -> Job:
    """The job row, re-read and locked for update (PostgreSQL), so concurrent status changes serialise."""
    job = s.get(Job, id, with_for_update=True, populate_existing=True)
    if job is None:
        raise NotFound(f"job {id} does not exist")
    return job


def create_job(s: Session, *, key: str, kind: str, request: dict[str, Any]) -> Job:
    """Record a new queued job for the computation with content key ``key``."""
    now = utcnow()
    job = Job(
        id=new_id(),
        key=key,
        kind=kind,
        status="queued",
        phase="queued",
        progress=0.0,
        message="",
        request=_plain(request, "request"),
        created_at=now,
        updated_at=now,
    )
    s.add(job)
    s.flush()
    return job


def get_job(s: Session, *, id: str) -> Job | None:
    """The job with this id, or None."""
    return s.get(Job, id)


def active_job_for_key(s: Session, *, key: str) -> Job | None:
    """The newest queued or running job for ``key``, or None: lets identical requests share one job."""
    query = (
        select(Job)
        .where(Job.key == key, Job.status.in_(ACTIVE_STATUSES))
        .order_by(Job.created_at.desc())
        .limit(1)
    )
    return s.scalar(query)


def update_job(
    s: Session,
    *,
    id: str,
    status: str | None = None,
    phase: str | None = None,
    progress: float | None = None,
    message: str | None = None,
) -> Job:
    """Record progress of a job; only the given fields change, ``progress`` is clamped to [0, 1].

    A job that is already done, failed or cancelled is returned unchanged: a late progress report
    from a worker must not revive a cancelled job.
    """
    if status is not None and status not in JOB_STATUSES:
        raise ValueError(f"status must be one of {JOB_STATUSES}, not {status!r}")
    job = _locked_job(s, id=id)
    if job.status in TERMINAL_STATUSES:
        return job
    if status is not None:
        job.status = status
    if phase is not None:
        job.phase = phase
    if progress is not None:
        job.progress = min(max(float(progress), 0.0), 1.0)
    if message is not None:
        job.message = message
    job.updated_at = utcnow()
    s.flush()
    return job


def finish_job(s: Session, *, id: str, result_id: str) -> Job:
    """Mark a job done with its result (prefer ``store_job_result``, which also saves the result).

    A job already in a final state (e.g. cancelled meanwhile) is left as it is.
    """
    job = _locked_job(s, id=id)
    if job.status in TERMINAL_STATUSES:
        return job
    job.status, job.phase, job.progress = "done", "done", 1.0
    job.result_id, job.error = result_id, None
    job.updated_at = utcnow()
    s.flush()
    return job


def fail_job(s: Session, *, id: str, error: str, status: str = "failed") -> Job:
    """Mark a job failed (or ``status="cancelled"``) with a message saying why.

    A job already in a final state is left as it is (a finished job stays done).
    """
    if status not in ("failed", "cancelled"):
        raise ValueError(f"status must be 'failed' or 'cancelled', not {status!r}")
    job = _locked_job(s, id=id)
    if job.status in TERMINAL_STATUSES:
        return job
    job.status, job.error = status, error
    job.updated_at = utcnow()
    s.flush()
    return job


def fail_interrupted_jobs(s: Session) -> int:
    """At start-up, fail every queued/running job (its worker died with the old process); return how many."""
    statement = (
        update(Job)
        .where(Job.status.in_(ACTIVE_STATUSES))
        .values(status="failed", error=INTERRUPTED, updated_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return s.execute(statement).rowcount or 0


# ---------------------------------------------------------------- permalinks


def create_permalink(s: Session, *, result_id: str, state: dict[str, Any]) -> Permalink:
    """The permalink for (result, view state), created on first use; the same pair gives the same slug."""
    if s.get(Result, result_id) is None:
        raise NotFound(f"result {result_id} does not exist")
    state_json = canonical_json(_plain(state, "state"))
    for _attempt in range(3):
        slug, existing = _permalink_slot(s, result_id=result_id, state_json=state_json)
        if existing is not None:
            return existing
        row = Permalink(slug=slug, result_id=result_id, state=json.loads(state_json), created_at=utcnow())
        try:
            with s.begin_nested():
                s.add(row)
        except IntegrityError:
            continue  # a concurrent writer took this slug; look again (usually finds its identical row)
        return row
    raise RuntimeError(f"could not store a permalink for result {result_id}")


def get_permalink(s: Session, *, slug: str) -> Permalink | None:
    """The permalink with this slug, or None."""
    return s.get(Permalink, slug)
