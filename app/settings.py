"""One validated settings object for the whole service.

Values come from keyword arguments (the CLI passes its flags this way), then ``CIRCUITSCOPE_*``
environment variables, then the defaults below. Building a ``Settings`` touches nothing on disk:
directories are created by whoever needs them (the app's lifespan), never at import time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Where models and data live, which model to serve, and the service's limits."""

    model_config = SettingsConfigDict(env_prefix="CIRCUITSCOPE_", extra="ignore", protected_namespaces=())

    model_dir: Path = REPO_ROOT / "models"
    model: str = "SmolLM2-135M-Instruct"
    model_allowlist: tuple[str, ...] = Field(default=(), description="hub ids/paths allowed too")
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    data_dir: Path = REPO_ROOT / "data"
    database_url: str = Field(default="", description="SQLAlchemy URL; empty means a SQLite file in data_dir")
    max_prompt_tokens: int = Field(default=512, ge=1, le=131072)
    queue_limit: int = Field(default=16, ge=1, le=10000)
    job_timeout_s: float = Field(default=300.0, gt=0)
    engine_wait_s: float = Field(default=30.0, gt=0, description="max wait of an ablation for a busy model")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        """Point the database at ``<data_dir>/circuitscope.db`` unless a URL was given."""
        if not self.database_url:
            self.database_url = f"sqlite:///{(self.data_dir / 'circuitscope.db').as_posix()}"
        return self
