"""A cap on HTTP request bodies, applied before anything reads them.

FastAPI reads and parses a route's body before it solves the route's dependencies, the
authentication included, and uvicorn sets no limit: without this, anyone could make the
server buffer and parse a body of any size without a token. A request whose
``Content-Length`` is above ``max_request_body_bytes`` is answered 413 before the app is
called (nothing of the body is read); a body without a length (chunked) is counted as it
arrives, and the first chunk past the limit ends the request with the same 413, whatever
the app had begun to answer. Pure ASGI, like the request-identity middleware it sits inside
(so the 413 carries the request id).
"""

from __future__ import annotations

import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetward.api.problems import problem_response
from fleetward.core.errors import FleetwardError


class PayloadTooLarge(FleetwardError):
    code = "payload-too-large"
    status = 413
    title = "Payload too large"


class _Exceeded(Exception):
    """Raised from ``receive`` when the body passes the limit (the app may catch it)."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        over = False
        answered = False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _Exceeded
            return message

        async def guarded(message: Message) -> None:
            nonlocal answered
            if over:
                return  # the app's own answer to a body cut short is replaced below
            if message["type"] == "http.response.start":
                answered = True
            await send(message)

        # The app may catch the cut itself (FastAPI answers it 400, replaced below).
        with contextlib.suppress(_Exceeded):
            await self.app(scope, counted, guarded)
        if over and not answered:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        problem = PayloadTooLarge(
            f"the request body is larger than {self.limit} bytes",
            reason="body-too-large",
            extra={"max_bytes": self.limit},
        )
        # Connection: close, so the server drops what the client still sends.
        response = problem_response(
            problem.to_problem(scope.get("path", "")), problem.status, {"Connection": "close"}
        )
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    """The declared length, when there is one that is a number (the server refuses a
    malformed one before the app sees it). ASCII digits only: ``str.isdigit`` also holds
    for superscripts (``"\xb2"`` in latin-1), which ``int`` refuses."""
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isascii() and text.isdigit() else None
    return None


__all__ = ["BodyLimitMiddleware", "PayloadTooLarge"]
