"""Settings: one validated object, environment prefix CIRCUITSCOPE_, no side effects."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.settings import REPO_ROOT, Settings


def test_defaults_point_into_the_repository(monkeypatch):
    for name in ("MODEL", "MODEL_DIR", "DATA_DIR", "DATABASE_URL", "PORT"):
        monkeypatch.delenv(f"CIRCUITSCOPE_{name}", raising=False)
    settings = Settings()
    assert settings.model == "SmolLM2-135M-Instruct" and settings.model_dir == REPO_ROOT / "models"
    assert settings.database_url == f"sqlite:///{(REPO_ROOT / 'data' / 'circuitscope.db').as_posix()}"
    assert (settings.max_prompt_tokens, settings.queue_limit, settings.job_timeout_s) == (512, 16, 300.0)
    assert (settings.device, settings.dtype, settings.port) == ("auto", "auto", 8000)


def test_environment_and_derived_database(monkeypatch, tmp_path):
    monkeypatch.setenv("CIRCUITSCOPE_DATA_DIR", str(tmp_path / "d"))
    monkeypatch.setenv("CIRCUITSCOPE_QUEUE_LIMIT", "3")
    settings = Settings()
    assert settings.queue_limit == 3
    assert settings.database_url.endswith(f"{tmp_path.as_posix()}/d/circuitscope.db")
    assert not (tmp_path / "d").exists()  # building settings touches nothing
    monkeypatch.setenv("CIRCUITSCOPE_DATABASE_URL", "postgresql+psycopg://u@h/db")
    assert Settings().database_url == "postgresql+psycopg://u@h/db"


def test_invalid_values_are_refused():
    with pytest.raises(ValidationError):
        Settings(queue_limit=0)
    with pytest.raises(ValidationError):
        Settings(dtype="float8")
