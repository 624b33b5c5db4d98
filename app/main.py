"""The app factory: ``create_app(settings)`` builds a FastAPI app; its lifespan owns every resource.

Start-up order (lifespan): migrate the database (Alembic ``upgrade head``), mark jobs a previous
process left queued/running as failed, load the model once (or take the injected engine: tests pass
``Engine.tiny()``), start the single job worker. A model the app loaded itself then gets its circuit
reference corpus warmed in a background thread once the model has been idle for a few seconds
(``circuits.warm_in_background``): readiness is not delayed, and an injected engine is left as it is
unless ``warm_circuits=True``. Shut-down: stop the warming and the
worker (cancelling what runs), close the database pool. Nothing happens at import time, so several apps
can live side by side. Responses of 1 KiB or more are gzip-compressed (a circuit is ~1.5 MB of JSON);
event streams are not.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.util import find_spec
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from app import __version__
from app.engine.service import Engine
from app.settings import REPO_ROOT, Settings
from app.store import repo
from app.store.session import make_engine, make_sessionmaker, session_scope, upgrade
from app.web import circuits, errors
from app.web.deps import Services
from app.web.errors import NotFound
from app.web.jobs import EngineGate, JobManager
from app.web.routes import api, pages

log = logging.getLogger("circuitscope")

FRONTEND = REPO_ROOT / "frontend"
MAX_BODY_BYTES = 1 << 20  # far above the largest valid request (20k-char prompt, 2000 neuron ids)
BACKGROUND_JOIN_S = 60.0  # longest wait at shut-down for a corpus pass under way (~5 s on 2 idle cores)
GZIP_MIN_BYTES = 1024  # smaller answers (jobs, errors, health) gain nothing from compression


def create_app(settings: Settings | None = None, engine: Engine | None = None, *,
               warm_circuits: bool | None = None) -> FastAPI:
    """Build the app. ``engine`` replaces loading ``settings.model`` (tests inject a tiny one).
    ``warm_circuits``: warm the circuit corpus once idle (default: only when the app loads the model)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict]:
        services = await start_services(settings, engine, warm_circuits=warm_circuits)
        app.state.services = services
        try:
            yield {"services": services}
        finally:
            await anyio.to_thread.run_sync(stop_services, services)

    app = FastAPI(title="CircuitScope", version=__version__, lifespan=lifespan, max_body_size=MAX_BODY_BYTES,
                  description="Neuron circuits in transformer language models: impacts, graphs, ablations.")
    app.state.templates = Jinja2Templates(directory=str(FRONTEND / "templates"))
    errors.install(app)
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=6)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.add_api_route("/static/vendor/plotly.min.js", plotly_js, include_in_schema=False)
    app.mount("/static", StaticFiles(directory=str(FRONTEND / "static"), check_dir=False), name="static")
    return app


async def start_services(settings: Settings, engine: Engine | None, *,
                         warm_circuits: bool | None = None) -> Services:
    """Migrate, recover from a previous crash, load the model, start the worker (and the warming)."""
    db = make_engine(settings.database_url)
    try:
        await anyio.to_thread.run_sync(upgrade, settings.database_url)
        sessions = make_sessionmaker(db)
        with session_scope(sessions) as s:
            interrupted = repo.fail_interrupted_jobs(s)
        if interrupted:
            log.warning("marked %d interrupted job(s) from a previous run as failed", interrupted)
        loaded = engine is None
        if loaded:
            engine = await anyio.to_thread.run_sync(lambda: load_engine(settings))
    except BaseException:
        db.dispose()
        raise
    read_sessions = make_sessionmaker(db, readonly=True)
    gate = EngineGate(getattr(engine, "lock", None), threads=2, max_waiting=max(16, 4 * settings.queue_limit),
                      lock_wait_s=settings.engine_wait_s)
    jobs = JobManager(sessions, queue_limit=settings.queue_limit, job_timeout_s=settings.job_timeout_s,
                      read_sessions=read_sessions, interactive=gate.waiting)
    jobs.start()
    log.info("serving %s (%s) with database %s", engine.info["name"], engine.info["device"],
             db.url.render_as_string())
    services = Services(settings=settings, engine=engine, sessions=sessions, jobs=jobs, gate=gate,
                        read_sessions=read_sessions)
    if warm_circuits if warm_circuits is not None else loaded:
        warming = circuits.warm_in_background(services, services.stopping)
        services.background.extend([warming] if warming is not None else [])
    return services


def load_engine(settings: Settings) -> Engine:
    """Load the configured model once (the slow part of start-up)."""
    return Engine.load(settings.model, model_dir=settings.model_dir, device=settings.device,
                       dtype=settings.dtype, max_prompt_tokens=settings.max_prompt_tokens,
                       allowlist=tuple(settings.model_allowlist))


def stop_services(services: Services) -> None:
    """Stop background warming and the worker (queued jobs are marked failed); release the database.

    A corpus pass already under way cannot be interrupted: it is waited for (bounded), so torch is never
    torn down under a running thread at interpreter exit."""
    services.stopping.set()
    services.jobs.stop()
    for thread in services.background:
        thread.join(BACKGROUND_JOIN_S)
    services.sessions.kw["bind"].dispose()


def plotly_js() -> FileResponse:
    """plotly.min.js from the installed plotly package (no CDN: the server may be offline)."""
    spec = find_spec("plotly")
    path = Path(spec.origin).parent / "package_data" / "plotly.min.js" if spec and spec.origin else None
    if path is None or not path.is_file():
        raise NotFound("plotly.min.js is not installed; run `pip install plotly`")
    headers = {"Cache-Control": "public, max-age=86400"}
    return FileResponse(path, media_type="text/javascript", headers=headers)


def serve(settings: Settings | None = None) -> None:
    """Run the service with uvicorn (one process: the model and its worker live in it)."""
    import uvicorn

    settings = settings or Settings()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="info")
