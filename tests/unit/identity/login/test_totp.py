"""The TOTP second step: right codes pass once, everything else is refused.

Each case names the threat it covers. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import pyotp
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from fleetward.core.clock import FrozenClock
from fleetward.identity.acr import Acr
from fleetward.identity.credential_models import LoginSession, TotpFactor
from fleetward.identity.login.answers import BAD_CODE, SIGN_IN_EXPIRED
from fleetward.identity.login.pending import LIFETIME
from fleetward.platform import Platform
from unit.identity.login.login_support import Browser, Person


def _code(person: Person, clock: FrozenClock, steps: int = 0) -> str:
    assert person.totp_secret is not None
    return pyotp.TOTP(person.totp_secret).at(clock.now(), counter_offset=steps)


async def _sessions(platform: Platform) -> list[LoginSession]:
    async with platform.services() as (_uow, ctx):
        return list(await ctx.session.scalars(select(LoginSession)))


@pytest.mark.parametrize("username", ["adam", "tina"])
async def test_password_and_totp_give_an_mfa_session(
    app: FastAPI,
    platform: Platform,
    people: dict[str, Person],
    clock: FrozenClock,
    username: str,
) -> None:
    # adam must use MFA (high-risk role); tina enrolled TOTP, so she must use it too.
    target = "/oauth/authorize?client_id=cli_x"
    async with Browser(app) as browser:
        first = await browser.login(username, people[username].password, return_to=target)
        assert first.headers["location"] == "/login/mfa"
        page = await browser.http.get("/login/mfa")
        assert page.status_code == 200 and 'action="/login/totp"' in page.text
        done = await browser.totp(_code(people[username], clock))
        assert done.status_code == 303 and done.headers["location"] == target
        assert browser.session_cookie is not None
        assert "fw_pending" not in browser.http.cookies  # the pending login is spent
    (session,) = await _sessions(platform)
    assert (session.acr, session.amr) == (Acr.MFA.value, ["pwd", "otp"])


@dataclass(frozen=True)
class Case:
    name: str
    # Seconds to move the clock between the password and the code, and the code to send.
    delay: int
    code: Callable[[Person, FrozenClock], str]
    message: str


CASES = [
    # Guessing: a wrong six-digit code.
    Case("wrong-code", 0, lambda p, c: "000000" if _code(p, c) != "000000" else "111111", BAD_CODE),
    # Replay of an observed code from two steps ago: outside the +-1 step window.
    Case("step-too-old", 0, lambda p, c: _code(p, c, -2), BAD_CODE),
    # A code from far in the future (a pre-computed code from a stolen seed's clock skew).
    Case("step-too-new", 0, lambda p, c: _code(p, c, 2), BAD_CODE),
    # Malformed codes never reach the comparison.
    Case("letters", 0, lambda p, c: "12a456", BAD_CODE),
    Case("seven-digits", 0, lambda p, c: _code(p, c) + "1", BAD_CODE),
    Case("unicode-digits", 0, lambda p, c: "\u0661" * 6, BAD_CODE),
    # Stalling: the pending login expires after five minutes, a right code is then useless.
    Case("pending-expired", int(LIFETIME.total_seconds()) + 1, _code, SIGN_IN_EXPIRED),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_refused_codes_create_no_session(
    app: FastAPI,
    platform: Platform,
    people: dict[str, Person],
    clock: FrozenClock,
    case: Case,
) -> None:
    async with Browser(app) as browser:
        await browser.login("adam", people["adam"].password)
        clock.advance(timedelta(seconds=case.delay))
        response = await browser.totp(case.code(people["adam"], clock))
        assert response.status_code == 403
        assert case.message in response.text
        assert browser.session_cookie is None
    assert await _sessions(platform) == []


async def test_a_code_is_accepted_once(
    app: FastAPI, platform: Platform, people: dict[str, Person], clock: FrozenClock
) -> None:
    # Replay: a code seen (shoulder-surfed, phished, logged) cannot be used a second time,
    # nor can an older step once a newer one was accepted.
    code = _code(people["adam"], clock)
    older = _code(people["adam"], clock, -1)
    async with Browser(app) as first:
        await first.login("adam", people["adam"].password)
        assert (await first.totp(code)).status_code == 303
    async with Browser(app) as second:
        await second.login("adam", people["adam"].password)
        replayed = await second.totp(code)
        assert replayed.status_code == 403 and BAD_CODE in replayed.text
        stale = await second.totp(older)
        assert stale.status_code == 403
        clock.advance(timedelta(seconds=30))
        fresh = await second.totp(_code(people["adam"], clock))
        assert fresh.status_code == 303
    assert len(await _sessions(platform)) == 2
    async with platform.services() as (_uow, ctx):
        factor = await ctx.session.scalar(
            select(TotpFactor).where(TotpFactor.user_id == people["adam"].user_id)
        )
        assert factor is not None
        assert factor.last_used_step == int(clock.now().timestamp()) // 30


async def test_a_refused_code_does_not_burn_the_step(
    app: FastAPI, people: dict[str, Person], clock: FrozenClock
) -> None:
    # A wrong guess must not lock the owner out of the current code.
    async with Browser(app) as browser:
        await browser.login("adam", people["adam"].password)
        await browser.totp("000000" if _code(people["adam"], clock) != "000000" else "111111")
        assert (await browser.totp(_code(people["adam"], clock))).status_code == 303


async def test_neighbouring_steps_are_tolerated(
    app: FastAPI, people: dict[str, Person], clock: FrozenClock
) -> None:
    # Clock drift of one step either way is normal for phones.
    async with Browser(app) as browser:
        await browser.login("adam", people["adam"].password)
        assert (await browser.totp(_code(people["adam"], clock, -1))).status_code == 303
    async with Browser(app) as browser:
        await browser.login("adam", people["adam"].password)
        assert (await browser.totp(_code(people["adam"], clock, 1))).status_code == 303


async def test_a_pending_login_cannot_be_used_twice(
    app: FastAPI, platform: Platform, people: dict[str, Person], clock: FrozenClock
) -> None:
    # Cookie theft after the fact: the pending cookie is spent by the step that succeeded.
    async with Browser(app) as browser:
        await browser.login("adam", people["adam"].password)
        pending = browser.http.cookies["fw_pending"]
        assert (await browser.totp(_code(people["adam"], clock))).status_code == 303
        clock.advance(timedelta(seconds=30))
        browser.http.cookies.set("fw_pending", pending, domain="testserver", path="/login")
        again = await browser.totp(_code(people["adam"], clock))
        assert again.status_code == 403 and SIGN_IN_EXPIRED in again.text
    assert len(await _sessions(platform)) == 1
