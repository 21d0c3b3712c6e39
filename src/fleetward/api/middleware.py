"""Request identity: a request id and a W3C trace context on every request and response.

Pure ASGI (no BaseHTTPMiddleware) to keep per-request overhead to a few microseconds.
The request id is always the platform's own (64 random bits): audit records, investigations
and detection key on it, so a caller must not be able to choose it (reusing another request's
id would merge their requests in an investigation). A caller's own ``X-Request-Id`` is kept
for correlation when it is well formed (so it can never inject text into logs or headers):
returned as ``X-Client-Request-Id`` and bound to the request's log lines. A caller's W3C
``traceparent`` is continued (a trace spans services by design; an investigation by trace id
lists every caller and address it saw).

Every answer also gets ``X-Content-Type-Options: nosniff`` and, unless its route set a
``Cache-Control`` of its own (the discovery documents and keys are cacheable),
``Cache-Control: no-store``: answers carry personal data and vehicle state.

The client IP (an audit risk signal) is the peer address of the ASGI connection. The
``X-Forwarded-For`` header is believed only when the peer is one of ``trusted_proxies``
(empty by default: no header is trusted), and then only its right-most address that is not
itself a trusted proxy, so a client cannot choose the address recorded for it.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetward.api.problems import unexpected_problem
from fleetward.core.context import RequestContext, set_request
from fleetward.observability.logging import bind_request_context, clear_request_context

_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")
_TRACEPARENT_RE = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
# Added to an answer that does not set them itself (see the module docstring).
_DEFAULT_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-store"))


def parse_traceparent(value: str | None) -> tuple[str, str] | None:
    """(trace id, flags) of a valid version-00 traceparent, else None."""
    if not value:
        return None
    match = _TRACEPARENT_RE.fullmatch(value.strip())
    if match is None or match.group(1) == _ZERO_TRACE or match.group(2) == _ZERO_SPAN:
        return None
    return match.group(1), match.group(3)


def _ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(
    scope: Scope, headers: dict[str, str], trusted_proxies: frozenset[str] = frozenset()
) -> str | None:
    """The address to record for the caller: the peer, or what trusted proxies say."""
    client = scope.get("client")
    peer = _ip(str(client[0])) if client else None
    if peer is None or peer not in trusted_proxies:
        return peer
    forwarded = headers.get("x-forwarded-for", "")
    for hop in reversed(forwarded.split(",")[:32]):
        address = _ip(hop)
        if address is None:
            return peer  # a malformed chain: keep the address we saw ourselves
        if address not in trusted_proxies:
            return address
    return peer


class RequestIdentityMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[str] = ()) -> None:
        self.app = app
        self.trusted_proxies = frozenset(a for a in map(_ip, trusted_proxies) if a)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        supplied_id = headers.get("x-request-id", "")
        client_request_id = supplied_id if _REQUEST_ID_RE.fullmatch(supplied_id) else None
        request_id = secrets.token_hex(8)
        parent = parse_traceparent(headers.get("traceparent"))
        trace_id, flags = parent if parent else (secrets.token_hex(16), "01")
        span_id = secrets.token_hex(8)
        traceparent = f"00-{trace_id}-{span_id}-{flags}".encode("ascii")

        source_ip = client_ip(scope, headers, self.trusted_proxies)
        set_request(RequestContext(request_id=request_id, trace_id=trace_id, source_ip=source_ip))
        bind_request_context(
            request_id=request_id, trace_id=trace_id, client_request_id=client_request_id
        )

        started = False

        async def send_with_ids(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                extra = [
                    (b"x-request-id", request_id.encode("ascii")),
                    (b"traceparent", traceparent),
                ]
                if client_request_id is not None:
                    extra.append((b"x-client-request-id", client_request_id.encode("ascii")))
                named = {name.lower() for name, _ in headers}
                extra.extend(h for h in _DEFAULT_HEADERS if h[0] not in named)
                message["headers"] = headers + extra
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
