"""End-to-end fixtures: the real app (real default model) under uvicorn, and Debian's chromium via Playwright.

Everything here is session-scoped: one server (own SQLite file under a temp dir, the model store of the
repository), one browser. Each test gets a fresh browser context (cookies, storage and clipboard are
not shared), so "open the permalink in a new browser context" is just another context.

Skips, with the reason, when a piece is missing: Playwright for Python, /usr/bin/chromium, the app
factory, or the prepared default model (``circuitscope models --prepare``). Playwright's own browser
download (``playwright install``) is never used.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = Path(os.environ.get("CIRCUITSCOPE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-dev-shm-usage",
]
DEFAULT_MODEL = "SmolLM2-135M-Instruct"
VIEWPORT = {"width": 1440, "height": 900}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install -e '.[dev]')"
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing (apt-get install chromium); Playwright's own browsers are not used"
    if importlib.util.find_spec("app.main") is None:
        return "app.main (the app factory) does not exist yet"
    model_dir = REPO / "models" / DEFAULT_MODEL
    if not (model_dir / "config.json").is_file():
        return f"the default model is not prepared at {model_dir}; run `circuitscope models --prepare`"
    return None


@pytest.fixture(scope="module")
def base_url(tmp_path_factory) -> Iterator[str]:
    """The real app, serving the real default model, on 127.0.0.1:<free port>."""
    reason = _missing()
    if reason:
        pytest.skip(reason)
    import uvicorn

    from app.main import create_app
    from app.settings import Settings

    data = tmp_path_factory.mktemp("e2e-data")
    settings = Settings(data_dir=data, model_dir=REPO / "models", model=DEFAULT_MODEL)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=_free_port(),
                                           log_level="warning"))
    before = set(threading.enumerate())
    thread = threading.Thread(target=server.run, name="e2e-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while not server.started:
        if not thread.is_alive():
            pytest.fail("the app did not start (see the log above): the default model may fail to load")
        if time.monotonic() > deadline:
            pytest.fail("the app did not start within 300 s")
        time.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(60)
        # Let the app's own threads (job worker, engine gate) finish what they run: torch work still
        # going when the interpreter exits aborts the process ("terminate called ...").
        deadline = time.monotonic() + 120
        for t in set(threading.enumerate()) - before:
            if t is not threading.current_thread() and t.name != "tqdm_monitor":
                t.join(max(0.0, deadline - time.monotonic()))


@pytest.fixture(scope="module")  # closes the sync event loop before other modules run
def browser(base_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class PageProbe:
    """What a page did that a test may assert on: JS errors, console errors, dialogs (alert/confirm)."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.console_errors: list[str] = []
        self.dialogs: list[str] = []

    def attach(self, page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: self.console_errors.append(msg.text) if msg.type == "error" else None)

        def on_dialog(dialog):
            self.dialogs.append(f"{dialog.type}: {dialog.message}")
            dialog.dismiss()

        page.on("dialog", on_dialog)


@pytest.fixture
def new_page(browser, base_url) -> Iterator[Callable[..., tuple[object, PageProbe]]]:
    """``page, probe = new_page()`` opens a page in a fresh browser context (closed after the test)."""
    contexts = []

    def make(**kwargs):
        ctx = browser.new_context(viewport=VIEWPORT, base_url=base_url, **kwargs)
        ctx.set_default_timeout(30_000)
        contexts.append(ctx)
        page = ctx.new_page()
        probe = PageProbe()
        probe.attach(page)
        return page, probe

    yield make
    for ctx in contexts:
        ctx.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
