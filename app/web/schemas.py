"""Pydantic wire models: what the API accepts (validated, bounded) and what it answers.

Engine results (Analysis, Ablation, Neuron; see docs/CONTRACTS.md) travel as plain JSON objects: the
engine owns their shape, so the web layer passes them through rather than re-declaring them.
Limits here are the first line of defence; the engine re-checks what only it can know
(token counts, layer/neuron ranges, single-token targets).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

Method = Literal["magnitude", "attribution", "ig"]
Mode = Literal["zero", "mean", "scale"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]

MAX_PROMPT_CHARS = 20_000
MAX_NEURONS = 2_000


def _utf8(value: str) -> str:
    """Refuse text that is not valid UTF-8 (lone surrogates from ``\\ud800`` escapes): tokenizers need it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("contains an unpaired surrogate escape; send valid Unicode text") from exc
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must contain some non-whitespace text")
    return value


Text = Annotated[str, AfterValidator(_utf8)]
# The pattern is documented (and guides schema fuzzers) but checked by NeuronId.parse, whose message
# says how to write an id.
NEURON_PATTERN = r"^L\d{1,4}\.N\d{1,7}$"
NeuronList = list[Annotated[Text, Field(max_length=32, json_schema_extra={"pattern": NEURON_PATTERN},
                                        examples=["L3.N1207"])]]


class AnalysisRequest(BaseModel):
    """``POST /api/analyses``: what to analyse and how."""

    model_config = ConfigDict(protected_namespaces=())

    prompt: Text = Field(min_length=1, max_length=MAX_PROMPT_CHARS, examples=["The capital of france is"])
    target: Text | None = Field(default=None, max_length=200, description="token to explain; default: top-1")
    contrast: Text | None = Field(default=None, max_length=200,
                                  description="metric becomes logit(target) - logit(contrast)")
    method: Method = "attribution"
    k: int = Field(default=5, ge=1, le=64, description="top neurons per layer in the graph")
    ig_steps: int = Field(default=16, ge=1, le=128, description="integrated-gradients steps (method=ig)")
    model: Text | None = Field(default=None, max_length=200, description="must be the served model if given")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        return _not_blank(value)


class AblationRequest(BaseModel):
    """``POST /api/analyses/{id}/ablations``: which neurons to switch off, and how."""

    neurons: NeuronList = Field(min_length=1, max_length=MAX_NEURONS, examples=[["L0.N1", "L1.N7"]])
    mode: Mode = "zero"
    factor: float = Field(default=0.0, ge=-1000, le=1000, allow_inf_nan=False, description="for mode=scale")
    positions: list[int] | None = Field(default=None, max_length=4096, description="token indices; null: all")
    continuation: int = Field(default=8, ge=0, le=64, description="greedy tokens to generate")

    @field_validator("positions")
    @classmethod
    def _non_negative(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and any(p < 0 or p > 1_000_000 for p in value):
            raise ValueError("positions are token indices, 0 or more")
        return value


class ViewAblation(BaseModel):
    """The ablation part of a view state."""

    neurons: NeuronList = Field(default_factory=list, max_length=MAX_NEURONS)
    mode: Mode = "zero"
    factor: float = Field(default=0.0, ge=-1000, le=1000, allow_inf_nan=False)


class ViewState(BaseModel):
    """What a permalink restores: selected neurons, ablation, threshold, method."""

    sel: NeuronList = Field(default_factory=list, max_length=MAX_NEURONS)
    abl: ViewAblation | None = None
    thr: float = Field(default=0.0, ge=-1e9, le=1e9, allow_inf_nan=False)
    method: Method | None = None


class PermalinkRequest(BaseModel):
    """``POST /api/permalinks``."""

    analysis_id: Text = Field(min_length=1, max_length=64)
    state: ViewState = Field(default_factory=ViewState)


class PermalinkOut(BaseModel):
    slug: str
    url: str


class Job(BaseModel):
    """A background analysis and where it stands."""

    id: str
    status: JobStatus
    phase: str
    progress: float
    message: str
    error: str | None
    queue_position: int | None = Field(description="0 = next to run; null when not queued")
    result_id: str | None
    url: str | None = Field(description="the analysis page once done, else the job resource")


class AnalysisOut(BaseModel):
    """A stored analysis."""

    id: str
    slug: str
    url: str
    created_at: str | None = None
    request: dict[str, Any] | None = None
    result: dict[str, Any]


class AnalysisDone(BaseModel):
    status: Literal["done"] = "done"
    analysis: AnalysisOut


class AnalysisQueued(BaseModel):
    status: Literal["queued"] = "queued"
    job: Job


class AnalysisSummary(BaseModel):
    id: str
    slug: str
    url: str
    prompt: str
    method: str
    created_at: str | None


class AblationOut(BaseModel):
    id: str
    result: dict[str, Any]


class ModelInfo(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    name: str
    prepared: bool
    loaded: bool
    n_layers: int | None = None
    neurons_per_layer: int | None = None
    arch: str | None = None


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    model: str
    queue: int


class Activations(BaseModel):
    tokens: list[str]
    activations: list[float]


class NeuronOut(BaseModel):
    neuron: dict[str, Any]
    activations: Activations | None = None
    impacts: dict[str, float] | None = None


class AnalysisView(BaseModel):
    """``/a/{slug}.json``: the analysis, the view state, and the ablation that state implies."""

    analysis: AnalysisOut
    state: dict[str, Any]
    ablation: dict[str, Any] | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": desc}
    for status, desc in [(400, "bad input"), (404, "not found"), (413, "prompt too long"),
                         (422, "invalid request"), (503, "queue full (Retry-After)")]
}
