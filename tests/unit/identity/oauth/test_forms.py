"""Hostile input at the edges: form bodies, CSRF tokens and user codes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from starlette.requests import Request

from fleetward.identity.oauth.csrf import CsrfGuard, binding_of
from fleetward.identity.oauth.device_approval import normalise_user_code
from fleetward.identity.oauth.http import MAX_BODY_BYTES, BadForm, read_form, repeated

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
FORM = b"application/x-www-form-urlencoded"


def _request(body: bytes, content_type: bytes = FORM, length: bytes | None = None) -> Request:
    headers = [(b"content-type", content_type)]
    if length is not None:
        headers.append((b"content-length", length))
    sent = False

    async def receive() -> dict[str, object]:
        nonlocal sent
        if sent:
            return {"type": "http.request", "body": b"", "more_body": False}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({"type": "http", "method": "POST", "headers": headers}, receive)


BODIES = [
    # JSON where a form is required (RFC 6749 section 4.1.3 mandates the form encoding).
    (b'{"grant_type":"password"}', b"application/json", None, "media-type"),
    # Larger than any token request needs: bounded work per request.
    (b"a=" + b"x" * (MAX_BODY_BYTES + 1), FORM, None, "too-large"),
    (b"a=b", FORM, b"999999999", "too-large"),
    (b"a=b", FORM, b"-1", "too-large"),
    # Not UTF-8, raw or percent-encoded.
    (b"code=\xff\xfe", FORM, None, "malformed"),
    (b"code=%ff%fe", FORM, None, "malformed"),
    # Too many fields to be an OAuth request.
    (b"&".join(b"f%d=1" % i for i in range(100)), FORM, None, "malformed"),
]


@pytest.mark.parametrize(("body", "content_type", "length", "reason"), BODIES)
async def test_hostile_bodies_are_refused(
    body: bytes, content_type: bytes, length: bytes | None, reason: str
) -> None:
    with pytest.raises(BadForm) as raised:
        await read_form(_request(body, content_type, length))
    assert raised.value.reason == reason


async def test_a_plain_form_is_read() -> None:
    pairs = await read_form(_request(b"grant_type=refresh_token&scope=a+b&empty="))
    assert pairs == [("grant_type", "refresh_token"), ("scope", "a b"), ("empty", "")]


def test_repeated_parameters_are_detected_except_resource() -> None:
    # RFC 6749 section 3.1: parameters must not repeat (a second value could be read by one
    # layer and not another).
    assert repeated([("code", "a"), ("code", "b")])
    assert repeated([("client_id", "a"), ("client_id", "a")])
    assert not repeated([("resource", "a"), ("resource", "b")])  # refused as invalid_target


GUARD = CsrfGuard(b"k" * 32)


def _token(**kw: object) -> str:
    args: dict[str, object] = {
        "purpose": "consent",
        "session_id": "lgn_1",
        "binding": "b",
        "now": T0,
    }
    args.update(kw)
    return GUARD.issue(**args)  # type: ignore[arg-type]


CSRF_CASES = [
    # Another browser session's token.
    ("other-session", _token(session_id="lgn_2")),
    # A token for another request (the approved scopes or client differ).
    ("other-request", _token(binding="other")),
    # The device form's token replayed on the consent form.
    ("other-purpose", _token(purpose="device")),
    # Too old.
    ("expired", _token(now=T0 - timedelta(minutes=16))),
    # Hand-made.
    ("forged-mac", f"{int(T0.timestamp())}.AAAA"),
    ("no-dot", "garbage"),
    ("empty", ""),
    ("huge", "1." + "A" * 10_000),
    ("unicode-digits", "\u0661\u0662.abc"),
]


@pytest.mark.parametrize(("case", "token"), CSRF_CASES, ids=[c[0] for c in CSRF_CASES])
def test_csrf_tokens_refused(case: str, token: str) -> None:
    assert not GUARD.verify(token, purpose="consent", session_id="lgn_1", binding="b", now=T0)


def test_csrf_token_accepted_for_its_session_and_request() -> None:
    assert GUARD.verify(_token(), purpose="consent", session_id="lgn_1", binding="b", now=T0)
    assert binding_of("a=1") != binding_of("a=2")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("BCDF-GHJK", "BCDF-GHJK"),
        ("bcdf ghjk", "BCDF-GHJK"),
        ("bcdfghjk", "BCDF-GHJK"),
        # Vowels and digits are not in the alphabet (no words, no 0/O confusion).
        ("ABCD-EFGH", None),
        ("1234-5678", None),
        ("BCDF-GHJ", None),
        ("BCDF-GHJKL", None),
        ("B" * 100, None),
        # Full-width look-alikes are not the same letters.
        ("\uff22CDF-GHJK", None),
    ],
)
def test_user_codes_are_normalised_or_refused(raw: str, expected: str | None) -> None:
    assert normalise_user_code(raw) == expected
