"""JSON API routes (docs/CONTRACTS.md, "HTTP API"). Each route parses, delegates, and shapes the answer.

Plain ``def`` routes run in the thread pool (they touch the database); ``async`` routes hand engine and
database work to threads themselves. Errors are raised, never returned: ``app.web.errors`` maps them.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from sse_starlette.sse import EventSourceResponse

from app.web import analyses, circuits
from app.web.deps import JobsDep, ServicesDep, SessionDep
from app.web.schemas import (
    ERROR_RESPONSES,
    AblationOut,
    AblationRequest,
    AnalysisDone,
    AnalysisOut,
    AnalysisQueued,
    AnalysisRequest,
    AnalysisSummary,
    CircuitAblationRequest,
    CircuitDone,
    CircuitOut,
    CircuitQueued,
    CircuitRequest,
    Health,
    Job,
    ModelInfo,
    NeuronOut,
    PermalinkOut,
    PermalinkRequest,
)

router = APIRouter(responses=ERROR_RESPONSES)

IdPath = Annotated[str, Path(min_length=1, max_length=64)]


@router.get("/healthz", response_model=Health, tags=["service"])
def healthz(svc: ServicesDep) -> dict:
    """Liveness: the loaded model and how many jobs wait."""
    return {"status": "ok", "model": svc.engine.info["name"], "queue": svc.jobs.queued()}


@router.get("/api/models", response_model=list[ModelInfo], tags=["models"])
def list_models(svc: ServicesDep) -> list[dict]:
    """Models in the model store; ``loaded`` marks the one this server analyses with."""
    return analyses.models(svc)


@router.post(
    "/api/analyses", response_model=AnalysisDone | AnalysisQueued, tags=["analyses"],
    responses={202: {"model": AnalysisQueued, "description": "queued: follow the job"}},
)
def create_analysis(body: AnalysisRequest, svc: ServicesDep, response: Response) -> dict:
    """Get or compute: 200 with the stored analysis, or 202 with the job computing it."""
    response.status_code, answer = analyses.submit_analysis(svc, body)
    return answer


@router.get("/api/analyses", response_model=list[AnalysisSummary], tags=["analyses"])
def list_analyses(s: SessionDep, limit: Annotated[int, Query(ge=1, le=200)] = 20) -> list[dict]:
    """The most recent analyses, newest first."""
    return analyses.recent_analyses(s, limit)


@router.get("/api/analyses/{analysis_id}", response_model=AnalysisOut, tags=["analyses"])
def get_analysis(analysis_id: IdPath, s: SessionDep) -> dict:
    """One stored analysis with its request and result."""
    return analyses.get_analysis(s, analysis_id)


@router.post("/api/analyses/{analysis_id}/ablations", response_model=AblationOut, tags=["analyses"])
async def create_ablation(analysis_id: IdPath, body: AblationRequest, svc: ServicesDep) -> dict:
    """Baseline vs ablated on the analysis' prompt (cached; computed synchronously when new)."""
    return await analyses.ablate(svc, analysis_id, body)


@router.get("/api/models/{model}/neurons/{neuron_id}", response_model=NeuronOut, tags=["models"])
async def get_neuron(
    model: Annotated[str, Path(max_length=200)], neuron_id: Annotated[str, Path(max_length=32)],
    svc: ServicesDep, analysis: Annotated[str | None, Query(max_length=64)] = None,
) -> dict:
    """What a neuron reads and writes; with ``analysis``, its activations on that prompt."""
    return await analyses.neuron_view(svc, model, neuron_id, analysis)


@router.get("/api/jobs/{job_id}", response_model=Job, tags=["jobs"])
def get_job(job_id: IdPath, jobs: JobsDep) -> dict:
    """Where a job stands: status, phase, progress, queue position, and its result when done."""
    return jobs.snapshot(job_id)


@router.delete("/api/jobs/{job_id}", response_model=Job, tags=["jobs"])
async def cancel_job(job_id: IdPath, jobs: JobsDep) -> dict:
    """Cancel a queued or running job; answers once it has stopped (a finished job is left as is)."""
    return await jobs.cancel_and_wait(job_id)


@router.get(
    "/api/jobs/{job_id}/events", tags=["jobs"], response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}},
                     "description": "progress events, then done | failed | cancelled"}},
)
async def job_events(job_id: IdPath, jobs: JobsDep) -> EventSourceResponse:
    """Server-sent events: ``progress`` (the Job) on every change, then ``done``/``failed``/``cancelled``."""
    return EventSourceResponse(await jobs.open_events(job_id), ping=15)


@router.post("/api/permalinks", response_model=PermalinkOut, tags=["permalinks"])
def create_permalink(body: PermalinkRequest, svc: ServicesDep, s: SessionDep) -> dict:
    """Save an analysis or a circuit with its view state; the URL reopens exactly that view."""
    return circuits.create_permalink(svc, s, body)


@router.post(
    "/api/circuits", response_model=CircuitDone | CircuitQueued, tags=["circuits"],
    responses={202: {"model": CircuitQueued, "description": "queued: follow the job"}},
)
def create_circuit(body: CircuitRequest, svc: ServicesDep, response: Response) -> dict:
    """Get or compute a NeurFlow circuit: 200 with the stored circuit, or 202 with the job computing it."""
    response.status_code, answer = circuits.submit_circuit(svc, body)
    return answer


@router.get("/api/circuits/{circuit_id}", response_model=CircuitOut, tags=["circuits"])
def get_circuit(circuit_id: IdPath, s: SessionDep) -> dict:
    """One stored circuit with its request and result."""
    return circuits.get_circuit(s, circuit_id)


@router.post("/api/circuits/{circuit_id}/ablations", response_model=AblationOut, tags=["circuits"])
async def create_circuit_ablation(circuit_id: IdPath, body: CircuitAblationRequest, svc: ServicesDep) -> dict:
    """Ablate whole groups (and extra neurons) on the circuit's first prompt (cached; synchronous when new)."""
    return await circuits.ablate(svc, circuit_id, body)
