"""Engine fixtures: tiny seeded models built in-process from a config (no downloads)."""

from __future__ import annotations

import pytest

from app.engine.service import Engine


@pytest.fixture(scope="session")
def tiny() -> Engine:
    """A 3-layer Llama-style model, d_model 32, d_ff 64, seed 0."""
    return Engine.tiny("llama", seed=0)


@pytest.fixture(scope="session")
def tiny_gpt2() -> Engine:
    return Engine.tiny("gpt2", seed=0)


PROMPT = "the cat is big and the dog is"
