"""Request dependencies as ``Annotated`` aliases (full-stack-fastapi-template's ``deps.py``).

Everything a route needs lives in one ``Services`` object built by the app's lifespan and handed to
requests through the lifespan state: no module-level singletons, so tests build apps side by side.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session, sessionmaker

from app.engine.service import Engine
from app.settings import Settings
from app.store.session import session_scope
from app.web.jobs import EngineGate, JobManager


@dataclass
class Services:
    """The long-lived objects of one running app."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    jobs: JobManager
    gate: EngineGate
    read_sessions: sessionmaker[Session] | None = None  # for requests that only read (no write lock)
    stopping: threading.Event = field(default_factory=threading.Event)  # set at shut-down (background work)
    background: list[threading.Thread] = field(default_factory=list)  # joined at shut-down


def get_services(request: Request) -> Services:
    """The app's services (set by the lifespan)."""
    return request.state.services


def get_settings(request: Request) -> Settings:
    return get_services(request).settings


def get_engine(request: Request) -> Engine:
    return get_services(request).engine


def get_jobs(request: Request) -> JobManager:
    return get_services(request).jobs


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent; GET requests only read,
    so they use the read-only sessions (SQLite WAL readers never wait for the writer)."""
    services = get_services(request)
    reading = request.method in ("GET", "HEAD") and services.read_sessions is not None
    with session_scope(services.read_sessions if reading else services.sessions) as session:
        yield session


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
EngineDep = Annotated[Engine, Depends(get_engine)]
JobsDep = Annotated[JobManager, Depends(get_jobs)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
