"""What the circuit routes do: get-or-compute NeurFlow circuits, group ablations, circuit views, permalinks.

The analysis flow (``app.web.analyses``) is the model, step for step:

- Content addressing. A circuit is stored under ``circuit_key``: the model's weights hash, the prompt
  set, target, contrast, the parameters (tau, k, the *resolved* layer window, fast, ig_steps), the
  reference corpus' digest (the shipped corpus is hashed too, so editing it invalidates old circuits) and
  the engine version. ``layers`` "6", "24-29" and nothing all resolve to the same window on SmolLM2, so
  they share one stored circuit. A hit is one indexed read (200); otherwise the request is checked cheaply
  (tokens, target, window) and queued as a job of kind ``circuit`` (202). Its progress goes through the
  same server-sent events as analyses; the ``done`` event's ``url`` is ``/c/<slug>``.
- Group ablation. Groups become the union of their member neurons (``app.engine.circuits.group_ablation``)
  plus any extra neurons, run by ``engine.ablate`` on the circuit's first prompt with the circuit's
  target and contrast, and stored under the same content key as any ablation of that prompt (so an
  analysis and a circuit of one prompt share their ablations); a new row's parent is the circuit.
- Views. ``/c/<slug>`` takes its state from a saved permalink (``?v=``) or from the query: ``grp`` (the
  selected group), ``gabl`` (ablated groups, comma-separated), ``abl`` (extra ablated neurons), ``mode``
  and ``factor``. The canonical state is ``{"grp", "gabl", "neurons", "mode", "factor"}``; group ids must
  exist in the circuit (422 ``unknown_group`` otherwise).
- Warming. ``warm_in_background`` fills the engine's reference-corpus activations for the default
  window in a daemon thread after start-up, once the model has been idle for a few seconds (it takes the
  engine lock only when free, for one corpus pass), so the first circuit does not pay for it and
  readiness is not delayed.

The stored request never holds a custom corpus itself (up to ~1 MB), only its digest and size.
"""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from collections.abc import Callable
from functools import cache
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from app.engine import circuits as engine_circuits
from app.engine.errors import BadInput
from app.engine.ids import Ablation, NeuronId, parse_neuron_list
from app.store import repo
from app.store.session import session_scope
from app.web import analyses, urls
from app.web.analyses import check_model, finite, in_db
from app.web.deps import Services
from app.web.errors import NotFound, Unprocessable
from app.web.jobs import Task
from app.web.schemas import GROUP_PATTERN, CircuitAblationRequest, CircuitRequest, PermalinkRequest, ViewState

log = logging.getLogger("circuitscope.circuits")

CONTINUATION = 8  # greedy tokens of a view's ablation (the API's default too)
_GROUP = re.compile(GROUP_PATTERN)


# ---------------------------------------------------------------- helpers


def circuit_out(row: Any) -> dict[str, Any]:
    """A stored circuit as the API shows it (``schemas.CircuitOut``)."""
    return {"id": row.id, "slug": row.slug, "url": urls.circuit_url(row.slug),
            "created_at": row.created_at.isoformat() if row.created_at else None,
            "request": row.request, "result": row.payload}


def _circuit_row(s: Session, circuit_id: str) -> Any:
    row = repo.get_result(s, id=circuit_id)
    if row is None or row.kind != "circuit":
        raise NotFound(f"no circuit with id '{circuit_id}'; circuits are created by POST /api/circuits")
    return row


@cache
def shipped_corpus_digest() -> str:
    """sha256 of the shipped reference corpus (read once per process)."""
    return _digest(engine_circuits.reference_texts())


def _digest(texts: list[str]) -> str:
    return hashlib.sha256(repo.canonical_json(texts).encode("utf-8")).hexdigest()


def window(svc: Services, layers: str | None) -> tuple[int, int]:
    """The layer window (lo, hi) that ``layers`` means on the served model (422 when it does not fit)."""
    try:
        return engine_circuits.resolve_window(layers, svc.engine.info["n_layers"])
    except BadInput as exc:
        raise Unprocessable(str(exc), code="invalid_layers") from exc


def _group_index(result: dict) -> dict[str, int]:
    """Every group id of a circuit (and "root") -> its layer, for checks and canonical order."""
    index = {g["id"]: int(g["layer"]) for g in result.get("groups", [])}
    index["root"] = int(result.get("params", {}).get("layers", [0, 0])[-1]) + 1
    return index


def _order(group_id: str, index: dict[str, int]) -> tuple[int, int]:
    """Top layer first, then rank (the order the circuit lists them); root above everything."""
    rank = int(group_id.split(".", 1)[1]) if "." in group_id else -1
    return -index[group_id], rank


def check_groups(result: dict, groups: list[str]) -> list[str]:
    """Groups of this circuit, deduplicated, in canonical order; 422 ``unknown_group`` otherwise."""
    index = _group_index(result)
    unknown = [g for g in dict.fromkeys(groups) if g not in index]
    if unknown:
        known = ", ".join(g["id"] for g in result.get("groups", [])[:10])
        raise Unprocessable(f"group {', '.join(unknown[:5])} is not in this circuit; its groups are {known}"
                            f"{'…' if len(result.get('groups', [])) > 10 else ''} (or root)", code="unknown_group")
    return sorted(set(groups), key=lambda g: _order(g, index))


def group_ablation(svc: Services, result: dict, groups: list[str], neurons: list[str], mode: str,
                   factor: float) -> Ablation:
    """The union of the groups' member neurons and the extra neurons, as one Ablation (range-checked)."""
    members: list[NeuronId] = []
    for group in check_groups(result, groups):
        members.extend(engine_circuits.group_ablation(result, group, mode, factor).neurons)
    extra = parse_neuron_list(neurons) if neurons else []
    for nid in extra:
        svc.engine.check_neuron(nid)
    return Ablation(neurons=tuple(members) + tuple(extra), mode=mode, factor=float(factor))


# ---------------------------------------------------------------- circuits


def circuit_key(info: dict, req: CircuitRequest, lo: int, hi: int) -> str:
    """The content key of a circuit request (ig_steps counts only without ``fast``)."""
    corpus = req.corpus_texts()
    params = {"tau": req.tau, "k": req.k, "layers": [lo, hi], "fast": req.fast,
              **({} if req.fast else {"ig_steps": 16})}
    corpus_id = {"shipped": True, "sha256": shipped_corpus_digest()} if corpus is None else \
        {"shipped": False, "sha256": _digest(corpus)}
    return repo.content_key(kind="circuit", weights=info["weights_sha256"], prompts=req.prompt_set(),
                            target=req.target, contrast=req.contrast, params=params, corpus=corpus_id,
                            engine_version=info["engine_version"])


def _stored_request(info: dict, req: CircuitRequest, lo: int, hi: int) -> dict:
    """What the job and the result row keep of the request (a custom corpus only by digest and size)."""
    prompts, corpus = req.prompt_set(), req.corpus_texts()
    return {"prompt": prompts[0], "prompts": prompts, "target": req.target, "contrast": req.contrast,
            "tau": req.tau, "k": req.k, "layers": f"{lo}-{hi}", "fast": req.fast,
            "corpus": None if corpus is None else {"texts": len(corpus), "sha256": _digest(corpus)},
            "model": info["name"]}


def _circuit_task(svc: Services, req: CircuitRequest, key: str, request: dict, lo: int,
                  hi: int) -> Callable[[str], Task]:
    """How the worker computes this circuit (the engine call), bound to a job id later."""
    engine, info = svc.engine, svc.engine.info
    prompts, corpus = req.prompt_set(), req.corpus_texts()

    def compute(progress, should_cancel) -> dict:
        return finite(engine.circuit(prompts if len(prompts) > 1 else prompts[0], target=req.target,
                                     contrast=req.contrast, tau=req.tau, k=req.k, fast=req.fast,
                                     layers=(lo, hi), corpus=corpus, progress=progress,
                                     should_cancel=should_cancel))

    return lambda job_id: Task(job_id=job_id, key=key, kind="circuit", request=request, compute=compute,
                               model_name=info["name"], weights_sha256=info["weights_sha256"])


def submit_circuit(svc: Services, req: CircuitRequest) -> tuple[int, dict]:
    """200 + the stored circuit on a cache hit; otherwise validate, queue a job, 202 + the job."""
    check_model(svc, req.model)
    info = svc.engine.info
    lo, hi = window(svc, req.layers)
    if req.tau > info["neurons_per_layer"]:
        raise Unprocessable(f"tau must be at most {info['neurons_per_layer']} (the neurons of a layer)")
    key = circuit_key(info, req, lo, hi)
    with session_scope(svc.read_sessions or svc.sessions) as s:  # a read: no SQLite write lock
        row = repo.get_result_by_key(s, key=key)
        if row is not None:
            return 200, {"status": "done", "circuit": circuit_out(row)}
    for prompt in req.prompt_set():  # fail fast: 400/413 now rather than a failed job later
        svc.engine.check_prompt(prompt)
    for role, text in (("target", req.target), ("contrast", req.contrast)):
        if text:
            svc.engine.token_id(text, role)
    request = _stored_request(info, req, lo, hi)
    job_id = svc.jobs.submit(_circuit_task(svc, req, key, request, lo, hi), key=key, kind="circuit",
                             request=request)
    return 202, {"status": "queued", "job": svc.jobs.snapshot(job_id)}


def get_circuit(s: Session, circuit_id: str) -> dict:
    return circuit_out(_circuit_row(s, circuit_id))


# ---------------------------------------------------------------- group ablations


async def ablate(svc: Services, circuit_id: str, body: CircuitAblationRequest) -> dict:
    """Baseline vs ablated groups (and neurons) on the circuit's first prompt, cached by content key."""
    circuit = await in_db(svc, lambda s: circuit_out(_circuit_row(s, circuit_id)))
    groups = check_groups(circuit["result"], body.groups)
    ablation = group_ablation(svc, circuit["result"], groups, body.neurons, body.mode, body.factor)
    return await _run(svc, circuit, ablation, groups, body.continuation)


async def _run(svc: Services, circuit: dict, ablation: Ablation, groups: list[str], continuation: int) -> dict:
    request = circuit["request"] or {}
    prompt = circuit["result"]["prompts"][0]["prompt"]
    return await analyses.stored_ablation(
        svc, prompt=prompt, target=request.get("target"), contrast=request.get("contrast"), ablation=ablation,
        continuation=continuation, parent_id=circuit["id"], request={"circuit_id": circuit["id"], "groups": groups})


# ---------------------------------------------------------------- views and permalinks


def clean_state(svc: Services, result: dict, state: ViewState) -> dict:
    """Canonical circuit view state: groups checked and ordered, neurons parsed and sorted, mode/factor."""
    mode = state.mode or (state.abl.mode if state.abl is not None else "zero")
    factor = state.factor if state.factor is not None else (state.abl.factor if state.abl is not None else 0.0)
    neurons = parse_neuron_list(state.abl.neurons) if state.abl is not None and state.abl.neurons else []
    for nid in neurons:
        svc.engine.check_neuron(nid)
    grp = check_groups(result, [state.grp])[0] if state.grp else None
    return {"grp": grp, "gabl": check_groups(result, state.gabl),
            "neurons": [str(n) for n in sorted(set(neurons))], "mode": mode,
            "factor": float(factor) if mode == "scale" else 0.0}  # as Ablation normalises it


def _split(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def state_from_query(svc: Services, result: dict, query: dict[str, str]) -> dict:
    """A circuit view state from ``?grp=&gabl=&abl=&mode=&factor=`` (all optional)."""
    groups = _split(query.get("gabl"))
    selected = query.get("grp") or None
    bad = [g for g in [*groups, *([selected] if selected else [])] if not _GROUP.match(g)]
    if bad:
        raise Unprocessable(f"'{bad[0][:40]}' is not a group id; write groups like G29.0 "
                            "(?grp=G29.0&gabl=G29.0,G28.1)", code="unknown_group")
    try:
        state = ViewState(grp=selected, gabl=groups, abl={"neurons": _split(query.get("abl"))},
                          mode=query.get("mode") or None, factor=query.get("factor") or None)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise BadInput(f"the view in the URL is malformed ({where}: {first.get('msg')}); "
                       "use ?grp=G29.0&gabl=G29.0,G28.1&abl=L3.N4&mode=zero|mean|scale&factor=0.5") from exc
    return clean_state(svc, result, state)


async def circuit_view(svc: Services, slug: str, view: str | None, query: dict[str, str]) -> dict:
    """``/c/{slug}``: the circuit, its view state (saved permalink or query), and that state's ablation."""
    circuit, state = await analyses.load_view(
        svc, slug, view, kind="circuit", out=circuit_out,
        missing=f"no circuit at /c/{slug}; the link may be mistyped, or from another server",
        missing_view=f"no saved view '{view}' for this circuit; drop ?v= to open the plain circuit")
    if state is None:
        state = state_from_query(svc, circuit["result"], query)
    ablation = None
    if state.get("gabl") or state.get("neurons"):
        abl = group_ablation(svc, circuit["result"], state["gabl"], state["neurons"], state["mode"],
                             state["factor"])
        ablation = (await _run(svc, circuit, abl, state["gabl"], CONTINUATION))["result"]
    return {"circuit": circuit, "state": state, "ablation": ablation}


def create_permalink(svc: Services, s: Session, body: PermalinkRequest) -> dict:
    """Save (analysis or circuit, view state) and return the shareable URL."""
    row = repo.get_result(s, id=body.analysis_id)
    if row is None or row.kind != "circuit":
        return analyses.create_permalink(svc, s, body)
    link = repo.create_permalink(s, result_id=row.id, state=clean_state(svc, row.payload, body.state))
    return {"slug": link.slug, "url": urls.permalink_url(row.slug, link.slug, kind="circuit")}


# ---------------------------------------------------------------- warming


def warm_in_background(svc: Services, stop: threading.Event, *, idle_s: float = 5.0, poll_s: float = 0.5,
                       give_up_s: float = 900.0) -> threading.Thread | None:
    """Fill the shipped corpus' activations for the default window in a daemon thread, once the model has
    been idle for ``idle_s`` (no job waiting, the engine lock free at every poll). Readiness is never
    delayed; the lock is taken only when free, for one corpus pass (~5 s on SmolLM2 with 2 idle cores), which
    the first circuit would otherwise pay inside its job. Returns the thread (None when the engine has no
    lock to respect); shut-down sets ``stop`` and joins it."""
    engine = svc.engine
    lock = getattr(engine, "lock", None)
    if lock is None or not hasattr(engine, "n_layers"):
        return None

    def idle() -> bool:
        if svc.jobs.queued() or not lock.acquire(blocking=False):
            return False
        lock.release()
        return True

    def run() -> None:
        deadline = time.monotonic() + give_up_s
        quiet_since = time.monotonic()
        while not stop.wait(poll_s):
            now = time.monotonic()
            if now > deadline:
                log.info("gave up warming the circuit corpus: the model stayed busy")
                return
            if not idle():
                quiet_since = now
                continue
            if now - quiet_since < idle_s or not lock.acquire(blocking=False):
                continue
            try:
                if stop.is_set():
                    return
                seconds = engine_circuits.warm(engine)
            except Exception:  # warming is an optimisation: the first circuit computes it instead
                log.exception("warming the circuit corpus failed; circuits will compute it on demand")
                return
            finally:
                lock.release()
            log.info("circuit corpus warmed in %.1f s", seconds)
            return

    thread = threading.Thread(target=run, name="circuitscope-warm", daemon=True)
    thread.start()
    return thread
