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


def permalink_url(analysis_slug: str, permalink_slug: str) -> str:
    """The shareable link: the analysis page with its saved view state."""
    return analysis_url(analysis_slug, view=permalink_slug)


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
