"""Fixtures for the login pages: the real app on the test platform, and a small cast.

Runs on SQLite and PostgreSQL (through the ``platform`` fixture).
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from fleetward.app import build_app
from fleetward.audit.recorder import Actor
from fleetward.identity.directory import Directory
from fleetward.identity.login.totp import TotpFactors
from fleetward.identity.models import Role, TenantKind
from fleetward.platform import Platform
from fleetward.settings import Settings
from unit.identity.login.login_support import Person

SEED = Actor.system("test-login")

# username -> (tenant kind, role, TOTP enrolled)
CAST: dict[str, tuple[TenantKind, Role, bool]] = {
    "casey": (TenantKind.CONSUMER, Role.CUSTOMER, False),  # password only
    "tina": (TenantKind.CONSUMER, Role.CUSTOMER, True),  # customer who enrolled TOTP
    "adam": (TenantKind.FLEET, Role.FLEET_ADMIN, True),  # high-risk, TOTP
    "hank": (TenantKind.DEALER, Role.DEALER_TECHNICIAN, False),  # high-risk, no factor
}


@pytest.fixture
def app(settings: Settings, platform: Platform) -> FastAPI:
    return build_app(settings, platform=platform)


@pytest.fixture
async def people(platform: Platform) -> dict[str, Person]:
    cast: dict[str, Person] = {}
    async with platform.services() as (uow, ctx):
        directory = Directory(ctx)
        tenants = {}
        for kind in {kind for kind, _, _ in CAST.values()}:
            tenants[kind] = await directory.create_tenant(
                f"t-{kind.value}", kind.value, kind, actor=SEED
            )
        for username, (kind, role, with_totp) in CAST.items():
            password = f"{username}-correct-horse-battery"
            user = await directory.create_user(
                username,
                username.title(),
                tenants[kind],
                password_hash=platform.passwords.hash(password),
                actor=SEED,
            )
            await directory.grant_membership(user, tenants[kind], role, actor=SEED)
            secret = None
            if with_totp:
                secret = await TotpFactors(ctx, platform.identity.data_key).enrol(user, actor=SEED)
            cast[username] = Person(username, password, user.id, secret)
        await uow.commit()
    return cast
