"""The one URL builder: every link the service hands out is made here (datasette's url_builder idea).

Each view has an HTML page and a ``.json`` twin; ``json=True`` gives the twin.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode


def _seg(value: object) -> str:
    """One path segment, percent-encoded."""
    return quote(str(value), safe="")


def analysis_url(slug: str, *, json: bool = False, view: str | None = None) -> str:
    """``/a/<slug>`` (or ``.json``), optionally restoring the saved view ``v``."""
    url = f"/a/{_seg(slug)}{'.json' if json else ''}"
    return f"{url}?{urlencode({'v': view})}" if view else url


def circuit_url(slug: str, *, json: bool = False, view: str | None = None) -> str:
    """``/c/<slug>`` (or ``.json``), optionally restoring the saved view ``v``."""
    url = f"/c/{_seg(slug)}{'.json' if json else ''}"
    return f"{url}?{urlencode({'v': view})}" if view else url


def result_url(kind: str, slug: str, *, json: bool = False, view: str | None = None) -> str:
    """The page of a stored result: ``/c/...`` for a circuit, ``/a/...`` for an analysis."""
    build = circuit_url if kind == "circuit" else analysis_url
    return build(slug, json=json, view=view)


def permalink_url(result_slug: str, permalink_slug: str, *, kind: str = "analysis") -> str:
    """The shareable link: the analysis (or circuit) page with its saved view state."""
    return result_url(kind, result_slug, view=permalink_slug)


def neuron_url(model: str, neuron_id: object, *, json: bool = False) -> str:
    """``/m/<model>/n/<L3.N1207>`` (or ``.json``)."""
    return f"/m/{_seg(model)}/n/{_seg(neuron_id)}{'.json' if json else ''}"


def job_url(job_id: object) -> str:
    """The API resource of a job."""
    return f"/api/jobs/{_seg(job_id)}"


def job_events_url(job_id: object) -> str:
    """The job's server-sent event stream."""
    return f"{job_url(job_id)}/events"


def api_analysis_url(analysis_id: object) -> str:
    """The API resource of a stored analysis."""
    return f"/api/analyses/{_seg(analysis_id)}"


def api_circuit_url(circuit_id: object) -> str:
    """The API resource of a stored circuit."""
    return f"/api/circuits/{_seg(circuit_id)}"
