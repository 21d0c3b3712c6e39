"""The seeded demo world and a PDP reading it, with a small language for asking questions.

``world.ask("bob", Permission.VEHICLE_LOCK, "ALICE-1")`` builds the request a
verified token of bob's would make (all scopes, a fresh multi-factor sign-in, his home
tenant unless told otherwise) and returns the PDP's decision. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from joserfc.jwk import ECKey
from sqlalchemy import select

from fleetward.audit.recorder import Actor
from fleetward.authz.decision import (
    PLATFORM_ID,
    AuthzRequest,
    Decision,
    PrincipalKind,
    PrincipalRef,
    RequestContext,
    ResourceKind,
    ResourceRef,
)
from fleetward.authz.entities import SessionRelations
from fleetward.authz.pdp import CedarPdp, PdpConfig
from fleetward.authz.permissions import Permission
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.demo.world import PEOPLE, seed_demo_world
from fleetward.identity.acr import Acr
from fleetward.identity.models import Tenant, User
from fleetward.identity.oauth.client_side import public_jwks_of
from fleetward.identity.oauth.clients import ClientRegistry, ClientSpec
from fleetward.identity.oauth.policy import CLIENT_CREDENTIALS
from fleetward.identity.oauth_models import ClientType
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.models import DealerCase, FleetGroup, SupportCase, Vehicle

SEEDER = Actor.system("authz-test")
PARTNER_APP = "insureco-app"
WORKLOAD_APP = "acme-telemetry"
ALL_SCOPES = frozenset(p.value for p in Permission)
HOME = {name: tenant for name, tenant, _ in PEOPLE} | {
    PARTNER_APP: "insureco",
    WORKLOAD_APP: "acme-logistics",
}


@dataclass
class World:
    ctx: ServiceContext
    clock: FrozenClock
    pdp: CedarPdp
    users: dict[str, User] = field(default_factory=dict)
    tenants: dict[str, Tenant] = field(default_factory=dict)
    vehicles: dict[str, Vehicle] = field(default_factory=dict)
    groups: dict[tuple[str, str], FleetGroup] = field(default_factory=dict)
    dealer_cases: dict[str, DealerCase] = field(default_factory=dict)
    support_cases: dict[str, SupportCase] = field(default_factory=dict)

    def target(self, name: str) -> ResourceRef:
        """A resource by its demo-world name (see test_policy_table's docstring)."""
        kind, _, rest = name.partition(":")
        if not rest:
            if name == "platform":
                return ResourceRef(ResourceKind.PLATFORM, PLATFORM_ID)
            if name == "unknown-vehicle":
                return ResourceRef.vehicle("veh_aaaaaaaaaaaaaaaaaaaaaaaaaa")
            return ResourceRef.vehicle(self.vehicles[name].id)
        if kind == "tenant":
            return ResourceRef(ResourceKind.TENANT, self.tenants[rest].id)
        if kind == "group":
            fleet, _, group_name = rest.partition("/")
            return ResourceRef(ResourceKind.FLEET_GROUP, self.groups[(fleet, group_name)].id)
        if kind == "case":
            return ResourceRef(ResourceKind.DEALER_CASE, self.dealer_cases[rest].id)
        if kind == "account":
            return ResourceRef(ResourceKind.ACCOUNT, self.users[rest].id)
        if kind == "support-case":
            return ResourceRef(ResourceKind.SUPPORT_CASE, self.support_cases[rest].id)
        if kind == "client":
            return ResourceRef(ResourceKind.CLIENT_REGISTRATION, rest)
        raise KeyError(name)

    def principal(self, who: str) -> PrincipalRef:
        if who == PARTNER_APP:
            return PrincipalRef(PrincipalKind.PARTNER, PARTNER_APP)
        if who == WORKLOAD_APP:
            return PrincipalRef(PrincipalKind.WORKLOAD, WORKLOAD_APP)
        return PrincipalRef(PrincipalKind.USER, self.users[who].id)

    def request(
        self,
        who: str,
        permission: Permission,
        target: ResourceRef | str,
        *,
        scopes: frozenset[str] = ALL_SCOPES,
        acr: str = Acr.MFA.value,
        auth_age: timedelta = timedelta(seconds=30),
        tenant_slug: str | None = None,
        region: str | None = None,
        command: Permission | None = None,
    ) -> AuthzRequest:
        now = self.clock.now()
        context = RequestContext(
            now=now,
            tenant_id=self.tenants[tenant_slug or HOME[who]].id,
            scopes=scopes,
            acr=acr,
            auth_time=now - auth_age,
            region=region,
            command=command,
        )
        resource = self.target(target) if isinstance(target, str) else target
        return AuthzRequest(self.principal(who), permission, resource, context)

    async def ask(
        self,
        who: str,
        permission: Permission,
        target: ResourceRef | str,
        *,
        pdp: CedarPdp | None = None,
        scopes: frozenset[str] = ALL_SCOPES,
        acr: str = Acr.MFA.value,
        auth_age: timedelta = timedelta(seconds=30),
        tenant_slug: str | None = None,
        region: str | None = None,
        command: Permission | None = None,
    ) -> Decision:
        request = self.request(
            who,
            permission,
            target,
            scopes=scopes,
            acr=acr,
            auth_age=auth_age,
            tenant_slug=tenant_slug,
            region=region,
            command=command,
        )
        return await (pdp or self.pdp).decide(request)


async def _register_clients(ctx: ServiceContext, tenants: dict[str, Tenant]) -> None:
    registry = ClientRegistry(ctx)
    for client_id, kind, surface, scopes, slug in (
        (
            PARTNER_APP,
            ClientType.PARTNER,
            Surface.PARTNER,
            (Permission.VEHICLE_READ_STATUS, Permission.VEHICLE_READ_CHARGING),
            "insureco",
        ),
        (
            WORKLOAD_APP,
            ClientType.WORKLOAD,
            Surface.FLEET,
            (Permission.VEHICLE_READ_STATUS,),
            "acme-logistics",
        ),
    ):
        await registry.register(
            ClientSpec(
                client_id,
                client_id,
                kind,
                (surface,),
                scopes,
                (CLIENT_CREDENTIALS,),
                tenant_id=tenants[slug].id,
                jwks=public_jwks_of(ECKey.generate_key("P-256")),
            ),
            actor=SEEDER,
        )


async def build_world(platform: Platform, ctx: ServiceContext, clock: FrozenClock) -> World:
    await seed_demo_world(ctx, platform.passwords)
    session = ctx.session
    tenants = {t.slug: t for t in await session.scalars(select(Tenant))}
    await _register_clients(ctx, tenants)
    the_world = World(ctx, clock, CedarPdp(SessionRelations(session), config=PdpConfig()))
    the_world.tenants = tenants
    the_world.users = {u.username: u for u in await session.scalars(select(User))}
    the_world.vehicles = {v.label: v for v in await session.scalars(select(Vehicle))}
    slugs = {t.id: t.slug for t in tenants.values()}
    the_world.groups = {
        (slugs[g.tenant_id], g.name): g for g in await session.scalars(select(FleetGroup))
    }
    labels = {v.id: label for label, v in the_world.vehicles.items()}
    the_world.dealer_cases = {
        labels[c.vehicle_id]: c for c in await session.scalars(select(DealerCase))
    }
    names = {u.id: name for name, u in the_world.users.items()}
    the_world.support_cases = {
        names[c.agent_user_id]: c for c in await session.scalars(select(SupportCase))
    }
    return the_world
