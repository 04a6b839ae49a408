"""Clear error bodies for the template's apps: no stack trace, no echo of the input, always encodable.

- a downstream the client gave up on: 503 (504 on its deadline), ``Retry-After`` while its breaker is open;
- a database error: 503 ``database_unavailable`` (cannot connect) or 500 ``database_error``, one log line
  with the error type, never the SQL or its parameters;
- a request that fails validation: 422 with ``loc``, ``msg`` and ``type`` only (FastAPI's default echoes
  the ``input``: a password that is too short would come back in the body), ASCII-escaped so a lone
  surrogate in a JSON key cannot make the error itself a 500;
- text that cannot be encoded (a lone surrogate reaching ``str.encode``): 422 ``invalid_text``.

:data:`ERROR_RESPONSES` documents these shapes in the OpenAPI schema.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import AfterValidator, BaseModel, ConfigDict
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError

from ._logs import get_logger
from ._resilience import CircuitOpenError, ServiceCallError

__all__ = ["ERROR_RESPONSES", "EncodableStr", "ErrorBody", "add_error_handlers", "responses_for"]

_log = get_logger("otel_dist.errors")


class ErrorBody(BaseModel):
    """Every error body otel-dist or FastAPI writes has one of these members."""

    model_config = ConfigDict(extra="allow")
    detail: Any = None
    error: str | None = None
    reason: str | None = None


def _encodable(value: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from None
    return value


EncodableStr = Annotated[str, AfterValidator(_encodable)]
"""``str`` that can be encoded as UTF-8: a lone surrogate is a 422, not a 500 deep in a driver or a hash."""


def _doc(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _doc("The body could not be read (not UTF-8, not JSON)"),
    401: _doc('Missing, invalid or expired service token (`WWW-Authenticate: Bearer error="invalid_token"`)'),
    403: _doc("The calling service is not allowed"),
    500: _doc("Internal error (no details)"),
    503: _doc("A dependency (database or downstream service) is unavailable"),
    504: _doc("A downstream service did not answer in time"),
}


def responses_for(*, protected: bool) -> dict[int | str, dict[str, Any]]:
    """The app-wide documented error responses (401/403 only where service tokens are checked)."""
    return {code: doc for code, doc in ERROR_RESPONSES.items() if protected or code not in (401, 403)}


class _AsciiJSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=True, separators=(",", ":")).encode("ascii")


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(CircuitOpenError, _circuit_open)
    app.add_exception_handler(ServiceCallError, _call_failed)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(UnicodeEncodeError, _invalid_text)
    app.add_exception_handler(SQLAlchemyError, _database_error)


async def _circuit_open(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, CircuitOpenError)
    return JSONResponse(
        {
            "error": "dependency_unavailable",
            "dependency": exc.target,
            "detail": f"{exc.target} is unavailable: its circuit breaker is open; retry later",
        },
        status_code=503,
        headers={"retry-after": str(_retry_after(request, exc.target))},
    )


async def _call_failed(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceCallError)
    return JSONResponse(
        {
            "error": "dependency_failed",
            "dependency": exc.target,
            "reason": exc.reason,
            "detail": f"{exc.target} did not answer successfully after {exc.attempts} attempt(s)",
        },
        status_code=504 if exc.reason == "deadline" else 503,
    )


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))[:300], "type": str(e.get("type", ""))}
        for e in exc.errors()[:50]
    ]
    return _AsciiJSON({"detail": errors}, status_code=422)


async def _invalid_text(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse(
        {"error": "invalid_text", "detail": "the request carries text that is not valid Unicode"}, status_code=422
    )


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    unavailable = isinstance(exc, OperationalError)
    _log.error(
        "database error",
        **{"error.type": type(cause).__qualname__, "http.route": getattr(request.scope.get("route"), "path", None)},
    )
    body = (
        {"error": "database_unavailable", "detail": "the database cannot be reached; retry later"}
        if unavailable
        else {"error": "database_error", "detail": "the database could not complete the request"}
    )
    return JSONResponse(body, status_code=503 if unavailable else 500)


def _retry_after(request: Request, target: str) -> int:
    """Whole seconds until the breaker lets a probe through, at most: its open timeout."""
    client = getattr(request.app.state, "clients", {}).get(target)
    return max(1, math.ceil(client.config.breaker_timeout)) if client is not None else 1
