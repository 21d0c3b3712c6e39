"""Per-request context (request id, trace id) for audit records and logs."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RequestContext:
    request_id: str
    trace_id: str


_current: ContextVar[RequestContext | None] = ContextVar("fleetward_request", default=None)


def current_request() -> RequestContext | None:
    return _current.get()


def set_request(context: RequestContext | None) -> None:
    _current.set(context)
