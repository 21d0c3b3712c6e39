"""One renderer for every error: RFC 9457 ``application/problem+json``.

Nothing internal reaches the caller: no stack traces, exception texts of unexpected errors,
SQL, or echoed input (validation errors list where and what, never the rejected value,
which may be a password).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from fleetward.core.errors import (
    PROBLEM_TYPE_PREFIX,
    FleetwardError,
    InvalidInput,
    JsonValue,
)
from fleetward.observability.logging import get_logger
from fleetward.store.busy import StoreBusy, is_store_busy

PROBLEM_JSON = "application/problem+json"

_log = get_logger("fleetward.api")

_HTTP_CODES = {
    400: ("bad-request", "Bad request"),
    401: ("unauthenticated", "Authentication required"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    406: ("not-acceptable", "Not acceptable"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
}


def problem_response(
    body: dict[str, JsonValue], status: int, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


async def _fleetward_error(request: Request, exc: Exception) -> JSONResponse:
    if not isinstance(exc, FleetwardError):
        return await _unexpected(request, exc)
    if exc.status >= 500:
        _log.error("request failed", problem=exc.code, path=request.url.path)
    return problem_response(exc.to_problem(request.url.path), exc.status, exc.headers or None)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    errors: list[JsonValue] = []
    if isinstance(exc, RequestValidationError):
        for error in exc.errors():
            # Only where and what: the rejected input is never echoed.
            errors.append(
                {
                    "location": [str(part) for part in error.get("loc", ())],
                    "problem": str(error.get("type", "invalid")),
                    "message": str(error.get("msg", "invalid value")),
                }
            )
    problem = InvalidInput(
        "the request does not match the expected shape", reason="schema", extra={"errors": errors}
    )
    return problem_response(problem.to_problem(request.url.path), problem.status)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    code, title = _HTTP_CODES.get(status, ("http-error", "HTTP error"))
    headers: dict[str, str] | None = None
    if isinstance(exc, StarletteHTTPException) and exc.headers:
        headers = dict(exc.headers)
    body: dict[str, JsonValue] = {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": title,
        "status": status,
        "detail": title,
        "instance": request.url.path,
    }
    return problem_response(body, status, headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    return unexpected_problem(exc, request.url.path)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    """A busy store is a 503 the client may retry; any other store error is a 500."""
    if is_store_busy(exc):
        return await _fleetward_error(request, StoreBusy())
    return unexpected_problem(exc, request.url.path)


def unexpected_problem(exc: BaseException, path: str) -> JSONResponse:
    """A 500 problem for an error nobody anticipated.

    Logged with its type only: the exception text may carry data we must not leak, and no
    traceback is handed to the server (which would log the text).
    """
    _log.error("unexpected error", error_type=type(exc).__name__, path=path)
    problem = FleetwardError("the server could not complete the request")
    return problem_response(problem.to_problem(path), 500)


def install(app: FastAPI) -> None:
    handlers: list[tuple[Any, Any]] = [
        (FleetwardError, _fleetward_error),
        (RequestValidationError, _validation_error),
        (StarletteHTTPException, _http_error),
        (DBAPIError, _store_error),
        (PoolTimeout, _store_error),
    ]
    for exc_class, handler in handlers:
        app.add_exception_handler(exc_class, handler)
