"""What the routes do, kept out of the routes: get-or-compute analyses, cached ablations, neurons, views.

Content addressing: an analysis is stored under ``content_key`` of everything that determines it
(model weights hash, prompt, target, contrast, method, parameters, engine version); an ablation under
the same parts plus the ablation itself. The same request twice therefore computes once: a cache hit
is a single indexed read, and an identical request arriving while the first is still computing joins
that job instead of starting another.

Engine calls never run on the event loop: analyses go to the job worker, ablations and neuron
look-ups through ``EngineGate`` (bounded worker threads), database work through the thread pool.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

import anyio
from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.engine.errors import BadInput, UnknownModel
from app.engine.ids import Ablation, NeuronId, parse_neuron_list
from app.engine.loading import list_models
from app.store import repo
from app.store.session import session_scope
from app.web import urls
from app.web.deps import Services
from app.web.errors import NotFound
from app.web.jobs import Task
from app.web.schemas import AblationRequest, AnalysisRequest, PermalinkRequest, ViewState

T = TypeVar("T")


# ---------------------------------------------------------------- helpers


async def in_db(svc: Services, fn: Callable[[Session], T], *, write: bool = False) -> T:
    """Run ``fn(session)`` in one transaction on a worker thread (keeps the event loop free);
    read-only unless ``write`` (read-only transactions never wait for the SQLite write lock)."""

    def run() -> T:
        with session_scope(svc.sessions if write or svc.read_sessions is None else svc.read_sessions) as s:
            return fn(s)

    return await anyio.to_thread.run_sync(run)


def finite(value: Any) -> Any:
    """``value`` with NaN/Infinity replaced by None: JSON (and the store) cannot carry them."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def check_model(svc: Services, model: str | None) -> None:
    """UnknownModel unless ``model`` is empty or the model this server has loaded."""
    name = svc.engine.info["name"]
    if model and model != name:
        raise UnknownModel(f"model '{model}' is not loaded; this server serves '{name}'. "
                           f"Leave 'model' out, or restart with `circuitscope serve --model {model}`")


def analysis_out(row: Any) -> dict[str, Any]:
    """A stored analysis as the API shows it (``schemas.AnalysisOut``)."""
    return {"id": row.id, "slug": row.slug, "url": urls.analysis_url(row.slug),
            "created_at": row.created_at.isoformat() if row.created_at else None,
            "request": row.request, "result": row.payload}


def summary_out(row: Any) -> dict[str, Any]:
    """One line of the recent-analyses list."""
    request = row.request or {}
    return {"id": row.id, "slug": row.slug, "url": urls.analysis_url(row.slug),
            "prompt": str(request.get("prompt", "")), "method": str(request.get("method", "")),
            "created_at": row.created_at.isoformat() if row.created_at else None}


def _analysis_row(s: Session, analysis_id: str) -> Any:
    row = repo.get_result(s, id=analysis_id)
    if row is None or row.kind != "analysis":
        raise NotFound(f"no analysis with id '{analysis_id}'; list recent ones with GET /api/analyses")
    return row


# ---------------------------------------------------------------- analyses


def analysis_key(info: dict, req: AnalysisRequest) -> str:
    """The content key of an analysis request (ig_steps only counts for the ig method)."""
    params = {"k": req.k, **({"ig_steps": req.ig_steps} if req.method == "ig" else {})}
    return repo.content_key(kind="analysis", weights=info["weights_sha256"], prompt=req.prompt,
                            target=req.target, contrast=req.contrast, method=req.method, params=params,
                            engine_version=info["engine_version"])


def _analysis_task(svc: Services, req: AnalysisRequest, key: str, request: dict) -> Callable[[str], Task]:
    """How the worker computes this analysis (the engine call), bound to a job id later."""
    engine, info = svc.engine, svc.engine.info

    def compute(progress, should_cancel) -> dict:
        return finite(engine.analyze(req.prompt, target=req.target, contrast=req.contrast, method=req.method,
                                     k=req.k, ig_steps=req.ig_steps, progress=progress,
                                     should_cancel=should_cancel))

    return lambda job_id: Task(job_id=job_id, key=key, kind="analysis", request=request, compute=compute,
                               model_name=info["name"], weights_sha256=info["weights_sha256"])


def submit_analysis(svc: Services, req: AnalysisRequest) -> tuple[int, dict]:
    """200 + the stored analysis on a cache hit; otherwise validate, queue a job, 202 + the job."""
    check_model(svc, req.model)
    info = svc.engine.info
    key = analysis_key(info, req)
    with session_scope(svc.sessions) as s:
        row = repo.get_result_by_key(s, key=key)
        if row is not None:
            return 200, {"status": "done", "analysis": analysis_out(row)}
    svc.engine.check_prompt(req.prompt)  # fail fast: 400/413 now rather than a failed job later
    for role, text in (("target", req.target), ("contrast", req.contrast)):
        if text:
            svc.engine.token_id(text, role)
    request = {**req.model_dump(), "model": info["name"]}
    task = _analysis_task(svc, req, key, request)
    job_id = svc.jobs.submit(task, key=key, kind="analysis", request=request)
    return 202, {"status": "queued", "job": svc.jobs.snapshot(job_id)}


def get_analysis(s: Session, analysis_id: str) -> dict:
    return analysis_out(_analysis_row(s, analysis_id))


def recent_analyses(s: Session, limit: int = 20) -> list[dict]:
    return [summary_out(row) for row in repo.list_results(s, kind="analysis", limit=limit)]


# ---------------------------------------------------------------- ablations


def _ablation(data: dict) -> Ablation:
    """Parse an ablation from the wire (BadInput for malformed ids)."""
    return Ablation(neurons=parse_neuron_list(data.get("neurons") or []), mode=data.get("mode", "zero"),
                    factor=float(data.get("factor") or 0.0),
                    positions=tuple(data["positions"]) if data.get("positions") is not None else None)


async def ablate(svc: Services, analysis_id: str, body: AblationRequest) -> dict:
    """Baseline vs ablated for a stored analysis' prompt, cached under its content key."""
    row = await in_db(svc, lambda s: analysis_out(_analysis_row(s, analysis_id)))
    return await cached_ablation(svc, row, _ablation(body.model_dump()), body.continuation)


async def cached_ablation(svc: Services, analysis: dict, ablation: Ablation, continuation: int = 8) -> dict:
    """``{"id", "result"}``: the stored ablation, or compute it under the engine lock and store it."""
    request = analysis["request"] or {}
    return await stored_ablation(svc, prompt=analysis["result"]["prompt"], target=request.get("target"),
                                 contrast=request.get("contrast"), ablation=ablation, continuation=continuation,
                                 parent_id=analysis["id"], request={"analysis_id": analysis["id"]})


async def stored_ablation(svc: Services, *, prompt: str, target: str | None, contrast: str | None,
                          ablation: Ablation, continuation: int, parent_id: str, request: dict) -> dict:
    """``{"id", "result"}`` for ``ablation`` on ``prompt``: a cache hit, or computed and stored under the
    content key (prompt, target, contrast, ablation, continuation), so analyses and circuits share it."""
    engine, info = svc.engine, svc.engine.info
    for nid in ablation.neurons:
        engine.check_neuron(nid)
    key = repo.content_key(kind="ablation", weights=info["weights_sha256"], prompt=prompt, target=target,
                           contrast=contrast, ablation=ablation.to_dict(), continuation=continuation,
                           engine_version=info["engine_version"])
    hit = await in_db(svc, lambda s: repo.get_result_by_key(s, key=key))
    if hit is not None:
        return {"id": hit.id, "result": hit.payload}
    payload = finite(await svc.gate.run(engine.ablate, prompt, ablation, target=target, contrast=contrast,
                                        continuation=continuation))
    stored = {**request, "ablation": ablation.to_dict(), "continuation": continuation}
    row = await in_db(svc, partial(_save_ablation, key=key, info=info, request=stored, payload=payload,
                                   parent_id=parent_id), write=True)
    return {"id": row.id, "result": row.payload}


def _save_ablation(s: Session, *, key: str, info: dict, request: dict, payload: dict, parent_id: str) -> Any:
    return repo.save_result(s, key=key, kind="ablation", model_name=info["name"],
                            weights_sha256=info["weights_sha256"], request=request, payload=payload,
                            parent_id=parent_id)


# ---------------------------------------------------------------- neurons and models


def neuron_id(svc: Services, model: str, text: str) -> NeuronId:
    """Parse and range-check a neuron id of the loaded model (404 for another model)."""
    check_model(svc, model)
    return svc.engine.check_neuron(NeuronId.parse(text))


async def neuron_view(svc: Services, model: str, text: str, analysis_id: str | None) -> dict:
    """The neuron's decoding; with an analysis, also its activations on that prompt and its impact there."""
    nid = neuron_id(svc, model, text)
    neuron = await svc.gate.run(svc.engine.neuron, nid)
    if not analysis_id:
        return {"neuron": neuron, "activations": None, "impacts": None}
    row = await in_db(svc, lambda s: analysis_out(_analysis_row(s, analysis_id)))
    acts = await svc.gate.run(svc.engine.neuron_activations, row["result"]["prompt"], nid)
    node = next((n for n in row["result"].get("nodes", []) if n.get("id") == str(nid)), None)
    impacts = {row["result"]["method"]: node["impact"]} if node is not None else None
    return {"neuron": neuron, "activations": {"tokens": acts["tokens"], "activations": acts["activations"]},
            "impacts": impacts}


def models(svc: Services) -> list[dict]:
    """The models in the store, with the loaded one marked (and listed even if it lives elsewhere)."""
    info = svc.engine.info
    rows = {m["name"]: {"name": m["name"], "prepared": bool(m["prepared"]), "loaded": False}
            for m in list_models(svc.settings.model_dir)}
    rows[info["name"]] = {**model_summary(svc), "prepared": True, "loaded": True}
    return list(rows.values())


def model_summary(svc: Services) -> dict:
    """The loaded model in a few facts (for page headers)."""
    info = svc.engine.info
    return {k: info[k] for k in ("name", "n_layers", "neurons_per_layer", "arch")}


def public_settings(svc: Services) -> dict:
    """Settings a page may show (never the database URL)."""
    return {"model": svc.engine.info["name"], "max_prompt_tokens": svc.engine.info["max_prompt_tokens"]}


# ---------------------------------------------------------------- views and permalinks


def _clean_state(svc: Services, state: ViewState) -> dict:
    """Canonical view state: neuron ids parsed, range-checked and sorted (circuit-only fields dropped)."""
    data = state.model_dump(exclude={"grp", "gabl", "mode", "factor"})
    data["sel"] = [str(svc.engine.check_neuron(n)) for n in parse_neuron_list(state.sel)] if state.sel else []
    if state.abl is not None and state.abl.neurons:
        ablation = _ablation(state.abl.model_dump())
        for nid in ablation.neurons:
            svc.engine.check_neuron(nid)
        data["abl"] = {k: v for k, v in ablation.to_dict().items() if k != "positions"}
    else:
        data["abl"] = None
    return data


def create_permalink(svc: Services, s: Session, body: PermalinkRequest) -> dict:
    """Save (analysis, view state) and return the shareable URL (circuits: ``circuits.create_permalink``)."""
    row = _analysis_row(s, body.analysis_id)
    link = repo.create_permalink(s, result_id=row.id, state=_clean_state(svc, body.state))
    return {"slug": link.slug, "url": urls.permalink_url(row.slug, link.slug)}


def state_from_query(svc: Services, query: dict[str, str]) -> dict:
    """A view state from ``?sel=&abl=&mode=&factor=&thr=&method=`` (all optional)."""
    try:
        state = ViewState(
            sel=[p for p in query.get("sel", "").split(",") if p.strip()],
            abl={"neurons": [p for p in query.get("abl", "").split(",") if p.strip()],
                 "mode": query.get("mode", "zero"), "factor": query.get("factor", 0.0)},
            thr=query.get("thr", 0.0), method=query.get("method") or None,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadInput(f"the view in the URL is malformed ({where}: {first.get('msg')}); "
                       "use ?sel=L1.N2,L3.N4&abl=L1.N2&mode=zero|mean|scale&factor=0.5&thr=0.1") from exc
    return _clean_state(svc, state)


async def load_view(svc: Services, slug: str, view: str | None, *, kind: str, out: Callable[[Any], dict],
                    missing: str, missing_view: str) -> tuple[dict, dict | None]:
    """The stored result of ``kind`` at ``slug`` (as ``out`` shows it) and the saved view state ``view``
    (None without ``?v=``); ``NotFound(missing)`` / ``NotFound(missing_view)`` when either is not there.
    Shared by ``/a/{slug}`` and ``/c/{slug}`` (``circuits.circuit_view``)."""

    def load(s: Session) -> tuple[dict, dict | None]:
        row = repo.get_result_by_slug(s, slug=slug)
        if row is None or row.kind != kind:
            raise NotFound(missing)
        if not view:
            return out(row), None
        link = repo.get_permalink(s, slug=view)
        if link is None or link.result_id != row.id:
            raise NotFound(missing_view)
        return out(row), dict(link.state)

    return await in_db(svc, load)


async def analysis_view(svc: Services, slug: str, view: str | None, query: dict[str, str]) -> dict:
    """``/a/{slug}``: the analysis, its view state (saved permalink or query), and that state's ablation."""
    analysis, state = await load_view(
        svc, slug, view, kind="analysis", out=analysis_out,
        missing=f"no analysis at /a/{slug}; the link may be mistyped, or from another server",
        missing_view=f"no saved view '{view}' for this analysis; drop ?v= to open the plain analysis")
    if state is None:
        state = state_from_query(svc, query)
    ablation = None
    abl = state.get("abl")
    if abl and abl.get("neurons"):
        ablation = (await cached_ablation(svc, analysis, _ablation(abl)))["result"]
    return {"analysis": analysis, "state": state, "ablation": ablation}
