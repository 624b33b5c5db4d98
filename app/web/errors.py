"""The one place where failures become HTTP answers.

Every error leaves as ``{"error": {"code": ..., "message": ...}}`` with a 4xx status (or 503 with
``Retry-After`` when the service is overloaded), and the message says what is wrong and what to do.
Engine errors carry no HTTP codes; the table below gives them one. Page requests (HTML) get the same
information rendered through ``error.html``. The catch-all 500 handler is a last resort that the
tests show is never reached.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response

from app.engine import errors as E

log = logging.getLogger("circuitscope.web")


class WebError(Exception):
    """A client-facing error raised by the web layer itself (unknown ids, overload)."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, retry_after: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        if code is not None:
            self.code = code


class NotFound(WebError):
    """An analysis, job, permalink or page that does not exist."""

    status = 404
    code = "not_found"


class Unprocessable(WebError):
    """A well-formed request naming something this resource does not have (a group, a layer window)."""

    status = 422
    code = "invalid_request"


class QueueFull(WebError):
    """The job queue is at its limit; the client should retry later."""

    status = 503
    code = "queue_full"


# Engine error class -> (HTTP status, error code). Looked up along the exception's MRO.
ENGINE_STATUS: dict[type[E.EngineError], tuple[int, str]] = {
    E.PromptTooLong: (413, "prompt_too_long"),
    E.TargetNotSingleToken: (422, "target_not_single_token"),
    E.NeuronOutOfRange: (422, "neuron_out_of_range"),
    E.BadInput: (400, "bad_input"),
    E.UnknownModel: (404, "unknown_model"),
    E.UnsupportedArchitecture: (422, "unsupported_architecture"),
    E.Cancelled: (409, "cancelled"),
    E.EngineError: (400, "engine_error"),
}

HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}


def engine_status(exc: E.EngineError) -> tuple[int, str]:
    """Status and code for an engine error (most specific class wins)."""
    for cls in type(exc).__mro__:
        if cls in ENGINE_STATUS:
            return ENGINE_STATUS[cls]
    return 400, "engine_error"


def error_body(code: str, message: str) -> dict[str, Any]:
    """The wire shape of every error."""
    return {"error": {"code": code, "message": message}}


def _wants_html(request: Request) -> bool:
    """True for browser page requests (not the API, not a .json twin)."""
    path = request.url.path
    if path.startswith(("/api/", "/static/")) or path.endswith(".json") or path in ("/healthz", "/docs"):
        return False
    return "text/html" in request.headers.get("accept", "")


def respond(request: Request, status: int, code: str, message: str,
            retry_after: int | None = None) -> Response:
    """Build the error response: JSON for the API, the error page for browsers."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    templates = getattr(request.app.state, "templates", None)
    if templates is not None and _wants_html(request):
        try:
            return templates.TemplateResponse(
                request,
                "error.html",
                {"status": status, "code": code, "message": message,
                 "error": {"code": code, "message": message}},
                status_code=status,
                headers=headers,
            )
        except Exception:  # a broken error page must not hide the error itself
            log.exception("error.html failed to render")
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


def _describe_validation(exc: RequestValidationError) -> tuple[int, str, str]:
    """Turn pydantic's error list into one readable sentence (never echoing the raw input)."""
    errors = exc.errors()
    if any(err.get("type") == "json_invalid" for err in errors):
        first = next(err for err in errors if err.get("type") == "json_invalid")
        detail = (first.get("ctx") or {}).get("error", "invalid JSON")
        where = first.get("loc", [None, None])[-1]
        return 400, "malformed_json", (
            f"the request body is not valid JSON ({detail} at character {where}); "
            'send a JSON object such as {"prompt": "The capital of France is"}'
        )
    too_long = next((e for e in errors if e.get("type") == "string_too_long"
                     and tuple(e.get("loc", ()))[-1:] == ("prompt",)), None)
    if too_long is not None:
        limit = (too_long.get("ctx") or {}).get("max_length")
        return 413, "prompt_too_long", (f"the prompt is longer than {limit} characters; shorten it "
                                        "(the model's token limit applies too)")
    parts = []
    for err in errors[:3]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body",)) or "body"
        msg = err.get("msg", "is invalid")
        if err.get("type") == "model_attributes_type" and loc == "body":
            msg = "expected a JSON object; send Content-Type: application/json and a JSON object body"
        parts.append(f"{loc}: {msg}")
    more = f" (and {len(errors) - 3} more problems)" if len(errors) > 3 else ""
    return 422, "invalid_request", "; ".join(parts) + more + ". Fix these fields and retry; see /docs."


async def _on_engine_error(request: Request, exc: E.EngineError) -> Response:
    status, code = engine_status(exc)
    return respond(request, status, code, str(exc) or code.replace("_", " "))


async def _on_web_error(request: Request, exc: WebError) -> Response:
    return respond(request, exc.status, exc.code, exc.message, exc.retry_after)


async def _on_validation(request: Request, exc: RequestValidationError) -> Response:
    status, code, message = _describe_validation(exc)
    return respond(request, status, code, message)


async def _on_http(request: Request, exc: HTTPException) -> Response:
    code = HTTP_CODES.get(exc.status_code, f"http_{exc.status_code}")
    if exc.status_code == 404:
        message = f"nothing at {request.url.path}; the API is documented at /docs"
    elif exc.status_code == 400 and "parsing the body" in str(exc.detail):
        code, message = "bad_body", "the request body could not be decoded; send UTF-8 encoded JSON"
    else:
        message = str(exc.detail)
    retry = None
    if exc.headers and "Retry-After" in exc.headers:
        retry = int(exc.headers["Retry-After"])
    return respond(request, exc.status_code, code, message, retry)


async def _on_db_busy(request: Request, exc: Exception) -> Response:
    log.warning("database busy: %s", exc)
    return respond(request, 503, "busy", "the database is busy; retry in a moment", retry_after=1)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    body = error_body("internal", "an unexpected error occurred; it was logged, please report it")
    return JSONResponse(body, status_code=500)


def install(app: FastAPI) -> None:
    """Register every handler on the app."""
    app.add_exception_handler(E.EngineError, _on_engine_error)
    app.add_exception_handler(WebError, _on_web_error)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(OperationalError, _on_db_busy)
    app.add_exception_handler(PoolTimeout, _on_db_busy)  # every connection busy: overload, not a bug
    app.add_exception_handler(Exception, _on_unexpected)
