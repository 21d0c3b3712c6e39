"""Revoking a person's tokens while one of their refresh tokens is being rotated.

The rotation holds the old token's row and inserts the new token; the revocation's UPDATE
waits for it. On PostgreSQL (read committed) that UPDATE cannot see the token the rotation
inserted: without a second pass the new refresh token outlives the revocation. Both stores
(on SQLite the revocation waits for the rotation's write lock instead).
"""

from __future__ import annotations

import asyncio
import hashlib
from datetime import timedelta

from sqlalchemy import select, update

from fleetward.audit.recorder import Actor
from fleetward.core.ids import new_id
from fleetward.identity.oauth.revocation import RevocationService
from fleetward.identity.oauth_models import RefreshToken
from fleetward.platform import Platform
from unit.identity.oauth.kit import MOBILE, build_world


def _token(platform: Platform, user_id: str, tenant_id: str, family: str) -> RefreshToken:
    now = platform.clock.now()
    return RefreshToken(
        id=new_id("rft"),
        token_hash=hashlib.sha256(new_id("raw").encode()).hexdigest(),
        family_id=family,
        client_id=MOBILE,
        user_id=user_id,
        tenant_id=tenant_id,
        scope="vehicle:read_status",
        surface="mobile",
        dpop_jkt=None,
        auth_time=now,
        acr="mfa",
        amr=["pwd", "otp"],
        created_at=now,
        expires_at=now + timedelta(days=30),
        used_at=None,
        revoked_at=None,
        revoked_reason=None,
    )


async def test_a_revocation_ends_the_token_a_rotation_in_flight_inserts(
    platform: Platform,
) -> None:
    world = await build_world(platform)
    alice, tenant = world.users["alice"], world.tenants["consumer"]
    family = new_id("fam")
    old = _token(platform, alice.id, tenant.id, family)
    async with platform.services() as (uow, ctx):
        ctx.session.add(old)
        await uow.commit()

    async def revoke() -> None:
        async with platform.services() as (uow, ctx):
            service = RevocationService(ctx, platform.identity.revocations)
            await service.revoke_user(alice.id, reason="compromised", actor=Actor.system("t"))
            await uow.commit()

    async with platform.services() as (rotation, ctx):
        # The rotation in flight: the old token spent (its row held), the new one written.
        await ctx.session.execute(
            update(RefreshToken)
            .where(RefreshToken.id == old.id, RefreshToken.used_at.is_(None))
            .values(used_at=platform.clock.now())
        )
        new = _token(platform, alice.id, tenant.id, family)
        ctx.session.add(new)
        await ctx.session.flush()
        revoking = asyncio.create_task(revoke())
        await asyncio.sleep(0.3)
        assert not revoking.done()  # waiting for the rotation (its row, or the write lock)
        await rotation.commit()
    await asyncio.wait_for(revoking, 10)
    async with platform.unit_of_work() as uow:
        standing = list(
            await uow.session.scalars(
                select(RefreshToken.id).where(
                    RefreshToken.user_id == alice.id, RefreshToken.revoked_at.is_(None)
                )
            )
        )
    assert standing == []
