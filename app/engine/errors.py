"""Typed engine errors. Each says what is wrong and what to do; the web layer maps them to HTTP in one place."""

from __future__ import annotations


class EngineError(Exception):
    """Base class: a problem the caller can fix or must be told about."""


class BadInput(EngineError):
    """The request itself is wrong (empty prompt, malformed neuron id, bad parameter)."""


class PromptTooLong(BadInput):
    """The prompt has more tokens than the configured or model limit."""


class TargetNotSingleToken(BadInput):
    """A target or contrast string does not encode to exactly one token."""


class NeuronOutOfRange(BadInput):
    """A neuron id names a layer or index the model does not have."""


class UnknownModel(EngineError):
    """The model is not in the model store or allowlist."""


class UnsupportedArchitecture(EngineError):
    """No adapter knows where this architecture's MLP neurons are."""


class Cancelled(EngineError):
    """The job was cancelled by its owner while running."""
