"""Pydantic wire models: what the API accepts (validated, bounded) and what it answers.

Engine results (Analysis, Ablation, Neuron, Circuit; see docs/CONTRACTS.md) travel as plain JSON objects: the
engine owns their shape, so the web layer passes them through rather than re-declaring them.
Limits here are the first line of defence; the engine re-checks what only it can know
(token counts, layer/neuron ranges, single-token targets).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

Method = Literal["magnitude", "attribution", "ig"]
Mode = Literal["zero", "mean", "scale"]
JobStatus = Literal["queued", "running", "done", "failed", "cancelled"]

MAX_PROMPT_CHARS = 20_000
MAX_NEURONS = 2_000
MAX_CIRCUIT_PROMPTS = 16
MAX_CORPUS_LINES = 2_000
MAX_CORPUS_LINE_CHARS = 2_000
MAX_GROUPS = 256


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
# A circuit group: G<layer>.<rank> (rank 0 = the layer's most important group), or the root's core set.
GROUP_PATTERN = r"^(root|G\d{1,4}\.\d{1,4})$"
GroupId = Annotated[str, Field(max_length=16, pattern=GROUP_PATTERN, examples=["G29.0"])]
# A layer window: "LO-HI" (e.g. 24-29) or a count of last layers (e.g. "6").
LAYERS_PATTERN = r"^\s*\d{1,4}\s*(-\s*\d{1,4}\s*)?$"


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
    """What a permalink restores.

    Analysis views: selected neurons, ablation, threshold, method. Circuit views: the selected group
    ``grp``, the ablated groups ``gabl``, extra ablated neurons (``abl.neurons``) and the ablation
    ``mode``/``factor`` (top-level, or inside ``abl``). Fields of the other kind of view are ignored.
    """

    sel: NeuronList = Field(default_factory=list, max_length=MAX_NEURONS)
    abl: ViewAblation | None = None
    thr: float = Field(default=0.0, ge=-1e9, le=1e9, allow_inf_nan=False)
    method: Method | None = None
    grp: GroupId | None = Field(default=None, description="circuit view: the selected group")
    gabl: list[GroupId] = Field(default_factory=list, max_length=MAX_GROUPS,
                                description="circuit view: the ablated groups")
    mode: Mode | None = Field(default=None, description="circuit view: how the groups are ablated")
    factor: float | None = Field(default=None, ge=-1000, le=1000, allow_inf_nan=False,
                                 description="circuit view: scale factor (mode=scale)")


class PermalinkRequest(BaseModel):
    """``POST /api/permalinks``: an analysis or a circuit, with its view state."""

    analysis_id: Text = Field(min_length=1, max_length=64, description="an analysis id or a circuit id")
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
    url: str | None = Field(description="the analysis (or circuit) page once done, else the job resource")


class StoredResult(BaseModel):
    """A stored result: its ids, page URL, the request that produced it, and the engine's result."""

    id: str
    slug: str
    url: str
    created_at: str | None = None
    request: dict[str, Any] | None = None
    result: dict[str, Any]


class AnalysisOut(StoredResult):
    """A stored analysis."""


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


class CircuitRequest(BaseModel):
    """``POST /api/circuits``: a NeurFlow circuit of one prompt or a prompt set sharing a behaviour.

    The prompt set is ``prompt`` followed by ``prompts`` (duplicates dropped, order kept); the first one
    is the prompt that circuit ablations run on.
    """

    model_config = ConfigDict(protected_namespaces=())

    prompt: Text | None = Field(default=None, min_length=1, max_length=MAX_PROMPT_CHARS,
                                examples=["The capital of France is"])
    prompts: list[Annotated[Text, Field(min_length=1, max_length=MAX_PROMPT_CHARS)]] | None = Field(
        default=None, max_length=MAX_CIRCUIT_PROMPTS, description="more prompts sharing the behaviour")
    target: Text | None = Field(default=None, max_length=200, description="token to explain; default: top-1")
    contrast: Text | None = Field(default=None, max_length=200,
                                  description="root becomes logit(target) - logit(contrast)")
    tau: int = Field(default=16, ge=1, le=64, description="core neurons per critical neuron")
    k: int = Field(default=50, ge=2, le=200, description="concept samples per neuron")
    layers: Text | None = Field(default=None, max_length=16, pattern=LAYERS_PATTERN, examples=["24-29"],
                                description='layer window "LO-HI", or a count of last layers; default: last 6')
    fast: bool = Field(default=False, description="activation x gradient instead of integrated gradients")
    corpus: list[Annotated[Text, Field(max_length=MAX_CORPUS_LINE_CHARS)]] | None = Field(
        default=None, max_length=MAX_CORPUS_LINES, description="reference texts instead of the shipped corpus")
    model: Text | None = Field(default=None, max_length=200, description="must be the served model if given")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        return None if value is None else _not_blank(value)

    @field_validator("prompts")
    @classmethod
    def _prompts_not_blank(cls, value: list[str] | None) -> list[str] | None:
        for text in value or []:
            _not_blank(text)
        return value

    @field_validator("corpus")
    @classmethod
    def _corpus_has_text(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not any(text.strip() for text in value):
            raise ValueError("the corpus holds no text; give at least one non-empty line, or leave it out")
        return value

    @model_validator(mode="after")
    def _some_prompt(self) -> CircuitRequest:
        if len(self.prompt_set()) == 0:
            raise ValueError("give a prompt (or a non-empty list of prompts)")
        if len(self.prompt_set()) > MAX_CIRCUIT_PROMPTS:
            raise ValueError(f"at most {MAX_CIRCUIT_PROMPTS} prompts in all (prompt and prompts together)")
        return self

    def prompt_set(self) -> list[str]:
        """``prompt`` then ``prompts``, duplicates dropped, order kept."""
        return list(dict.fromkeys([*([self.prompt] if self.prompt is not None else []), *(self.prompts or [])]))

    def corpus_texts(self) -> list[str] | None:
        """The corpus as the engine reads it: stripped lines, blank ones dropped (None: the shipped one)."""
        return None if self.corpus is None else [t.strip() for t in self.corpus if t.strip()]


class CircuitAblationRequest(BaseModel):
    """``POST /api/circuits/{id}/ablations``: switch off whole groups (and optionally single neurons)."""

    groups: list[GroupId] = Field(default_factory=list, max_length=MAX_GROUPS, examples=[["G2.0"]])
    neurons: NeuronList = Field(default_factory=list, max_length=MAX_NEURONS, description="extra neurons")
    mode: Mode = "zero"
    factor: float = Field(default=0.0, ge=-1000, le=1000, allow_inf_nan=False, description="for mode=scale")
    continuation: int = Field(default=8, ge=0, le=64, description="greedy tokens to generate")

    @model_validator(mode="after")
    def _something(self) -> CircuitAblationRequest:
        if not self.groups and not self.neurons:
            raise ValueError("name at least one group (e.g. G29.0) or neuron to ablate")
        return self


class CircuitOut(StoredResult):
    """A stored circuit."""


class CircuitDone(BaseModel):
    status: Literal["done"] = "done"
    circuit: CircuitOut


class CircuitQueued(BaseModel):
    status: Literal["queued"] = "queued"
    job: Job


class CircuitView(BaseModel):
    """``/c/{slug}.json``: the circuit, the view state, and the ablation that state implies."""

    circuit: CircuitOut
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
