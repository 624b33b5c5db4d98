"""Background jobs: a bounded FIFO queue, one worker thread, progress pushed to listeners.

Why one worker thread: every engine call takes the engine's lock (hooks are global state on the
model), so a second worker would only wait. Running the engine in a thread keeps the event loop free,
so cached reads are answered while a long analysis runs.

Lifecycle of a job (rows in the ``jobs`` table; the in-memory queue only orders them):
``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled``. The result and the job's ``done``
status are written in one transaction (``store_job_result``), so a failed or cancelled job leaves no
result row. The engine polls ``should_cancel`` between phases; it returns True after ``DELETE`` or
once the job has run longer than ``job_timeout_s``. Each progress report is written to the job row
and pushed to every server-sent-event listener of that job (``subscribe``).

Synchronous engine calls made by requests (ablations, neuron pages) pass through ``EngineGate``: a
few worker threads at most, a bounded number of waiters, and a bounded wait for the engine's lock, so
a burst of them (or a long analysis holding the model) answers 503 + Retry-After instead of hanging
or exhausting the thread pool that cached reads need.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio
from sqlalchemy.orm import Session, defer, sessionmaker

from app.engine.errors import Cancelled, EngineError
from app.store import repo
from app.store.session import session_scope
from app.store.tables import Result
from app.web import urls
from app.web.errors import NotFound, QueueFull, WebError

log = logging.getLogger("circuitscope.jobs")

TERMINAL = ("done", "failed", "cancelled")
# A job snapshot needs the result's slug and kind, never its payload (a circuit's is ~1.5 MB of JSON).
SLUG_ONLY = [defer(Result.payload), defer(Result.request)]
Progress = Callable[[str, float, str], None]
# compute(progress, should_cancel) -> the result payload (a JSON-able dict)
Compute = Callable[[Progress, Callable[[], bool]], dict[str, Any]]


@dataclass
class Task:
    """What the worker needs to run one job and store its result."""

    job_id: str
    key: str
    kind: str
    request: dict[str, Any]
    model_name: str
    weights_sha256: str
    compute: Compute
    cancel: threading.Event = field(default_factory=threading.Event)
    deadline: float | None = None
    timed_out: bool = False
    stopping: bool = False  # cancelled because the server is shutting down

    def should_cancel(self) -> bool:
        """Polled by the engine between phases: cancelled by the user, or out of time."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.timed_out = True
        return self.cancel.is_set() or self.timed_out


class JobManager:
    """The bounded queue, its single worker thread, and the listeners of each job."""

    def __init__(self, sessions: sessionmaker[Session], *, queue_limit: int, job_timeout_s: float,
                 read_sessions: sessionmaker[Session] | None = None,
                 interactive: Callable[[], int] | None = None) -> None:
        self.sessions = sessions
        self.interactive = interactive  # how many interactive calls wait for the engine: they go first
        self.read_sessions = read_sessions or sessions  # snapshots only read: no SQLite write lock
        self.queue_limit = queue_limit
        self.job_timeout_s = job_timeout_s
        self._pending: deque[Task] = deque()
        self._running: Task | None = None
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._listeners: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Queue]]] = {}
        self._listeners_lock = threading.Lock()

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the worker thread (once)."""
        self._thread = threading.Thread(target=self._work, name="circuitscope-worker", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking work, cancel what is queued or running, and wait for the worker to exit."""
        with self._cond:
            self._stop = True
            pending, self._pending = list(self._pending), deque()
            if self._running is not None:
                self._running.stopping = True
                self._running.cancel.set()
            self._cond.notify_all()
        for task in pending:
            self._finish_failed(task, "the server stopped before this job started; submit it again", "failed")
        if self._thread is not None:
            self._thread.join(timeout)

    # ---------------------------------------------------------------- submit / cancel / read

    def submit(self, task_factory: Callable[[str], Task], *, key: str, kind: str, request: dict) -> str:
        """Queue a computation for ``key`` and return its job id; an identical active job is reused.

        Raises QueueFull (503 + Retry-After) when the queue holds ``queue_limit`` jobs.
        """
        with self._cond:
            if self._stop:
                raise QueueFull("the server is shutting down; retry shortly", retry_after=5)
            with session_scope(self.sessions) as s:
                active = repo.active_job_for_key(s, key=key)
                if active is not None and self._knows(active.id):
                    return active.id
                if len(self._pending) >= self.queue_limit:
                    raise QueueFull(
                        f"the job queue is full ({self.queue_limit} waiting); retry in a few seconds",
                        retry_after=self._retry_after(),
                    )
                job_id = repo.create_job(s, key=key, kind=kind, request=request).id
            self._pending.append(task_factory(job_id))
            self._cond.notify_all()
        self._publish_queue()
        return job_id

    def cancel(self, job_id: str) -> None:
        """Cancel a job: drop it from the queue, or ask the running engine call to stop."""
        with self._cond:
            queued = next((t for t in self._pending if t.job_id == job_id), None)
            if queued is not None:
                self._pending.remove(queued)
            elif self._running is not None and self._running.job_id == job_id:
                self._running.cancel.set()
                return
        if queued is not None:
            self._finish_failed(queued, "cancelled before it started", "cancelled")
            self._publish_queue()

    def queue_position(self, job_id: str) -> int | None:
        """0 for the next job to run, None when the job is not waiting."""
        with self._cond:
            for position, task in enumerate(self._pending):
                if task.job_id == job_id:
                    return position
        return None

    def queued(self) -> int:
        """How many jobs wait (not counting the running one)."""
        return len(self._pending)

    def snapshot(self, job_id: str) -> dict[str, Any]:
        """The job as the API shows it (``schemas.Job``); NotFound when there is no such job."""
        with session_scope(self.read_sessions) as s:
            job = repo.get_job(s, id=job_id)
            if job is None:
                raise NotFound(f"no job with id '{job_id}'; jobs are returned by POST /api/analyses "
                               "and POST /api/circuits")
            result = s.get(Result, job.result_id, options=SLUG_ONLY) if job.result_id else None
            url = urls.result_url(result.kind, result.slug) if result is not None else urls.job_url(job.id)
            return {
                "id": job.id, "status": job.status, "phase": job.phase, "progress": job.progress,
                "message": job.message, "error": job.error, "queue_position": self.queue_position(job.id),
                "result_id": job.result_id, "url": url,
            }

    async def cancel_and_wait(self, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """Cancel and wait (bounded) until the job has stopped; return its final snapshot."""
        queue = self.subscribe(job_id)
        try:
            snap = await anyio.to_thread.run_sync(self.snapshot, job_id)
            if snap["status"] in TERMINAL:
                return snap
            await anyio.to_thread.run_sync(self.cancel, job_id)
            with anyio.move_on_after(timeout):
                while snap["status"] not in TERMINAL:
                    snap = await queue.get()
            return await anyio.to_thread.run_sync(self.snapshot, job_id)
        finally:
            self.unsubscribe(job_id, queue)

    async def open_events(self, job_id: str) -> AsyncIterator[dict[str, str]]:
        """Check the job exists (NotFound otherwise), then return its server-sent events.

        Each change gives ``progress`` with the Job as data; the stream ends with ``done``, ``failed``
        or ``cancelled``. Subscribes before reading the first snapshot, so no change is missed.
        """
        queue = self.subscribe(job_id)
        try:
            first = await anyio.to_thread.run_sync(self.snapshot, job_id)
        except BaseException:
            self.unsubscribe(job_id, queue)
            raise
        return self._events(job_id, queue, first)

    async def _events(self, job_id: str, queue: asyncio.Queue, snap: dict) -> AsyncIterator[dict[str, str]]:
        try:
            while True:
                terminal = snap["status"] in TERMINAL
                yield {"event": snap["status"] if terminal else "progress", "data": json.dumps(snap)}
                if terminal:
                    return
                snap = await queue.get()
        finally:
            self.unsubscribe(job_id, queue)

    def _knows(self, job_id: str) -> bool:
        """True when the job is queued or running in this process (not a leftover row)."""
        running = self._running is not None and self._running.job_id == job_id
        return running or any(t.job_id == job_id for t in self._pending)

    def _retry_after(self) -> int:
        """A rough wait, in seconds, before a retry is likely to find room."""
        return max(1, min(60, len(self._pending)))

    # ---------------------------------------------------------------- listeners (SSE)

    def subscribe(self, job_id: str) -> asyncio.Queue:
        """A queue of job snapshots pushed on every change; call from the event loop."""
        queue: asyncio.Queue = asyncio.Queue()
        with self._listeners_lock:
            self._listeners.setdefault(job_id, set()).add((asyncio.get_running_loop(), queue))
        return queue

    def listeners(self, job_id: str) -> int:
        """How many event streams follow this job right now."""
        with self._listeners_lock:
            return len(self._listeners.get(job_id, ()))

    def unsubscribe(self, job_id: str, queue: asyncio.Queue) -> None:
        """Forget a listener (the client went away or the job ended)."""
        with self._listeners_lock:
            entries = self._listeners.get(job_id, set())
            for entry in [e for e in entries if e[1] is queue]:
                entries.discard(entry)
            if not entries:
                self._listeners.pop(job_id, None)

    def _publish(self, job_id: str) -> None:
        """Push the job's current snapshot to its listeners (thread-safe)."""
        with self._listeners_lock:
            entries = list(self._listeners.get(job_id, ()))
        if not entries:
            return
        try:
            snap = self.snapshot(job_id)
        except Exception:  # a listener must never break the worker
            log.exception("could not read job %s for its listeners", job_id)
            return
        for loop, queue in entries:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, snap)
            except RuntimeError:  # that listener's loop is closed
                self.unsubscribe(job_id, queue)

    def _publish_queue(self) -> None:
        """Queue positions moved: tell the listeners of every waiting job."""
        with self._cond:
            ids = [t.job_id for t in self._pending]
        for job_id in ids:
            self._publish(job_id)

    # ---------------------------------------------------------------- the worker

    def _work(self) -> None:
        """Take jobs in order and run them, until stopped."""
        while True:
            with self._cond:
                while not self._pending and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                task = self._running = self._pending.popleft()
            self._publish_queue()
            self._let_interactive_calls_go_first()
            try:
                self._run(task)
            finally:
                with self._cond:
                    self._running = None

    def _let_interactive_calls_go_first(self, max_wait_s: float = 5.0) -> None:
        """Live ablations and neuron pages take well under a second; a queued analysis can wait for
        them (bounded), so a stream of analyses does not starve the interactive requests."""
        deadline = time.monotonic() + max_wait_s
        while self.interactive is not None and self.interactive() and time.monotonic() < deadline:
            time.sleep(0.01)

    def _run(self, task: Task) -> None:
        """Run one job to a terminal state; every outcome is written to its row."""
        task.deadline = time.monotonic() + self.job_timeout_s
        self._report(task.job_id, status="running", phase="starting", progress=0.0, message="starting")
        try:
            payload = self._cached_or_compute(task)
            with session_scope(self.sessions) as s:
                repo.store_job_result(
                    s, job_id=task.job_id, key=task.key, kind=task.kind, model_name=task.model_name,
                    weights_sha256=task.weights_sha256, request=task.request, payload=payload,
                )
        except Cancelled:
            self._finish_cancelled(task)
        except (EngineError, WebError) as exc:
            self._finish_failed(task, str(exc), "failed")
        except Exception as exc:  # the job fails, the server stays up
            log.exception("job %s failed", task.job_id)
            self._finish_failed(task, f"internal error ({type(exc).__name__}); it was logged", "failed")
        self._publish(task.job_id)

    def _cached_or_compute(self, task: Task) -> dict[str, Any]:
        """Reuse a result another job stored meanwhile; otherwise run the engine."""
        with session_scope(self.sessions) as s:
            existing = repo.get_result_by_key(s, key=task.key)
            if existing is not None:
                return existing.payload

        def progress(phase: str, fraction: float, message: str = "") -> None:
            self._report(task.job_id, phase=phase, progress=fraction, message=message)

        payload = task.compute(progress, task.should_cancel)
        if task.should_cancel():  # cancelled or timed out after the last phase: keep nothing
            raise Cancelled("cancelled")
        return payload

    def _report(self, job_id: str, **fields: Any) -> None:
        """Write progress to the job row and push it to listeners."""
        with session_scope(self.sessions) as s:
            repo.update_job(s, id=job_id, **fields)
        self._publish(job_id)

    def _finish_cancelled(self, task: Task) -> None:
        """Cancelled, timed out, or stopped by shutdown: record which, with what to do next."""
        if task.stopping:
            self._finish_failed(task, "the server stopped while this job ran; submit it again", "failed")
        elif task.timed_out:
            message = (f"timed out after {self.job_timeout_s:g} s; try a shorter prompt, fewer ig_steps, "
                       "or raise CIRCUITSCOPE_JOB_TIMEOUT_S")
            self._finish_failed(task, message, "failed")
        else:
            self._finish_failed(task, "cancelled by request", "cancelled")

    def _finish_failed(self, task: Task, error: str, status: str) -> None:
        """Mark the job failed or cancelled (no result row is written) and tell listeners."""
        try:
            with session_scope(self.sessions) as s:
                repo.fail_job(s, id=task.job_id, error=error, status=status)
        except Exception:
            log.exception("could not mark job %s %s", task.job_id, status)
        self._publish(task.job_id)


class EngineGate:
    """Bounded access to synchronous engine calls made from requests (ablations, neuron pages).

    At most ``threads`` calls occupy worker threads, at most ``max_waiting`` more may wait for one,
    and a call waits at most ``lock_wait_s`` for the engine's lock (a long analysis may hold it).
    Past either bound the request gets 503 + Retry-After instead of hanging.
    """

    def __init__(self, lock: Any = None, *, threads: int = 2, max_waiting: int = 64,
                 lock_wait_s: float = 30.0) -> None:
        self.lock = lock  # the engine's lock (re-entrant: the engine takes it again inside)
        self.limiter = anyio.CapacityLimiter(threads)
        self.max_waiting = max_waiting
        self.lock_wait_s = lock_wait_s
        self._inflight = 0

    def waiting(self) -> int:
        """Calls admitted and not finished (waiting for, or holding, the engine)."""
        return self._inflight

    async def run(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn(*args, **kwargs)`` in a worker thread, or refuse when too many wait."""
        if self._inflight >= self.max_waiting:
            raise QueueFull("the model is busy with other requests; retry in a moment", retry_after=2)
        self._inflight += 1
        try:
            call = partial(self._locked, fn, *args, **kwargs)
            return await anyio.to_thread.run_sync(call, limiter=self.limiter)
        finally:
            self._inflight -= 1

    def _locked(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fn`` holding the engine's (re-entrant) lock, waiting a bounded time for it."""
        if self.lock is None:
            return fn(*args, **kwargs)
        if not self.lock.acquire(timeout=self.lock_wait_s):
            raise QueueFull("the model is busy with a long analysis; retry in a few seconds", retry_after=5)
        try:
            return fn(*args, **kwargs)
        finally:
            self.lock.release()
