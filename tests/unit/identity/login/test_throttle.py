"""Brute force and credential stuffing: per-account, per-network and spraying limits.

Each test names the attack it stops. Runs on SQLite and PostgreSQL: the counters live in
the store, so they hold across replicas.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import httpx
import pyotp
from fastapi import FastAPI
from sqlalchemy import func, select

from fleetward.app import build_app
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.identity.credential_models import LoginSession, LoginThrottle
from fleetward.identity.login.answers import BAD_CREDENTIALS
from fleetward.identity.login.flow import PasswordStep
from fleetward.identity.login.limits import (
    LIMITS,
    MAX_BLOCK,
    SPRAY_ACCOUNTS,
    WINDOW,
    Dimension,
    Factor,
    backoff,
)
from fleetward.identity.login.outcomes import Failure, Refused
from fleetward.identity.login.request import LoginRequest
from fleetward.identity.login.runtime import LoginRuntime
from fleetward.identity.login.throttle import Throttle
from fleetward.identity.oauth_models import Client, ClientType
from fleetward.platform import Platform
from fleetward.settings import Settings
from unit.identity.login.login_support import Browser, Person

ACCOUNT_LIMIT = LIMITS[(Factor.PASSWORD, Dimension.ACCOUNT)]
IP_LIMIT = LIMITS[(Factor.PASSWORD, Dimension.IP)]
TOTP_LIMIT = LIMITS[(Factor.TOTP, Dimension.ACCOUNT)]


async def _count(platform: Platform, name: EventName, reason: str | None = None) -> int:
    async with platform.services() as (_uow, ctx):
        query = select(func.count()).select_from(AuditRecord).where(AuditRecord.name == name)
        if reason is not None:
            query = query.where(AuditRecord.reason == reason)
        return int(await ctx.session.scalar(query) or 0)


async def _sessions(platform: Platform) -> int:
    async with platform.services() as (_uow, ctx):
        return int(await ctx.session.scalar(select(func.count()).select_from(LoginSession)) or 0)


def _locked(response: httpx.Response) -> int:
    assert response.status_code == 429, response.status_code
    assert "Too many attempts" in response.text
    return int(response.headers["retry-after"])


def test_backoff_doubles_and_is_bounded() -> None:
    # A lockout must end on its own: no attacker can lock an account for more than 15 min.
    blocks = [backoff(ACCOUNT_LIMIT + n, ACCOUNT_LIMIT) for n in range(12)]
    assert blocks[:4] == [timedelta(minutes=m) for m in (1, 2, 4, 8)]
    assert max(blocks) == MAX_BLOCK == blocks[-1]


async def test_account_lockout_then_network_lockout(
    app: FastAPI, platform: Platform, people: dict[str, Person]
) -> None:
    async with Browser(app) as browser:
        # Password guessing on one account: refused after the per-account limit, and a
        # locked account refuses even its right password (no oracle during a lockout).
        for _ in range(ACCOUNT_LIMIT):
            assert (await browser.login("casey", "guess")).status_code == 403
        assert _locked(await browser.login("casey", people["casey"].password)) == 60
        # Credential stuffing from one network: spreading guesses over accounts (few
        # enough to stay below the spraying threshold) ends at the per-network limit.
        failures = ACCOUNT_LIMIT
        for account in range(SPRAY_ACCOUNTS - 2):
            for _ in range(ACCOUNT_LIMIT - 1):
                if failures == IP_LIMIT:
                    break
                assert (await browser.login(f"victim-{account}", "guess")).status_code == 403
                failures += 1
        assert failures == IP_LIMIT
        assert _locked(await browser.login("tina", people["tina"].password)) > 0
    # The same person from another network is not punished for the attacker's network.
    async with Browser(app, ip="198.51.100.20") as elsewhere:
        response = await elsewhere.login("tina", people["tina"].password)
        assert response.status_code == 303
    lockouts = await _count(platform, EventName.LOGIN_LOCKED_OUT)
    assert lockouts >= 2  # the account, then the network


async def test_unknown_account_locks_exactly_like_a_real_one(
    app: FastAPI, people: dict[str, Person]
) -> None:
    # Enumeration through lockout: only real accounts locking would reveal which exist.
    async with Browser(app) as browser:
        real = [await browser.login("casey", "guess") for _ in range(ACCOUNT_LIMIT + 1)]
    async with Browser(app, ip="198.51.100.30") as other:
        ghost = [await other.login("no-such-person", "guess") for _ in range(ACCOUNT_LIMIT + 1)]
    assert [r.status_code for r in real] == [r.status_code for r in ghost]
    assert real[-1].headers["retry-after"] == ghost[-1].headers["retry-after"]


async def test_lockout_expires_and_backs_off(
    app: FastAPI, platform: Platform, people: dict[str, Person], clock: FrozenClock
) -> None:
    # Denial of service against a victim: the lockout ends by itself, and the right
    # password then works and clears the account's streak.
    async with Browser(app) as browser:
        for _ in range(ACCOUNT_LIMIT):
            await browser.login("casey", "guess")
        wait = _locked(await browser.login("casey", "guess"))
        clock.advance(timedelta(seconds=wait))
        # One more wrong guess after the block: the next block is twice as long.
        assert (await browser.login("casey", "guess")).status_code == 403
        assert _locked(await browser.login("casey", "guess")) == 120
        clock.advance(timedelta(seconds=120))
        assert (await browser.login("casey", people["casey"].password)).status_code == 303
        # The streak is over: a typo now is an ordinary failure, not a lockout.
        assert (await browser.login("casey", "typo")).status_code == 403
        assert (await browser.login("casey", people["casey"].password)).status_code == 303


async def test_quiet_hour_resets_the_budget(
    app: FastAPI, people: dict[str, Person], clock: FrozenClock
) -> None:
    async with Browser(app) as browser:
        for _ in range(ACCOUNT_LIMIT - 1):
            await browser.login("casey", "guess")
        clock.advance(WINDOW + timedelta(seconds=1))
        # A fresh window: the old failures no longer count towards the limit.
        for _ in range(ACCOUNT_LIMIT - 1):
            assert (await browser.login("casey", "guess")).status_code == 403
        assert (await browser.login("casey", people["casey"].password)).status_code == 303


async def test_one_network_failing_on_many_accounts_is_blocked(
    app: FastAPI, platform: Platform, people: dict[str, Person]
) -> None:
    # Password spraying: one guess per account, many accounts, from one network.
    async with Browser(app) as sprayer:
        for n in range(SPRAY_ACCOUNTS):
            assert (await sprayer.login(f"someone-{n}", "Winter2026!")).status_code == 403
        _locked(await sprayer.login("casey", people["casey"].password))
    assert await _count(platform, EventName.LOGIN_SPRAYING_DETECTED) == 1
    # Repeating the same account does not count as spraying.
    async with Browser(app, ip="198.51.100.40") as typist:
        for _ in range(3):
            await typist.login("casey", "typo")
        assert (await typist.login("casey", people["casey"].password)).status_code == 303
    assert await _count(platform, EventName.LOGIN_SPRAYING_DETECTED) == 1


async def test_ipv6_neighbours_share_a_budget(app: FastAPI, people: dict[str, Person]) -> None:
    # Address hopping: one IPv6 subscriber holds a /64 and can use any address in it.
    for n in range(SPRAY_ACCOUNTS):
        async with Browser(app, ip=f"2001:db8:1:2::{n + 1:x}") as hop:
            assert (await hop.login(f"someone-{n}", "Winter2026!")).status_code == 403
    async with Browser(app, ip="2001:db8:1:2::ffff") as hop:
        _locked(await hop.login("casey", people["casey"].password))
    async with Browser(app, ip="2001:db8:1:3::1") as neighbour:
        assert (await neighbour.login("casey", people["casey"].password)).status_code == 303


async def test_behind_a_trusted_proxy_each_client_has_its_own_network_budget(
    settings: Settings, platform: Platform, people: dict[str, Person]
) -> None:
    # Spraying through the deployment's reverse proxy: the counters are per client, as the
    # proxy reports it, not per proxy; otherwise one sprayer locks everybody out.
    proxy = "10.0.0.2"
    proxied = build_app(settings.model_copy(update={"trusted_proxies": [proxy]}), platform=platform)
    async with Browser(proxied, ip=proxy) as sprayer:
        sprayer.http.headers["x-forwarded-for"] = "198.51.100.66"
        for n in range(SPRAY_ACCOUNTS):
            assert (await sprayer.login(f"someone-{n}", "Winter2026!")).status_code == 403
        _locked(await sprayer.login("casey", people["casey"].password))
    async with Browser(proxied, ip=proxy) as neighbour:
        neighbour.http.headers["x-forwarded-for"] = "192.0.2.77"
        assert (await neighbour.login("casey", people["casey"].password)).status_code == 303
    # An address a client merely claims, not through a trusted proxy, changes nothing.
    async with Browser(proxied, ip="198.51.100.66") as direct:
        direct.http.headers["x-forwarded-for"] = "192.0.2.78"
        _locked(await direct.login("casey", people["casey"].password))


async def test_failures_through_one_app_never_lock_everyone_out_of_it(
    app: FastAPI, platform: Platform, people: dict[str, Person], clock: FrozenClock
) -> None:
    # Denial of service on a whole application: failures from many networks through the
    # mobile app (stuffing, or at scale just everyone's typos) must not refuse the next
    # person's right password through the same app. Stuffing through one app is the
    # credential-stuffing alert's to find: each failure names its client.
    async with platform.services() as (uow, ctx):
        ctx.session.add(
            Client(
                id="fleetward-mobile",
                name="Fleetward mobile app",
                client_type=ClientType.PUBLIC_MOBILE,
                tenant_id=None,
                redirect_uris=["https://app.example/cb"],
                grant_types=["authorization_code"],
                scopes=[],
                surfaces=["mobile"],
                jwks=None,
                require_dpop=True,
                created_at=clock.now(),
                disabled_at=None,
            )
        )
        await uow.commit()
    stuffed = 12
    for n in range(stuffed):
        async with Browser(app, ip=f"198.51.100.{n + 1}") as stuffer:
            response = await stuffer.login(
                f"leaked-{n}", "Summer2026!", client_id="fleetward-mobile"
            )
            assert response.status_code == 403, n
    # No budget is kept per application at all (it was 500 failures an hour, then every
    # login through the app refused): only accounts and networks are counted.
    async with platform.services() as (_uow, ctx):
        keys = (await ctx.session.scalars(select(LoginThrottle.key))).all()
    assert keys and not [k for k in keys if "fleetward-mobile" in k], keys
    async with Browser(app, ip="192.0.2.99") as person:
        response = await person.login(
            "casey", people["casey"].password, client_id="fleetward-mobile"
        )
        assert response.status_code == 303, response.status_code
    async with platform.services() as (_uow, ctx):
        failures = (
            await ctx.session.scalars(
                select(AuditRecord).where(AuditRecord.name == EventName.LOGIN_FAILED)
            )
        ).all()
    assert len(failures) == stuffed
    assert {f.details.get("client") for f in failures} == {"fleetward-mobile"}


async def test_totp_guessing_is_limited_per_account(
    app: FastAPI, platform: Platform, people: dict[str, Person], clock: FrozenClock
) -> None:
    # Second-factor brute force by someone who has the password.
    assert people["adam"].totp_secret is not None
    right = pyotp.TOTP(people["adam"].totp_secret).at(clock.now())
    wrong = "000000" if right != "000000" else "111111"
    async with Browser(app) as browser:
        await browser.login("adam", people["adam"].password)
        for _ in range(TOTP_LIMIT):
            assert (await browser.totp(wrong)).status_code == 403
        _locked(await browser.totp(right))
    # The counter belongs to the account, not to the browser or the network.
    async with Browser(app, ip="198.51.100.50") as other:
        await other.login("adam", people["adam"].password)
        _locked(await other.totp(right))
    assert await _sessions(platform) == 0
    assert await _count(platform, EventName.LOGIN_FAILED, "bad-totp") == TOTP_LIMIT


async def test_every_entry_point_shares_the_counters(
    app: FastAPI, platform: Platform, people: dict[str, Person]
) -> None:
    # A second endpoint or API version calling the same step cannot reset the budget.
    runtime = LoginRuntime.build(platform)
    async with Browser(app) as browser:
        for _ in range(ACCOUNT_LIMIT - 2):
            await browser.login("casey", "guess")
        for _ in range(2):
            other_route = await PasswordStep(runtime).attempt(
                "casey", "guess", LoginRequest(), network="203.0.113.99"
            )
            assert other_route == Refused(Failure.BAD_CREDENTIALS)
        _locked(await browser.login("casey", people["casey"].password))


async def test_parallel_guesses_cannot_exceed_the_limit(
    app: FastAPI, platform: Platform, people: dict[str, Person]
) -> None:
    # Racing the counter: a burst of parallel guesses gets exactly the limit checked.
    async with Browser(app) as browser:
        await browser.open_login()
        responses = await asyncio.gather(
            *(browser.login("casey", f"guess-{n}") for n in range(ACCOUNT_LIMIT * 3))
        )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(403) == ACCOUNT_LIMIT
    assert statuses.count(429) == ACCOUNT_LIMIT * 2
    assert all(BAD_CREDENTIALS in r.text for r in responses if r.status_code == 403)
    assert await _count(platform, EventName.LOGIN_FAILED, "bad-credentials") == ACCOUNT_LIMIT


async def test_stale_counters_are_pruned(
    platform: Platform, people: dict[str, Person], clock: FrozenClock
) -> None:
    runtime = LoginRuntime.build(platform)
    for n in range(3):
        await PasswordStep(runtime).attempt(f"ghost-{n}", "x", LoginRequest(), network="192.0.2.9")
    clock.advance(WINDOW + timedelta(minutes=1))
    async with platform.services() as (uow, ctx):
        removed = await Throttle(ctx).prune()
        await uow.commit()
        left = await ctx.session.scalar(select(func.count()).select_from(LoginThrottle))
    assert removed > 0 and left == 0
