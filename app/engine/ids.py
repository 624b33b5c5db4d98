"""Canonical names for neurons and interventions.

One name per concept: a neuron is ``L3.N1207`` (layer 3, hidden unit 1207 of the MLP) in URLs, the
database, JSON and JavaScript alike. An ablation is plain, hashable data so it can be a cache key, a
permalink field and an API body with no translation (circuit-tracer's interventions-as-data).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Literal

from app.engine.errors import BadInput

_NEURON_RE = re.compile(r"^L(\d{1,4})\.N(\d{1,7})$")

AblationMode = Literal["zero", "mean", "scale"]
ABLATION_MODES: tuple[str, ...] = ("zero", "mean", "scale")


@dataclass(frozen=True, order=True)
class NeuronId:
    """A MLP hidden unit: ``layer`` (0-based decoder block) and ``index`` (0-based unit)."""

    layer: int
    index: int

    def __str__(self) -> str:
        return f"L{self.layer}.N{self.index}"

    @classmethod
    def parse(cls, text: str) -> NeuronId:
        """Parse ``"L3.N1207"``; raise BadInput with the expected form otherwise."""
        match = _NEURON_RE.match(text.strip()) if isinstance(text, str) else None
        if not match:
            raise BadInput(f"'{text}' is not a neuron id; write it as L<layer>.N<index>, e.g. L3.N1207")
        return cls(int(match.group(1)), int(match.group(2)))


def parse_neuron_list(text: str | list[str]) -> tuple[NeuronId, ...]:
    """Parse ``"L3.N1,L5.N77"`` (or a list of ids) into sorted, de-duplicated NeuronIds."""
    parts = text.split(",") if isinstance(text, str) else list(text)
    ids = sorted({NeuronId.parse(p) for p in parts if str(p).strip()})
    if not ids:
        raise BadInput("no neurons given; pass ids such as L3.N1207,L5.N77")
    return tuple(ids)


@dataclass(frozen=True)
class Ablation:
    """An intervention on a set of neurons.

    ``zero`` sets a(t) = 0; ``mean`` sets a(t) to the neuron's mean activation over the engine's
    reference corpus; ``scale`` multiplies a(t) by ``factor``. ``positions`` (token indices, None =
    all) restricts where the intervention applies.
    """

    neurons: tuple[NeuronId, ...]
    mode: AblationMode = "zero"
    factor: float = 0.0
    positions: tuple[int, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        if self.mode not in ABLATION_MODES:
            raise BadInput(f"ablation mode '{self.mode}' is unknown; use one of {', '.join(ABLATION_MODES)}")
        if not self.neurons:
            raise BadInput("an ablation needs at least one neuron")
        object.__setattr__(self, "neurons", tuple(sorted(set(self.neurons))))
        if self.positions is not None:
            object.__setattr__(self, "positions", tuple(sorted({int(p) for p in self.positions})))
        if self.mode != "scale":
            object.__setattr__(self, "factor", 0.0)

    def to_dict(self) -> dict:
        return {
            "neurons": [str(n) for n in self.neurons],
            "mode": self.mode,
            "factor": self.factor,
            "positions": list(self.positions) if self.positions is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Ablation:
        return cls(
            neurons=parse_neuron_list(data.get("neurons") or []),
            mode=data.get("mode", "zero"),
            factor=float(data.get("factor", 0.0) or 0.0),
            positions=tuple(data["positions"]) if data.get("positions") is not None else None,
        )

    def key(self) -> str:
        """A stable short hash, for cache keys."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]
