"""Authentication stays closed until durable revocations are loaded, and a revocation
survives a restart of the platform."""

from __future__ import annotations

from datetime import timedelta

from fleetward.app import build_app
from fleetward.audit.recorder import Actor
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.oauth.revocation import RevocationService
from fleetward.identity.tokens.issuing import IssuedToken
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.store.migrate import upgrade
from support.http import client_for


def _token(platform: Platform, clock: FrozenClock) -> str:
    return _issued(platform, clock).token


def _issued(platform: Platform, clock: FrozenClock) -> IssuedToken:
    return platform.identity.tokens.issue(
        subject="usr_gate",
        client_id="cli_gate",
        tenant="ten_gate",
        surface=Surface.MOBILE,
        scopes=["vehicle:read_status"],
        auth_time=clock.now(),
        acr=Acr.MFA.value,
        amr=["pwd", "otp"],
        token_family=None,
        subject_type="user",
    )


async def test_closed_until_store_ready_then_open(settings: Settings, clock: FrozenClock) -> None:
    platform = Platform.build(settings, clock=clock)
    app = build_app(settings, platform=platform)
    headers = {"authorization": f"Bearer {_token(platform, clock)}"}
    async with client_for(app) as client:
        before = await client.get("/mobile/v1/me", headers=headers)
        await upgrade(platform.engine)
        after = await client.get("/mobile/v1/me", headers=headers)
    await platform.close()
    # Unmigrated store: no revocations could be loaded, so no token is trusted.
    assert before.status_code == 503
    assert before.json()["type"] == "urn:fleetward:problem:revocations-not-loaded"
    assert after.status_code == 200


async def test_revocation_survives_restart(settings: Settings, clock: FrozenClock) -> None:
    first = Platform.build(settings, clock=clock)
    await upgrade(first.engine)
    token = _token(first, clock)
    clock.advance(timedelta(seconds=2))
    async with first.services() as (uow, ctx):
        await RevocationService(ctx, first.identity.revocations).revoke_user(
            "usr_gate", reason="compromised", actor=Actor.system("test")
        )
        await uow.commit()
    await first.close()

    # A new process: fresh in-memory revocations, same store and signing keys.
    second = Platform.build(settings, clock=clock)
    app = build_app(settings, platform=second)
    async with client_for(app) as client:
        response = await client.get("/mobile/v1/me", headers={"authorization": f"Bearer {token}"})
    await second.close()
    assert response.status_code == 401
    assert response.json()["reason"] == "revoked"


async def test_introspection_and_revocation_wait_for_revocations_too(
    settings: Settings, clock: FrozenClock
) -> None:
    # Until revocations are loaded no token is judged: introspection would otherwise call a
    # token revoked before a restart "active".
    platform = Platform.build(settings, clock=clock)
    app = build_app(settings, platform=platform)
    form = {"token": _token(platform, clock), "client_id": "cli_gate"}
    async with client_for(app) as client:
        answers = [
            await client.post(path, data=form) for path in ("/oauth/introspect", "/oauth/revoke")
        ]
    await platform.close()
    for answer in answers:
        assert answer.status_code == 503, answer.text
        assert answer.json()["type"] == "urn:fleetward:problem:revocations-not-loaded"


async def test_a_revoked_token_stays_revoked_through_its_expiry_leeway_after_a_restart(
    settings: Settings, clock: FrozenClock
) -> None:
    # Verifiers accept a token until its expiry plus their leeway: a token revoked by its
    # id must stay revoked that long, also in a process started after its expiry.
    first = Platform.build(settings, clock=clock)
    await upgrade(first.engine)
    issued = _issued(first, clock)
    async with first.services() as (uow, ctx):
        await RevocationService(ctx, first.identity.revocations).revoke_access_token(
            issued.claims.jti,
            until=issued.claims.expires_at,
            reason="revoked-by-client",
            actor=Actor.system("test"),
        )
        await uow.commit()
    await first.close()
    clock.advance(issued.claims.expires_at - clock.now() + timedelta(seconds=10))

    second = Platform.build(settings, clock=clock)
    app = build_app(settings, platform=second)
    headers = {"authorization": f"Bearer {issued.token}"}
    async with client_for(app) as client:
        response = await client.get("/mobile/v1/me", headers=headers)
    await second.close()
    assert response.status_code == 401
    assert response.json()["reason"] == "revoked"
