"""A username is taken once, even by two creations at once.

``Directory.create_user`` looks for the username before it writes; two creations of the same
username at once (a seed or provisioning job run twice, two replicas) can both look before
either writes. The store's unique username then refuses the second insert: that must be the
same 409 ``duplicate-name`` as a name already taken, never a store error (a 500). Here the
second creation's look is answered before the first commits, as the second of two racing
requests would see it. Both stores.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from fleetward.identity.directory import Directory
from fleetward.identity.errors import DuplicateName
from fleetward.identity.models import TenantKind, User
from fleetward.platform import Platform
from support.factories import FACTORY

USERNAME = "peter"


async def test_a_username_taken_while_a_creation_looked_is_a_conflict(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with platform.services() as (uow, ctx):
        tenant = await Directory(ctx).create_tenant(
            "initech", "Initech", TenantKind.FLEET, actor=FACTORY
        )
        await uow.commit()
    async with platform.services() as (_uow, late):
        look = late.session.scalar

        async def look_then_lose_the_race(statement: Any, *args: Any, **kwargs: Any) -> Any:
            found = await look(statement, *args, **kwargs)
            async with platform.services() as (uow, early):
                await Directory(early).create_user(
                    USERNAME, "Peter", tenant, password_hash=None, actor=FACTORY
                )
                await uow.commit()
            return found

        monkeypatch.setattr(late.session, "scalar", look_then_lose_the_race)
        with pytest.raises(DuplicateName) as refused:
            await Directory(late).create_user(
                USERNAME, "Peter 2", tenant, password_hash=None, actor=FACTORY
            )
        assert refused.value.reason == "username"
    async with platform.services() as (_uow, ctx):
        count = await ctx.session.scalar(
            select(func.count()).select_from(User).where(User.username == USERNAME)
        )
    assert count == 1
