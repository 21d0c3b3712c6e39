"""The request-body cap: a body over the limit is refused before it is buffered or parsed,
unauthenticated requests included (FastAPI reads a body before it authenticates)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Message, Receive, Scope, Send

from fleetward.api.body_limit import BodyLimitMiddleware
from fleetward.app import build_app
from fleetward.settings import Settings

CHUNK = 64 * 1024
COMMAND = "/mobile/v1/vehicles/veh_x/commands/horn_lights"


class Sender:
    """An ASGI ``receive`` sending ``chunks`` chunks of JSON whitespace, counting what was
    taken, and a ``send`` keeping the answer."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.taken = 0
        self.status: int | None = None
        self.headers: dict[bytes, bytes] = {}
        self.body = b""

    async def receive(self) -> Message:
        if self.taken < self.chunks:
            self.taken += 1
            return {"type": "http.request", "body": b" " * CHUNK, "more_body": True}
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            assert self.status is None, "two answers to one request"
            self.status = message["status"]
            self.headers = dict(message["headers"])
        elif message["type"] == "http.response.body":
            self.body += message.get("body", b"")


def scope(path: str, length: int | None) -> Scope:
    headers = [(b"content-type", b"application/json"), (b"host", b"127.0.0.1")]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
        "http_version": "1.1",
        "root_path": "",
    }


async def echo_length(scope: Scope, receive: Receive, send: Send) -> None:
    body = await Request(scope, receive).body()
    await JSONResponse({"bytes": len(body)})(scope, receive, send)


def capped(
    app: Callable[[Scope, Receive, Send], Awaitable[None]], limit: int
) -> BodyLimitMiddleware:
    return BodyLimitMiddleware(app, limit)


@pytest.fixture
def small(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_request_body_bytes": 4 * CHUNK})


@pytest.mark.parametrize(
    ("declared", "why"),
    [
        (True, "a declared length over the limit: refused before any of it is read"),
        (False, "a chunked body: cut at the first chunk past the limit"),
    ],
)
async def test_an_unauthenticated_oversized_body_is_refused_unread(
    small: Settings, declared: bool, why: str
) -> None:
    app = build_app(small)
    sender = Sender(chunks=1000)  # ~62 MiB on offer, no token
    length = 1000 * CHUNK + 2 if declared else None
    await app(scope(COMMAND, length), sender.receive, sender.send)
    assert sender.status == 413, why
    assert sender.headers[b"content-type"] == b"application/problem+json"
    assert b'"reason":"body-too-large"' in sender.body
    assert b"x-request-id" in sender.headers, "inside the request identity"
    # Nothing beyond the limit was taken from the client.
    assert sender.taken == (0 if declared else 5), why


async def test_a_body_within_the_limit_reaches_the_app() -> None:
    sender = Sender(chunks=3)
    await capped(echo_length, 4 * CHUNK)(scope("/x", 3 * CHUNK + 2), sender.receive, sender.send)
    assert sender.status == 200
    assert sender.body == f'{{"bytes":{3 * CHUNK + 2}}}'.encode()


async def test_a_body_exactly_at_the_limit_reaches_the_app() -> None:
    sender = Sender(chunks=4)
    await capped(echo_length, 4 * CHUNK + 2)(scope("/x", None), sender.receive, sender.send)
    assert sender.status == 200


async def test_an_app_reading_past_the_limit_gets_no_answer_of_its_own_out() -> None:
    # The app reads the body itself (an ASGI app, not FastAPI): the cut surfaces in it as an
    # exception, and the client still gets exactly one answer, the 413.
    sender = Sender(chunks=10)
    await capped(echo_length, 4 * CHUNK)(scope("/x", None), sender.receive, sender.send)
    assert sender.status == 413 and sender.taken == 5


async def test_a_content_length_that_is_no_ascii_number_is_not_a_500() -> None:
    # "\xb2" (a superscript two in latin-1) passed str.isdigit and then failed int(): a
    # ValueError out of the middleware. uvicorn's parsers refuse such a header before the
    # app; another ASGI server may not. The body is then counted as it arrives.
    sender = Sender(chunks=3)
    bad = {**scope("/x", None)}
    bad["headers"] = [*bad["headers"], (b"content-length", b"\xb2")]
    await capped(echo_length, 4 * CHUNK)(bad, sender.receive, sender.send)
    assert sender.status == 200
    sender = Sender(chunks=10)
    await capped(echo_length, 4 * CHUNK)(bad, sender.receive, sender.send)
    assert sender.status == 413 and sender.taken == 5


def test_the_limit_is_bounded_by_the_settings() -> None:
    with pytest.raises(ValueError, match="max_request_body_bytes"):
        Settings(max_request_body_bytes=10)
