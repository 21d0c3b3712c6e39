"""The per-vehicle command limit holds for bulk jobs created at an approval.

A bulk that waits for a second fleet admin was charged the cars' limit when it was asked
for, but its jobs are created at the approval, up to an hour later. Bulks asked for minute
after minute, each within the limit, and approved together sent every car more commands in
one minute than its limit. Over the real app and the demo world with the frozen clock (the
quota buckets refill only when the test advances it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select

from fleetward.app import build_app
from fleetward.audit.recorder import Actor
from fleetward.authz.permissions import Permission
from fleetward.commands.models import BulkState, CommandBulk, CommandJob
from fleetward.commands.runtime import commands_of
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.demo.clients import seed_demo_clients
from fleetward.identity.acr import Acr
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.settings import Settings
from support.api import Api
from support.commands import CLIENT_OF
from support.http import client_for
from unit.authz.kit import build_world

F = Surface.FLEET
CARS = ("ACME-N1", "ACME-N2")
MINUTE = timedelta(seconds=61)


@pytest.fixture
async def fleet(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock, settings: Settings
) -> AsyncIterator[Api]:
    """The demo world, a second fleet admin (olga), and bulks of two cars waiting for her."""
    world = await build_world(platform, ctx, clock)
    await seed_demo_clients(ctx, settings.data_dir)  # the fleet console sends commands
    acme = world.tenants["acme-logistics"]
    directory = Directory(ctx)
    olga = await directory.create_user(
        "olga", "Olga", acme, password_hash=None, actor=Actor.system("test")
    )
    await directory.grant_membership(olga, acme, Role.FLEET_ADMIN, actor=Actor.system("test"))
    await ctx.session.commit()
    world.users["olga"] = olga
    app = build_app(settings, platform=platform)
    runtime = commands_of(app)
    app.state.commands = dataclasses.replace(
        runtime, config=dataclasses.replace(runtime.config, approval_threshold=1)
    )
    async with client_for(app) as client:
        yield Api(world, platform, client)


def _auth(api: Api, who: str) -> dict[str, str]:
    """A fleet-console token of ``who`` with a fresh multi-factor sign-in."""
    user = api.world.users[who]
    now = api.platform.clock.now()
    token = api.platform.identity.tokens.issue(
        subject=user.id,
        client_id=CLIENT_OF[F],
        tenant=user.home_tenant_id,
        surface=F,
        scopes=sorted(p.value for p in Permission),
        auth_time=now - timedelta(seconds=30),
        acr=Acr.MFA.value,
        amr=["pwd", "otp"],
        token_family=None,
        subject_type="user",
    ).token
    return {"authorization": f"Bearer {token}"}


async def _ask(api: Api, key: str) -> str:
    response = await api.client.post(
        "/fleet/v1/bulk-commands",
        json={"command": "horn_lights", "vehicle_ids": [api.vehicle_id(x) for x in CARS]},
        headers={**_auth(api, "erin"), "idempotency-key": key},
    )
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "awaiting_approval"
    bulk_id: str = response.json()["id"]
    return bulk_id


async def _approve(api: Api, bulk_id: str) -> httpx.Response:
    return await api.client.post(
        f"/fleet/v1/bulk-commands/{bulk_id}/approve", headers=_auth(api, "olga")
    )


async def _jobs_per_car(api: Api) -> dict[str, int]:
    async with api.platform.unit_of_work() as uow:
        rows = await uow.session.execute(
            select(CommandJob.vehicle_id, func.count()).group_by(CommandJob.vehicle_id)
        )
    return {vehicle: int(n) for vehicle, n in rows}


async def test_approving_waiting_bulks_together_never_exceeds_a_cars_limit(
    fleet: Api, clock: FrozenClock
) -> None:
    api = fleet
    limit = api.platform.settings.quota_vehicle_commands_per_minute
    # A full minute's worth of bulks, each within the cars' limit when asked for...
    waiting = [await _ask(api, f"k-{n}") for n in range(limit)]
    clock.advance(MINUTE)
    # ... and one more the next minute (within the limit again).
    waiting.append(await _ask(api, "k-late"))
    clock.advance(MINUTE)
    # Approved together, in one minute: every car may be sent at most `limit` commands.
    answers = [await _approve(api, b) for b in waiting]
    dispatched = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code != 200]
    assert len(dispatched) == limit, [a.text for a in refused]
    assert all(a.json()["state"] == "dispatched" for a in dispatched)
    assert [a.status_code for a in refused] == [429]
    assert refused[0].headers["content-type"] == "application/problem+json"
    assert int(refused[0].headers["retry-after"]) >= 1
    assert await _jobs_per_car(api) == {api.vehicle_id(x): limit for x in CARS}
    # The refused approval changed nothing: the bulk still waits, with no job...
    async with api.platform.unit_of_work() as uow:
        last = await uow.session.get(CommandBulk, waiting[-1])
        assert last is not None and last.state is BulkState.AWAITING_APPROVAL
        assert last.approved_by is None
    # ... and is approved once the cars have room again.
    clock.advance(MINUTE)
    again = await _approve(api, waiting[-1])
    assert again.status_code == 200, again.text
    assert again.json()["state"] == "dispatched" and len(again.json()["jobs"]) == len(CARS)
