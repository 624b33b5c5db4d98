"""A real server process on the tiny engine, for the kill test: ``python serve_tiny.py DATA_DIR PORT``.

Analyses whose prompt contains "slow" never finish (they wait at their first phase), so the test can
kill the process while a job is running.
"""

from __future__ import annotations

import sys
import threading

import uvicorn

from app.engine.service import Engine
from app.main import create_app
from app.settings import Settings


def main() -> None:
    data_dir, port = sys.argv[1], int(sys.argv[2])
    engine = Engine.tiny()
    real, forever = engine.analyze, threading.Event()

    def analyze(prompt, *, progress=None, **kwargs):
        if "slow" not in prompt:
            return real(prompt, progress=progress, **kwargs)

        def hold(phase, fraction, message):
            progress(phase, fraction, message)
            forever.wait()

        return real(prompt, progress=hold, **kwargs)

    engine.analyze = analyze
    settings = Settings(data_dir=data_dir, model_dir=f"{data_dir}/models", port=port)
    uvicorn.run(create_app(settings, engine=engine), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
