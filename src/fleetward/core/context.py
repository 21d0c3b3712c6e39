"""Per-request context for audit records and logs: request id, trace id, client IP, and,
once ``api.auth.authenticate`` has verified a token, the facts of that token.

The context object is created once per request by the request-identity middleware and is
shared (not copied) by every task that serves the request, so facts bound by a dependency are
seen by every ``record()`` that follows in the same request.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CallerFacts:
    """What a verified access token says about the caller: ids and codes only, never the
    token itself. ``workload_id`` is the client id when the token stands for no person."""

    client_id: str
    token_id: str
    token_family: str | None
    subject_type: str
    subject_id: str
    tenant_id: str
    acr: str
    amr: str
    scope: str
    surface: str
    endpoint: str | None

    @property
    def workload_id(self) -> str | None:
        return self.client_id if self.subject_type == "workload" else None


@dataclass(slots=True)
class RequestContext:
    request_id: str
    trace_id: str
    source_ip: str | None = None
    # Bound once per request by authenticate(); None for anonymous requests.
    caller: CallerFacts | None = field(default=None)

    def bind_caller(self, facts: CallerFacts) -> None:
        self.caller = facts


_current: ContextVar[RequestContext | None] = ContextVar("fleetward_request", default=None)


def current_request() -> RequestContext | None:
    return _current.get()


def set_request(context: RequestContext | None) -> None:
    _current.set(context)
