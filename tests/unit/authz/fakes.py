"""Hand-built relations for PDP tests that need no store (and states no store would hold)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fleetward.authz.decision import (
    AuthzRequest,
    PrincipalKind,
    PrincipalRef,
    RequestContext,
    ResourceRef,
)
from fleetward.authz.entities import (
    Grant,
    ObjectFacts,
    PrincipalFacts,
    Relations,
    VehicleFacts,
)
from fleetward.authz.permissions import Permission
from fleetward.identity.acr import Acr
from fleetward.identity.models import Role, TenantKind

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
EVERY_SCOPE = frozenset(p.value for p in Permission)
CONSUMER = "ten_consumer"
FLEET = "ten_fleet"
OTHER_FLEET = "ten_other_fleet"
DEALER = "ten_dealer"
PARTNER = "ten_partner"
OPS = "ten_ops"

ALICE = PrincipalRef(PrincipalKind.USER, "usr_alice")
CAR = ResourceRef.vehicle("veh_car")


def context(
    tenant: str = CONSUMER,
    *,
    scopes: frozenset[str] = EVERY_SCOPE,
    acr: str = Acr.MFA.value,
    auth_age: timedelta = timedelta(seconds=30),
    region: str | None = None,
    command: Permission | None = None,
) -> RequestContext:
    return RequestContext(NOW, tenant, scopes, acr, NOW - auth_age, region, command)


def request(
    principal: PrincipalRef,
    action: Permission,
    resource: ResourceRef = CAR,
    ctx: RequestContext | None = None,
) -> AuthzRequest:
    return AuthzRequest(principal, action, resource, ctx or context())


def person(
    user_id: str,
    tenant: str,
    kind: TenantKind,
    *roles: Role,
    operator_groups: frozenset[str] = frozenset(),
    dealer_cases: frozenset[str] = frozenset(),
    support_cases: frozenset[str] = frozenset(),
) -> PrincipalFacts:
    return PrincipalFacts(
        PrincipalRef(PrincipalKind.USER, user_id),
        tenant,
        kind,
        roles=frozenset(roles),
        operator_groups=operator_groups,
        dealer_cases=dealer_cases,
        support_cases=support_cases,
    )


def grant(holder: str, permissions: frozenset[Permission]) -> Grant:
    return Grant(holder, permissions, NOW - timedelta(days=1), NOW + timedelta(days=1))


def owned_car(
    owner: str | None = ALICE.id, vehicle_id: str = CAR.id, **changes: Any
) -> VehicleFacts:
    return replace(VehicleFacts(vehicle_id, CONSUMER, "NA", owner_id=owner), **changes)


def relations(
    principal: PrincipalFacts,
    *vehicles: VehicleFacts,
    objects: Sequence[ObjectFacts] = (),
) -> Relations:
    return Relations(
        principal=principal,
        vehicles={v.id: v for v in vehicles},
        objects={o.ref: o for o in objects},
    )


ALICE_FACTS = person(ALICE.id, CONSUMER, TenantKind.CONSUMER, Role.CUSTOMER)


class FakeSource:
    """Answers every batch with ``result`` (raises it if it is an exception; ``hang`` waits
    forever), keyed by principal id when a dict; records each call."""

    def __init__(
        self,
        result: Relations | BaseException | dict[str, Relations],
        *,
        hang: bool = False,
    ) -> None:
        self.result = result
        self.hang = hang
        self.calls: list[tuple[PrincipalRef, RequestContext, list[ResourceRef]]] = []

    async def relations(
        self, principal: PrincipalRef, context: RequestContext, resources: Sequence[ResourceRef]
    ) -> Relations:
        self.calls.append((principal, context, list(resources)))
        if self.hang:
            await asyncio.Event().wait()
        if isinstance(self.result, BaseException):
            raise self.result
        if isinstance(self.result, dict):
            return self.result[principal.id]
        return self.result
