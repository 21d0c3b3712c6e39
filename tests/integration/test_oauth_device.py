"""The device authorization grant (RFC 8628) for the first-party CLI (SQLite, PostgreSQL)."""

from __future__ import annotations

import html
import itertools
import re
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from authlib.oauth2.rfc8628 import endpoint as authlib_device
from sqlalchemy import func, select, update
from sqlalchemy.util import await_

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr, Amr
from fleetward.identity.login.limits import LIMITS, Dimension, Factor
from fleetward.identity.oauth.device import DeviceGrant
from fleetward.identity.oauth.device_approval import USER_CODE_ALPHABET, DevicePage
from fleetward.identity.oauth.policy import DEVICE_CODE
from fleetward.identity.oauth_models import DeviceAuthorization, DeviceAuthorizationStatus
from fleetward.identity.tokens import InvalidToken
from fleetward.platform import Platform
from unit.identity.oauth.kit import (
    CLI,
    CONSOLE,
    LOCATION,
    MOBILE,
    READ,
    OAuthWorld,
    build_world,
    login,
)

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def world(platform: Platform) -> OAuthWorld:
    return await build_world(platform)


def _clock(world: OAuthWorld) -> FrozenClock:
    clock = world.platform.clock
    assert isinstance(clock, FrozenClock)
    return clock


async def _start(world: OAuthWorld, **extra: str) -> dict[str, object]:
    data = {"client_id": CLI, "scope": f"{READ} {LOCATION}", "resource": Surface.MOBILE.audience}
    data.update(extra)
    response = await world.http.post("/oauth/device_authorization", data=data)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def _poll(world: OAuthWorld, device_code: object) -> httpx.Response:
    return await world.token(
        {"grant_type": DEVICE_CODE, "device_code": str(device_code), "client_id": CLI}
    )


async def _decide(
    world: OAuthWorld, cookie: dict[str, str], user_code: str, decision: str
) -> httpx.Response:
    page = await world.http.get(
        f"/oauth/device?{urlencode({'user_code': user_code})}", headers=cookie
    )
    assert page.status_code == 200, page.text
    token = re.search(r'name="csrf_token" value="([^"]*)"', page.text)
    assert token is not None
    body = {
        "user_code": user_code,
        "csrf_token": html.unescape(token.group(1)),
        "decision": decision,
    }
    return await world.http.post(
        "/oauth/device", content=urlencode(body), headers={**cookie, **FORM}
    )


async def test_pending_slow_down_approval_then_token(world: OAuthWorld) -> None:
    started = await _start(world)
    assert started["verification_uri"] == world.urls.device
    assert started["interval"] == 5
    first = await _poll(world, started["device_code"])
    assert first.json()["error"] == "authorization_pending"
    # Polling again at once: slow down, and the interval grows for every later poll.
    assert (await _poll(world, started["device_code"])).json()["error"] == "slow_down"
    _clock(world).advance(timedelta(seconds=6))  # interval is 10 now: still too soon
    assert (await _poll(world, started["device_code"])).json()["error"] == "slow_down"
    _clock(world).advance(timedelta(seconds=16))  # interval is 15 now: this one is fine
    assert (await _poll(world, started["device_code"])).json()["error"] == "authorization_pending"

    cookie = await login(world, "alice")
    done = await _decide(world, cookie, str(started["user_code"]), "approve")
    assert done.status_code == 200 and "return to your device" in done.text
    _clock(world).advance(timedelta(seconds=20))
    granted = await _poll(world, started["device_code"])
    assert granted.status_code == 200, granted.text
    claims = await world.claims(granted.json()["access_token"], Surface.MOBILE)
    assert claims.sub == world.users["alice"].id
    assert claims.tenant == world.tenants["consumer"].id
    assert claims.scopes == {READ, LOCATION}
    assert claims.acr == Acr.MFA.value
    # A device code works once; a second use revokes what the first issued.
    assert (await _poll(world, started["device_code"])).json()["error"] == "invalid_grant"
    with pytest.raises(InvalidToken):
        await world.claims(granted.json()["access_token"], Surface.MOBILE)


async def test_denial_is_access_denied(world: OAuthWorld) -> None:
    started = await _start(world)
    cookie = await login(world, "alice")
    await _decide(world, cookie, str(started["user_code"]), "deny")
    assert (await _poll(world, started["device_code"])).json()["error"] == "access_denied"


async def test_device_page_needs_a_login_session(world: OAuthWorld) -> None:
    started = await _start(world)
    response = await world.http.get(f"/oauth/device?user_code={started['user_code']}")
    assert response.status_code == 303
    target = urlsplit(response.headers["location"])
    assert target.path == "/login"
    assert parse_qs(target.query)["return_to"][0].startswith("/oauth/device?user_code=")


async def test_device_approval_for_an_operator_surface_needs_mfa(world: OAuthWorld) -> None:
    started = await _start(world, resource=Surface.SUPPORT.audience)
    cookie = await login(world, "judy", acr=Acr.PASSWORD, amr=(Amr.PASSWORD,))
    response = await world.http.get(
        f"/oauth/device?user_code={started['user_code']}", headers=cookie
    )
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["location"]).query)["acr"] == [Acr.MFA.value]


async def test_expired_device_code(world: OAuthWorld) -> None:
    started = await _start(world)
    _clock(world).advance(timedelta(minutes=11))
    assert (await _poll(world, started["device_code"])).json()["error"] == "expired_token"
    cookie = await login(world, "alice")
    page = await world.http.get(f"/oauth/device?user_code={started['user_code']}", headers=cookie)
    assert page.status_code == 400  # unknown or expired code: nothing to approve


async def test_forged_device_decision_is_refused(world: OAuthWorld) -> None:
    started = await _start(world)
    cookie = await login(world, "alice")
    body = {"user_code": str(started["user_code"]), "csrf_token": "1.forged", "decision": "approve"}
    response = await world.http.post(
        "/oauth/device", content=urlencode(body), headers={**cookie, **FORM}
    )
    assert response.status_code == 403
    assert (await _poll(world, started["device_code"])).json()["error"] == "authorization_pending"


async def test_a_forged_device_decision_is_audited(world: OAuthWorld) -> None:
    # Approving someone's device by a forged post is what device-flow phishing tries: the
    # refusal is recorded against the person and the device request, with its reason.
    started = await _start(world)
    cookie = await login(world, "alice")
    body = {"user_code": str(started["user_code"]), "csrf_token": "1.forged", "decision": "approve"}
    response = await world.http.post(
        "/oauth/device", content=urlencode(body), headers={**cookie, **FORM}
    )
    assert response.status_code == 403
    async with world.platform.unit_of_work() as uow:
        events = list(
            await uow.session.scalars(
                select(AuditRecord).where(AuditRecord.name == EventName.OAUTH_DEVICE_DENIED)
            )
        )
        row = await uow.session.scalar(select(DeviceAuthorization))
    assert row is not None and row.status is DeviceAuthorizationStatus.PENDING
    assert [(e.object_id, e.reason) for e in events] == [(row.id, "request-forgery")]
    assert events[0].actor_id == world.users["alice"].id


def _draws(monkeypatch: pytest.MonkeyPatch, *codes: str) -> None:
    """Authlib's user code generator, answering ``codes`` in turn (the last one forever)."""
    answers = iter(codes)
    last = codes[-1]
    monkeypatch.setattr(authlib_device, "create_string_user_code", lambda: next(answers, last))


async def _stored(world: OAuthWorld) -> int:
    async with world.platform.services() as (_uow, ctx):
        count = await ctx.session.scalar(select(func.count()).select_from(DeviceAuthorization))
    return int(count or 0)


@pytest.mark.parametrize("first_expired", [False, True], ids=["live", "expired"])
async def test_a_user_code_already_stored_is_drawn_again(
    world: OAuthWorld, monkeypatch: pytest.MonkeyPatch, first_expired: bool
) -> None:
    # A user code repeats now and then (~34 bits), and stored rows keep theirs, live or
    # expired or used: a repeat must not fail the request (a 500 from the unique index), nor
    # ever hand two devices one code. It is drawn again.
    _draws(monkeypatch, "BCDF-GHJK", "BCDF-GHJK", "LMNP-QRST")
    first = await _start(world)
    assert first["user_code"] == "BCDF-GHJK"
    if first_expired:
        _clock(world).advance(timedelta(minutes=11))
    second = await _start(world)
    assert second["user_code"] == "LMNP-QRST"
    assert str(second["verification_uri_complete"]).endswith("user_code=LMNP-QRST")
    assert await _stored(world) == 2
    # The first request is untouched: its device code still answers for itself.
    expected = "expired_token" if first_expired else "authorization_pending"
    assert (await _poll(world, first["device_code"])).json()["error"] == expected


async def test_a_generator_that_only_repeats_is_a_retryable_refusal(
    world: OAuthWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The draws are bounded: a generator stuck on a stored code ends in a 503 problem that
    # the client may retry, with nothing stored, never a loop or a shared code.
    _draws(monkeypatch, "BCDF-GHJK")
    await _start(world)
    data = {"client_id": CLI, "scope": READ, "resource": Surface.MOBILE.audience}
    response = await world.http.post("/oauth/device_authorization", data=data)
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "1"
    assert await _stored(world) == 1


START_REFUSALS = [
    # Only clients registered for the device grant (the CLI) may start it.
    ({"client_id": MOBILE}, "unauthorized_client"),
    # Confidential clients never use it, and cannot authenticate with "none".
    ({"client_id": CONSOLE}, "invalid_client"),
    # A surface the CLI may not use.
    ({"client_id": CLI, "resource": Surface.PARTNER.audience}, "invalid_target"),
    # Unknown client ids get nothing.
    ({"client_id": "nobody-here"}, "invalid_client"),
]


@pytest.mark.parametrize(
    ("data", "error"), START_REFUSALS, ids=["mobile", "confidential", "partner", "unknown"]
)
async def test_device_authorization_refused(
    world: OAuthWorld, data: dict[str, str], error: str
) -> None:
    body = {"scope": READ, "resource": Surface.MOBILE.audience, **data}
    response = await world.http.post("/oauth/device_authorization", data=body)
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == error


async def test_another_client_cannot_poll_the_device_code(world: OAuthWorld) -> None:
    started = await _start(world)
    data = {
        "grant_type": DEVICE_CODE,
        "device_code": str(started["device_code"]),
        "client_id": MOBILE,
    }
    response = await world.token(data)
    assert response.json()["error"] in ("unauthorized_client", "invalid_dpop_proof")


async def test_an_approval_racing_a_revocation_does_not_write_over_it(
    world: OAuthWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The client is revoked (its pending device codes denied) between the approval's read of
    # the pending code and its write: the approval writes nothing over the denial, and the
    # device gets no tokens.
    started = await _start(world)
    cookie = await login(world, "alice")
    code = str(started["user_code"])
    original = DevicePage._pending
    reads: list[bool] = []

    async def denied_elsewhere() -> None:
        async with world.platform.services() as (uow, ctx):
            await ctx.session.execute(
                update(DeviceAuthorization)
                .where(DeviceAuthorization.user_code == code)
                .values(status=DeviceAuthorizationStatus.DENIED)
            )
            await uow.commit()

    def pending_then_denied(page: DevicePage, user_code: str | None) -> Any:
        row = original(page, user_code)
        reads.append(row is not None)
        if len(reads) == 2:  # the POST's read (the GET of the page was the first)
            await_(denied_elsewhere())
        return row

    monkeypatch.setattr(DevicePage, "_pending", pending_then_denied)
    done = await _decide(world, cookie, code, "approve")
    assert reads == [True, True]
    assert done.status_code == 400 and "unknown_user_code" in done.text
    assert (await _poll(world, started["device_code"])).json()["error"] == "access_denied"


async def test_a_poll_racing_the_approval_is_an_answer_not_an_error(
    world: OAuthWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The person approves between a poll's read of the pending code and that poll's write
    # of its polling time: the poll answers authorization_pending (never a 500, which would
    # also undo the poll's bookkeeping), and the next poll gets the tokens.
    started = await _start(world)
    alice = world.users["alice"]
    original = DeviceGrant.query_device_credential

    async def approved_elsewhere(row_id: str) -> None:
        async with world.platform.services() as (uow, ctx):
            await ctx.session.execute(
                update(DeviceAuthorization)
                .where(DeviceAuthorization.id == row_id)
                .values(
                    status=DeviceAuthorizationStatus.APPROVED,
                    user_id=alice.id,
                    tenant_id=world.tenants["consumer"].id,
                    auth_time=world.platform.clock.now(),
                    acr=Acr.MFA.value,
                    amr=[Amr.PASSWORD.value, Amr.OTP.value],
                )
            )
            await uow.commit()

    def read_then_approved(grant: DeviceGrant, device_code: object) -> Any:
        record = original(grant, device_code)
        if record is not None:
            await_(approved_elsewhere(record.row.id))
        return record

    monkeypatch.setattr(DeviceGrant, "query_device_credential", read_then_approved)
    raced = await _poll(world, started["device_code"])
    assert raced.status_code == 400, raced.text
    assert raced.json()["error"] == "authorization_pending"
    monkeypatch.undo()
    _clock(world).advance(timedelta(seconds=6))
    granted = await _poll(world, started["device_code"])
    assert granted.status_code == 200, granted.text
    claims = await world.claims(granted.json()["access_token"], Surface.MOBILE)
    assert claims.sub == alice.id


USER_CODE_LIMIT = LIMITS[(Factor.USER_CODE, Dimension.ACCOUNT)]


async def _look_up(world: OAuthWorld, cookie: dict[str, str], user_code: str) -> httpx.Response:
    return await world.http.get(
        f"/oauth/device?{urlencode({'user_code': user_code})}", headers=cookie
    )


def _wrong_codes(right: str, n: int) -> list[str]:
    letters = sorted(USER_CODE_ALPHABET)
    codes = [f"{a}{b}{c}{d}-BCDF" for a, b, c, d in itertools.product(letters, repeat=4)]
    return [c for c in codes if c != right][:n]


async def test_wrong_user_codes_are_guesses_and_block_the_page(world: OAuthWorld) -> None:
    # RFC 8628 section 5.1: the user code is short; the page limits how many a signed-in
    # person may try. Past the limit even the right code is refused (answering it otherwise
    # would tell a guesser which code was right), until the block ends.
    started = await _start(world)
    code = str(started["user_code"])
    cookie = await login(world, "alice")
    for wrong in _wrong_codes(code, USER_CODE_LIMIT):
        assert (await _look_up(world, cookie, wrong)).status_code == 400
    blocked = await _look_up(world, cookie, code)
    assert blocked.status_code == 429 and "too_many_codes" in blocked.text
    async with world.platform.unit_of_work() as uow:
        reasons = await uow.session.scalars(
            select(AuditRecord.reason).where(
                AuditRecord.name == EventName.LOGIN_LOCKED_OUT.value,
                AuditRecord.object_id == world.users["alice"].id,
            )
        )
        assert list(reasons) == ["user_code:account"]
    assert int(blocked.headers["Retry-After"]) > 0
    assert "csrf_token" not in blocked.text
    _clock(world).advance(timedelta(seconds=int(blocked.headers["Retry-After"]) + 1))
    assert (await _look_up(world, cookie, code)).status_code == 200


async def test_a_right_user_code_does_not_reset_the_guesses(world: OAuthWorld) -> None:
    # The right code is given back, not counted; but it does not end the streak of wrong
    # ones (anyone can start a device flow and know one right code).
    started = await _start(world)
    code = str(started["user_code"])
    cookie = await login(world, "alice")
    wrong = _wrong_codes(code, USER_CODE_LIMIT)
    for guess in wrong[:-1]:
        assert (await _look_up(world, cookie, guess)).status_code == 400
    for _ in range(3):
        assert (await _look_up(world, cookie, code)).status_code == 200
    assert (await _look_up(world, cookie, wrong[-1])).status_code == 400
    assert (await _look_up(world, cookie, code)).status_code == 429
