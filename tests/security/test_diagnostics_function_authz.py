"""GET /admin/v1/diagnostics is a function (reports across vehicles, pseudonymised): the PDP
decides it on the platform, never on some vehicle the route picked, so a caller who may not
use it is a recorded 403 whatever the store holds (docs/authorization.md)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from fleetward.api.objects import encode_cursor
from fleetward.app import build_app
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, TenantKind
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.settings import Settings
from fleetward.vehicles.models import Vehicle
from support.api import Api
from support.http import client_for
from unit.authz.kit import ALL_SCOPES

A = Surface.ADMIN
ENDPOINT = "admin:diagnostics:list"
SEED = Actor.system("diagnostics-function-test")
PAST_THE_END = encode_cursor("dgr_" + "z" * 26)


async def _platform_decisions(platform: Platform) -> list[tuple[str, str, str]]:
    async with platform.services() as (_, ctx):
        rows = await ctx.session.scalars(
            select(AuditRecord).where(
                AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value,
                AuditRecord.endpoint == ENDPOINT,
            )
        )
        return sorted(
            (r.actor_id, f"{r.object_type}:{r.decision.value}", r.reason or "") for r in rows
        )


async def test_the_function_is_decided_and_recorded_on_the_platform(api: Api) -> None:
    # BFLA on the record: a platform admin and a support agent are refused the function
    # (403) on the full page and on a page past the last report, each refusal a decision on
    # the platform; the engineer's allow is one too, even for an empty page (it was asked on
    # the store's first vehicle, an object that has nothing to do with the question).
    users = api.world.users
    for path in ("/diagnostics", f"/diagnostics?cursor={PAST_THE_END}"):
        for who, status in (("judy", 403), ("heidi", 403), ("ken", 200)):
            response = await api.get(who, A, path)
            assert response.status_code == status, (who, path, response.status_code)
    decided = await _platform_decisions(api.platform)
    assert [d for d in decided if not d[1].startswith("vehicle:")] == sorted(
        [(users["judy"].id, "platform:denied", "no-relationship")] * 2
        + [(users["heidi"].id, "platform:denied", "no-relationship")] * 2
        + [(users["ken"].id, "platform:allowed", "engineer-diagnostics")] * 2
    )


async def test_a_store_without_vehicles_still_refuses_the_function(
    platform: Platform, ctx: ServiceContext, clock: FrozenClock, settings: Settings
) -> None:
    # With no vehicle to decide on, a non-engineer got a 200 (an empty page) and nothing was
    # recorded: the function must not depend on what the store holds.
    directory = Directory(ctx)
    staff = await directory.create_tenant("ops", "Operations", TenantKind.OPERATOR, actor=SEED)
    people = {}
    for name, role in (("admin", Role.PLATFORM_ADMIN), ("engineer", Role.ENGINEER)):
        user = await directory.create_user(name, name, staff, password_hash=None, actor=SEED)
        await directory.grant_membership(user, staff, role, actor=SEED)
        people[name] = user.id
    await ctx.session.commit()
    assert await ctx.session.scalar(select(Vehicle.id)) is None
    clock.advance(timedelta(seconds=1))  # memberships in force

    def headers(name: str) -> dict[str, str]:
        token = platform.identity.tokens.issue(
            subject=people[name],
            client_id="cli_admin",
            tenant=staff.id,
            surface=A,
            scopes=sorted(ALL_SCOPES),
            auth_time=clock.now() - timedelta(seconds=30),
            acr=Acr.MFA.value,
            amr=["pwd", "otp"],
            token_family=None,
            subject_type="user",
        ).token
        return {"authorization": f"Bearer {token}"}

    async with client_for(build_app(settings, platform=platform)) as client:
        refused = await client.get("/admin/v1/diagnostics", headers=headers("admin"))
        allowed = await client.get("/admin/v1/diagnostics", headers=headers("engineer"))
    assert refused.status_code == 403, refused.text
    assert allowed.status_code == 200 and allowed.json()["items"] == []
    assert await _platform_decisions(platform) == sorted(
        [
            (people["admin"], "platform:denied", "no-relationship"),
            (people["engineer"], "platform:allowed", "engineer-diagnostics"),
        ]
    )
