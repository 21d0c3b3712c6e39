"""Refresh tokens: rotation on every use, reuse revokes the family, exactly one concurrent
winner, client and DPoP binding (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import select

from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth import hashing
from fleetward.identity.oauth_models import RefreshToken, RevocationEpoch, RevocationKind
from fleetward.identity.tokens import InvalidToken
from fleetward.platform import Platform
from unit.identity.oauth.kit import (
    CLI,
    CONSOLE,
    MOBILE,
    READ,
    OAuthWorld,
    build_world,
    code_flow,
    refresh,
)


@pytest.fixture
async def world(platform: Platform) -> OAuthWorld:
    return await build_world(platform)


async def _row(world: OAuthWorld, raw: str) -> RefreshToken:
    async with world.platform.unit_of_work() as uow:
        row = await uow.session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == hashing.digest(raw))
        )
    assert row is not None
    return row


async def test_every_refresh_rotates_and_stores_only_a_hash(world: OAuthWorld) -> None:
    first = await code_flow(world, "erin", CONSOLE, scope=READ)
    second = (await refresh(world, CONSOLE, first["refresh_token"])).json()
    assert second["refresh_token"] != first["refresh_token"]
    old, new = await _row(world, first["refresh_token"]), await _row(world, second["refresh_token"])
    assert old.used_at is not None and new.used_at is None
    assert old.family_id == new.family_id
    assert len(second["refresh_token"]) >= 43  # 256 random bits
    assert new.token_hash != second["refresh_token"]
    claims = await world.claims(second["access_token"], Surface.FLEET)
    assert claims.fam == new.family_id
    assert claims.auth_time == int(world.platform.clock.now().timestamp())


async def test_refresh_can_narrow_but_never_widen(world: OAuthWorld) -> None:
    first = await code_flow(world, "erin", CONSOLE, scope=READ)
    data = {
        "grant_type": "refresh_token",
        "refresh_token": first["refresh_token"],
        "scope": f"{READ} fleet:manage_groups",
        **world.auth(CONSOLE),
    }
    widened = await world.token(data)
    assert widened.json()["error"] == "invalid_scope"


async def test_reuse_of_a_spent_token_revokes_the_whole_family(world: OAuthWorld) -> None:
    first = await code_flow(world, "erin", CONSOLE, scope=READ)
    second = (await refresh(world, CONSOLE, first["refresh_token"])).json()
    await world.claims(second["access_token"], Surface.FLEET)

    replay = await refresh(world, CONSOLE, first["refresh_token"])
    assert replay.json()["error"] == "invalid_grant"
    # Every access token of the family stops validating at once...
    for token in (first["access_token"], second["access_token"]):
        with pytest.raises(InvalidToken):
            await world.claims(token, Surface.FLEET)
    # ...and the family's live refresh token is dead too.
    after = await refresh(world, CONSOLE, second["refresh_token"])
    assert after.json()["error"] == "invalid_grant"
    row = await _row(world, second["refresh_token"])
    assert row.revoked_reason == "refresh-token-reused"
    async with world.platform.unit_of_work() as uow:
        epochs = list(await uow.session.scalars(select(RevocationEpoch)))
        events = list(
            await uow.session.scalars(
                select(AuditRecord.name).where(AuditRecord.name.like("oauth:%"))
            )
        )
    assert [(e.kind, e.subject) for e in epochs] == [(RevocationKind.FAMILY, row.family_id)]
    assert "oauth:refresh_token:reused" in events
    assert "oauth:tokens:revoked" in events


async def test_reuse_with_a_wider_scope_still_revokes_the_family(world: OAuthWorld) -> None:
    # A thief holding a spent token adds a scope: reuse is detected before the scope is
    # judged, so the answer is invalid_grant and the whole family dies (fail closed).
    first = await code_flow(world, "erin", CONSOLE, scope=READ)
    second = (await refresh(world, CONSOLE, first["refresh_token"])).json()
    await world.claims(second["access_token"], Surface.FLEET)

    widened = await world.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": first["refresh_token"],
            "scope": f"{READ} fleet:manage_groups",
            **world.auth(CONSOLE),
        }
    )
    assert widened.json()["error"] == "invalid_grant"
    with pytest.raises(InvalidToken):
        await world.claims(second["access_token"], Surface.FLEET)
    after = await refresh(world, CONSOLE, second["refresh_token"])
    assert after.json()["error"] == "invalid_grant"
    row = await _row(world, second["refresh_token"])
    assert row.revoked_reason == "refresh-token-reused"


async def test_concurrent_double_refresh_has_exactly_one_winner(world: OAuthWorld) -> None:
    first = await code_flow(world, "erin", CONSOLE, scope=READ)
    answers = await asyncio.gather(
        refresh(world, CONSOLE, first["refresh_token"]),
        refresh(world, CONSOLE, first["refresh_token"]),
    )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200, 400], [a.text for a in answers]
    loser = next(a for a in answers if a.status_code == 400)
    assert loser.json()["error"] == "invalid_grant"
    async with world.platform.unit_of_work() as uow:
        rows = list(await uow.session.scalars(select(RefreshToken)))
    # One rotation only: the original and exactly one successor.
    assert len(rows) == 2
    # The loser presented a token that was spent by then: that is reuse, so the family is
    # revoked and the winner's tokens die too (a thief racing the client looks the same).
    winner = next(a for a in answers if a.status_code == 200).json()
    with pytest.raises(InvalidToken):
        await world.claims(winner["access_token"], Surface.FLEET)


async def test_another_client_presenting_it_gets_nothing_and_nothing_rotates(
    world: OAuthWorld,
) -> None:
    first = await code_flow(world, "alice", CLI, scope=READ, resource=Surface.MOBILE)
    stolen = await refresh(
        world, MOBILE, first["refresh_token"], dpop_key=ECKey.generate_key("P-256")
    )
    assert stolen.json()["error"] == "invalid_grant"
    row = await _row(world, first["refresh_token"])
    assert row.used_at is None and row.revoked_at is None
    # The rightful client still can.
    assert (await refresh(world, CLI, first["refresh_token"])).status_code == 200


async def test_public_clients_refresh_token_is_bound_to_its_dpop_key(world: OAuthWorld) -> None:
    key = ECKey.generate_key("P-256")
    first = await code_flow(world, "alice", MOBILE, scope=READ, dpop_key=key)
    assert (await _row(world, first["refresh_token"])).dpop_jkt == key.thumbprint()
    # Without a proof, or with another key: refused, and the token is not spent.
    for attempt in (None, ECKey.generate_key("P-256")):
        response = await refresh(world, MOBILE, first["refresh_token"], dpop_key=attempt)
        assert response.json()["error"] == "invalid_dpop_proof"
    good = await refresh(world, MOBILE, first["refresh_token"], dpop_key=key)
    assert good.status_code == 200, good.text
    claims = await world.claims(good.json()["access_token"], Surface.MOBILE)
    assert claims.cnf_jkt == key.thumbprint()


async def test_refresh_ends_with_the_membership(world: OAuthWorld) -> None:
    first = await code_flow(world, "erin", CONSOLE, scope=READ)
    async with world.platform.services() as (uow, ctx):
        from fleetward.identity.models import Membership

        membership = await ctx.session.scalar(
            select(Membership).where(Membership.user_id == world.users["erin"].id)
        )
        assert membership is not None
        membership.valid_until = ctx.clock.now()
        await uow.commit()
    clock = world.platform.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(seconds=1))
    response = await refresh(world, CONSOLE, first["refresh_token"])
    assert response.status_code == 400
    assert "access_token" not in response.json()


async def test_expired_refresh_token_is_refused(world: OAuthWorld) -> None:
    first = await code_flow(world, "erin", CONSOLE, scope=READ)
    clock = world.platform.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(days=15))  # beyond the idle lifetime
    assert (await refresh(world, CONSOLE, first["refresh_token"])).json()[
        "error"
    ] == "invalid_grant"


async def test_a_refresh_that_would_mint_no_scope_spends_nothing(world: OAuthWorld) -> None:
    # A scope of blanks names no scope: it passes as a "subset" of the grant's scopes, yet no
    # token could carry it. Refused before the refresh token is spent, or the client is left
    # with a spent token and no new one (and its next refresh revokes the family as reuse).
    first = await code_flow(world, "erin", CONSOLE, scope=READ)
    data = {
        "grant_type": "refresh_token",
        "refresh_token": first["refresh_token"],
        "scope": " ",
        **world.auth(CONSOLE),
    }
    refused = await world.token(data)
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_scope")
    assert (await _row(world, first["refresh_token"])).used_at is None
    again = await refresh(world, CONSOLE, first["refresh_token"])
    assert again.status_code == 200, again.text
    await world.claims(again.json()["access_token"], Surface.FLEET)


async def test_a_refused_dpop_proof_at_the_token_endpoint_is_audited(world: OAuthWorld) -> None:
    # A replayed proof is what a thief holding a captured request looks like: it is refused
    # before the grant is looked at, and that refusal is recorded like every other one at the
    # token endpoint (the proof's own reason in the details, never the proof or the token).
    key = ECKey.generate_key("P-256")
    first = await code_flow(world, "alice", MOBILE, scope=READ, dpop_key=key)
    proof = world.dpop(key)
    data = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    good = await world.token({**data, "client_id": MOBILE}, {"DPoP": proof})
    assert good.status_code == 200, good.text
    stolen = {**data, "refresh_token": good.json()["refresh_token"], "client_id": MOBILE}
    replayed = await world.token(stolen, {"DPoP": proof})
    assert replayed.json()["error"] == "invalid_dpop_proof"
    async with world.platform.unit_of_work() as uow:
        events = list(
            await uow.session.scalars(
                select(AuditRecord).where(AuditRecord.name == "oauth:token:refused")
            )
        )
    assert [(e.object_id, e.reason) for e in events] == [(MOBILE, "invalid_dpop_proof")]
    details = events[0].details
    assert details["dpop"] == "replayed"
    assert details["grant_type"] == "refresh_token"
    text = repr(details)
    assert proof not in text and stolen["refresh_token"] not in text
    # Nothing else changed: the presented refresh token is still unspent.
    assert (await _row(world, stolen["refresh_token"])).used_at is None
