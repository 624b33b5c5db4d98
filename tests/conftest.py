"""Shared fixtures for the web and end-to-end tests: a tiny engine, isolated settings, a live server.

Kept small on purpose; engine-only fixtures live in tests/engine/conftest.py.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_engine():
    """One tiny seeded Llama-style Engine (3 layers x 64 neurons) shared by every web test."""
    from app.engine.service import Engine

    return Engine.tiny("llama", seed=0)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., object]:
    """Settings isolated under tmp_path (own SQLite file, empty model store); keyword overrides allowed."""
    from app.settings import Settings

    def make(**overrides):
        base = {"data_dir": tmp_path / "data", "model_dir": tmp_path / "models"}
        return Settings(**{**base, **overrides})

    return make


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _serve(app) -> Iterator[str]:
    """Serve ``app`` with a real uvicorn on 127.0.0.1 in a thread; yield its base URL, stop it after."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def live_server() -> Callable[..., object]:
    """``with live_server(app) as base_url:`` runs ``app`` on a real uvicorn for the block."""
    return _serve
