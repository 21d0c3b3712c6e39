"""Request identity: a request id and a W3C trace context on every request and response.

Pure ASGI (no BaseHTTPMiddleware) to keep per-request overhead to a few microseconds.
A caller-supplied id is accepted only when it is well formed, so it can never inject text
into logs or headers.
"""

from __future__ import annotations

import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetward.api.problems import unexpected_problem
from fleetward.core.context import RequestContext, set_request
from fleetward.observability.logging import bind_request_context, clear_request_context

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, flags) of a valid version-00 traceparent, else None."""
    if not value:
        return None
    match = _TRACEPARENT_RE.fullmatch(value.strip())
    if match is None or match.group(1) == _ZERO_TRACE or match.group(2) == _ZERO_SPAN:
        return None
    return match.group(1), match.group(3)


class RequestIdentityMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        supplied_id = headers.get("x-request-id", "")
        request_id = supplied_id if _REQUEST_ID_RE.fullmatch(supplied_id) else secrets.token_hex(8)
        parent = parse_traceparent(headers.get("traceparent"))
        trace_id, flags = parent if parent else (secrets.token_hex(16), "01")
        span_id = secrets.token_hex(8)
        traceparent = f"00-{trace_id}-{span_id}-{flags}".encode("ascii")

        set_request(RequestContext(request_id=request_id, trace_id=trace_id))
        bind_request_context(request_id=request_id, trace_id=trace_id)

        started = False

        async def send_with_ids(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                extra = [
                    (b"x-request-id", request_id.encode("ascii")),
                    (b"traceparent", traceparent),
                ]
                message["headers"] = list(message.get("headers", [])) + extra
            await send(message)

        try:
            await self.app(scope, receive, send_with_ids)
        except Exception as exc:
            # Swallowed here on purpose, after rendering: letting it reach the server would
            # log a traceback carrying the exception text. The problem body says nothing.
            if scope["type"] != "http" or started:
                raise
            response = unexpected_problem(exc, scope.get("path", ""))
            await response(scope, receive, send_with_ids)
        finally:
            clear_request_context()
            set_request(None)
