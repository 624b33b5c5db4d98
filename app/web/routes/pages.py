"""HTML pages and their ``.json`` twins: every view is a URL (datasette's ``(\\.json)?$`` routes).

The ``.json`` routes are registered before the HTML ones so ``/a/x.json`` never reads as slug ``x.json``.
"""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from app.web import analyses, circuits
from app.web.deps import ServicesDep
from app.web.schemas import ERROR_RESPONSES, AnalysisView, CircuitView

router = APIRouter(responses=ERROR_RESPONSES)

SlugPath = Annotated[str, Path(min_length=1, max_length=64)]
ModelPath = Annotated[str, Path(min_length=1, max_length=200)]
NeuronPath = Annotated[str, Path(min_length=1, max_length=32)]
ViewQuery = Annotated[str | None, Query(max_length=64, description="a saved view (permalink slug)")]


class _QueryState(BaseModel):
    """A view state in the query string; ``given()`` is what the view code parses (unset fields left out)."""

    def given(self) -> dict[str, str]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class ViewParams(_QueryState):
    """View state in the query string, used when no saved view ``v`` is given (parsed by the view code)."""

    sel: str | None = Field(default=None, max_length=40_000, description="selected neurons, L1.N2,L3.N4")
    abl: str | None = Field(default=None, max_length=40_000, description="ablated neurons, L1.N2,L3.N4")
    mode: str | None = Field(default=None, max_length=16, description="zero | mean | scale")
    factor: str | None = Field(default=None, max_length=32, description="scale factor (mode=scale)")
    thr: str | None = Field(default=None, max_length=32, description="graph threshold")
    method: str | None = Field(default=None, max_length=32, description="impact method shown")


ViewParamsDep = Annotated[ViewParams, Query()]


class CircuitParams(_QueryState):
    """Circuit view state in the query string, used when no saved view ``v`` is given."""

    grp: str | None = Field(default=None, max_length=16, description="the selected group, e.g. G29.0")
    gabl: str | None = Field(default=None, max_length=4_000, description="ablated groups, G29.0,G28.1")
    abl: str | None = Field(default=None, max_length=40_000, description="extra ablated neurons, L1.N2,L3.N4")
    mode: str | None = Field(default=None, max_length=16, description="zero | mean | scale")
    factor: str | None = Field(default=None, max_length=32, description="scale factor (mode=scale)")


CircuitParamsDep = Annotated[CircuitParams, Query()]


def _render(request: Request, name: str, context: dict) -> HTMLResponse:
    return request.app.state.templates.TemplateResponse(request, name, context)


@router.get("/a/{slug}.json", response_model=AnalysisView, tags=["pages"])
async def analysis_json(slug: SlugPath, svc: ServicesDep, view: ViewParamsDep, v: ViewQuery = None) -> dict:
    """The analysis, the view state (``?v=`` or ``sel``/``abl``/``mode``/``thr``) and its ablation."""
    return await analyses.analysis_view(svc, slug, v, view.given())


@router.get("/a/{slug}", response_class=HTMLResponse, tags=["pages"])
async def analysis_page(
    slug: SlugPath, request: Request, svc: ServicesDep, view: ViewParamsDep, v: ViewQuery = None
) -> HTMLResponse:
    """The analysis page, opened in the given view state."""
    return _render(request, "analysis.html", await analyses.analysis_view(svc, slug, v, view.given()))


@router.get("/c/{slug}.json", response_model=CircuitView, tags=["pages"])
async def circuit_json(slug: SlugPath, svc: ServicesDep, view: CircuitParamsDep, v: ViewQuery = None) -> dict:
    """The circuit, the view state (``?v=`` or ``grp``/``gabl``/``abl``/``mode``/``factor``) and its ablation."""
    return await circuits.circuit_view(svc, slug, v, view.given())


@router.get("/c/{slug}", response_class=HTMLResponse, tags=["pages"])
async def circuit_page(
    slug: SlugPath, request: Request, svc: ServicesDep, view: CircuitParamsDep, v: ViewQuery = None
) -> HTMLResponse:
    """The circuit page (groups per layer, flow, group ablation), opened in the given view state."""
    return _render(request, "circuit.html", await circuits.circuit_view(svc, slug, v, view.given()))


@router.get("/m/{model}/n/{neuron_id}.json", response_model=dict, tags=["pages"])
async def neuron_json(model: ModelPath, neuron_id: NeuronPath, svc: ServicesDep) -> dict:
    """The neuron's decoding (docs/CONTRACTS.md, "Neuron")."""
    return (await analyses.neuron_view(svc, model, neuron_id, None))["neuron"]


@router.get("/m/{model}/n/{neuron_id}", response_class=HTMLResponse, tags=["pages"])
async def neuron_page(
    model: ModelPath, neuron_id: NeuronPath, request: Request, svc: ServicesDep
) -> HTMLResponse:
    """The neuron page."""
    neuron = (await analyses.neuron_view(svc, model, neuron_id, None))["neuron"]
    return _render(request, "neuron.html", {"neuron": neuron, "model": analyses.model_summary(svc)})


@router.get("/", response_class=HTMLResponse, tags=["pages"])
async def home(request: Request, svc: ServicesDep) -> HTMLResponse:
    """The home page: the analysis form and recent analyses."""
    recent = await analyses.in_db(svc, analyses.recent_analyses)
    models = await anyio.to_thread.run_sync(analyses.models, svc)
    context = {"recent": recent, "models": models, "settings": analyses.public_settings(svc)}
    return _render(request, "home.html", context)
