"""Recovery codes: shown once, single use, at most one recovery login a day, never
phishing-resistant, and only regenerated from a fresh MFA login.

Each case names the threat it covers. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta

import pyotp
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.core.clock import FrozenClock
from fleetward.identity.acr import Acr
from fleetward.identity.credential_models import LoginSession, RecoveryCode
from fleetward.identity.login.answers import BAD_CODE
from fleetward.identity.login.limits import LIMITS, RECOVERY_COOLDOWN, Dimension, Factor
from fleetward.identity.login.recovery import CODES_PER_BATCH, RecoveryCodes, RecoveryVerdict
from fleetward.identity.login.runtime import LoginRuntime
from fleetward.identity.models import User
from fleetward.platform import Platform
from support.locks import settled
from unit.identity.login.login_support import Browser, Person

CODE = re.compile(r"<li>([a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4}-[a-z2-7]{4})</li>")


async def _mfa_login(browser: Browser, person: Person, clock: FrozenClock) -> None:
    assert person.totp_secret is not None
    await browser.login(person.username, person.password)
    clock.advance(timedelta(seconds=30))  # a fresh step: earlier tests may have used this one
    response = await browser.totp(pyotp.TOTP(person.totp_secret).at(clock.now()))
    assert response.status_code == 303


async def _new_codes(app: FastAPI, person: Person, clock: FrozenClock) -> list[str]:
    async with Browser(app) as browser:
        await _mfa_login(browser, person, clock)
        page = await browser.http.post(
            "/account/recovery-codes", data={"csrf_token": browser.token}
        )
        assert page.status_code == 200 and page.headers["cache-control"] == "no-store"
        return CODE.findall(page.text)


async def _recover(app: FastAPI, person: Person, code: str) -> tuple[int, str, str | None]:
    async with Browser(app) as browser:
        await browser.login(person.username, person.password)
        response = await browser.recovery(code)
        return response.status_code, response.text, response.headers.get("retry-after")


async def _events(platform: Platform, name: EventName) -> list[AuditRecord]:
    async with platform.services() as (_uow, ctx):
        return list(await ctx.session.scalars(select(AuditRecord).where(AuditRecord.name == name)))


async def test_codes_are_random_and_stored_only_as_hashes(
    app: FastAPI, platform: Platform, people: dict[str, Person], clock: FrozenClock
) -> None:
    codes = await _new_codes(app, people["adam"], clock)
    assert len(set(codes)) == CODES_PER_BATCH
    async with platform.services() as (_uow, ctx):
        stored = list(await ctx.session.scalars(select(RecoveryCode)))
    # A database dump must not hand out working codes.
    assert len(stored) == CODES_PER_BATCH
    assert not any(c.replace("-", "") in s.code_hash for c in codes for s in stored)
    (event,) = await _events(platform, EventName.RECOVERY_CODES_REGENERATED)
    assert event.object_id == people["adam"].user_id


async def test_a_recovery_login_is_mfa_single_use_and_audited(
    app: FastAPI, platform: Platform, people: dict[str, Person], clock: FrozenClock
) -> None:
    codes = await _new_codes(app, people["adam"], clock)
    async with Browser(app) as browser:
        await browser.login("adam", people["adam"].password)
        page = await browser.http.get("/login/mfa")
        assert 'action="/login/recovery"' in page.text
        # Typed with upper case and spaces instead of hyphens: still the same code.
        done = await browser.recovery(codes[0].upper().replace("-", " "))
        assert done.status_code == 303
    async with platform.services() as (_uow, ctx):
        sessions = list(await ctx.session.scalars(select(LoginSession)))
    # The first session came from the TOTP login that printed the codes.
    assert sorted(s.amr[-1] for s in sessions) == ["otp", "rec"]
    (session,) = [s for s in sessions if s.amr[-1] == "rec"]
    # Never phishing-resistant: a recovery code can be phished like any typed secret.
    assert (session.acr, session.amr) == (Acr.MFA.value, ["pwd", "rec"])
    (used,) = await _events(platform, EventName.RECOVERY_CODE_USED)
    assert used.details == {"remaining": CODES_PER_BATCH - 1}
    # Replay after the cool-down: a spent code stays spent.
    clock.advance(RECOVERY_COOLDOWN + timedelta(seconds=1))
    status, text, _ = await _recover(app, people["adam"], codes[0])
    assert status == 403 and BAD_CODE in text


async def test_one_recovery_login_per_day(
    app: FastAPI, platform: Platform, people: dict[str, Person], clock: FrozenClock
) -> None:
    # Someone with a sheet of stolen codes cannot use them back to back.
    codes = await _new_codes(app, people["adam"], clock)
    assert (await _recover(app, people["adam"], codes[0]))[0] == 303
    clock.advance(timedelta(hours=23))
    status, _text, retry_after = await _recover(app, people["adam"], codes[1])
    assert status == 429 and retry_after is not None
    assert int(retry_after) <= 3600
    # The refused attempt did not spend the code: it works once the day is over.
    clock.advance(timedelta(hours=1, seconds=1))
    assert (await _recover(app, people["adam"], codes[1]))[0] == 303
    async with platform.services() as (_uow, ctx):
        spent = await ctx.session.scalars(
            select(RecoveryCode).where(RecoveryCode.used_at.is_not(None))
        )
        assert len(list(spent)) == 2
    failed = await _events(platform, EventName.LOGIN_FAILED)
    assert [e.reason for e in failed] == ["recovery-cooldown"]


async def test_codes_belong_to_one_account(
    app: FastAPI, people: dict[str, Person], clock: FrozenClock
) -> None:
    # Cross-account use: tina's code does not open adam's account.
    tina_codes = await _new_codes(app, people["tina"], clock)
    await _new_codes(app, people["adam"], clock)
    status, text, _ = await _recover(app, people["adam"], tina_codes[0])
    assert status == 403 and BAD_CODE in text


async def test_regeneration_withdraws_the_old_codes(
    app: FastAPI, people: dict[str, Person], clock: FrozenClock
) -> None:
    # A lost sheet is made worthless by printing a new one.
    old = await _new_codes(app, people["adam"], clock)
    new = await _new_codes(app, people["adam"], clock)
    assert not set(old) & set(new)
    assert (await _recover(app, people["adam"], old[0]))[0] == 403
    assert (await _recover(app, people["adam"], new[0]))[0] == 303


async def test_recovery_guessing_is_limited(
    app: FastAPI, people: dict[str, Person], clock: FrozenClock
) -> None:
    # Guessing codes after a stolen password: a handful of tries, then a lockout.
    codes = await _new_codes(app, people["adam"], clock)
    limit = LIMITS[(Factor.RECOVERY, Dimension.ACCOUNT)]
    async with Browser(app) as browser:
        await browser.login("adam", people["adam"].password)
        for _ in range(limit):
            assert (await browser.recovery("aaaa-aaaa-aaaa-aaaa")).status_code == 403
        assert (await browser.recovery(codes[0])).status_code == 429


async def test_regeneration_needs_a_fresh_mfa_login(
    app: FastAPI, people: dict[str, Person], clock: FrozenClock
) -> None:
    async with Browser(app) as browser:
        # A password-only session cannot mint codes that stand in for a second factor.
        await browser.login("casey", people["casey"].password)
        refused = await browser.http.post(
            "/account/recovery-codes", data={"csrf_token": browser.token}
        )
        assert refused.status_code == 403 and not CODE.search(refused.text)
    async with Browser(app) as browser:
        # An old session (stolen cookie) must sign in again first.
        await _mfa_login(browser, people["adam"], clock)
        clock.advance(timedelta(minutes=16))
        stale = await browser.http.post(
            "/account/recovery-codes", data={"csrf_token": browser.token}
        )
        assert stale.status_code == 403 and not CODE.search(stale.text)
        # And never without the CSRF token.
        await _mfa_login(browser, people["adam"], clock)
        forged = await browser.http.post("/account/recovery-codes", data={"csrf_token": "x"})
        assert forged.status_code == 403 and not CODE.search(forged.text)


# PostgreSQL only: on SQLite (one writer) the second regeneration waits for the first's
# write lock and then withdraws its batch.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_concurrent_regenerations_leave_one_batch(
    platform: Platform, people: dict[str, Person]
) -> None:
    # Two "new codes" at once (a double click, two tabs, an attacker with a stolen session
    # racing the owner): each withdraws the unused codes it can see, and neither can see the
    # other's uncommitted batch. Both batches must not stay valid: the sheet the owner keeps
    # would not be the only one that works.
    pepper = LoginRuntime.build(platform).recovery_pepper
    adam = people["adam"]
    actor = Actor.user(adam.user_id, None)

    async def regenerate() -> list[str]:
        async with platform.services() as (uow, ctx):
            user = await ctx.session.get(User, adam.user_id)
            assert user is not None
            codes = await RecoveryCodes(ctx, pepper).regenerate(user, actor=actor)
            await uow.commit()
            return codes

    old = await regenerate()
    async with platform.services() as (first_uow, first_ctx):
        user = await first_ctx.session.get(User, adam.user_id)
        assert user is not None
        first = await RecoveryCodes(first_ctx, pepper).regenerate(user, actor=actor)
        second_task = asyncio.create_task(regenerate())
        await settled(platform, second_task)
        await first_uow.commit()
    second = await second_task

    async with platform.services() as (_uow, ctx):
        user = await ctx.session.get(User, adam.user_id)
        assert user is not None
        codes = RecoveryCodes(ctx, pepper)
        assert await codes.remaining(adam.user_id) == CODES_PER_BATCH
        # The later batch is the one that works; the earlier two are withdrawn.
        assert await codes.use(user, old[0]) is RecoveryVerdict.BAD_CODE
        assert await codes.use(user, first[0]) is RecoveryVerdict.BAD_CODE
        assert await codes.use(user, second[0]) is RecoveryVerdict.ACCEPTED
