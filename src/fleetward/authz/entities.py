"""The facts one authorization request needs, read from the relationship store, and their
form as Cedar entities.

Only what the request touches is read: the principal, the requested resources, and the
principal's relations to them, with queries chosen by the kind of tenant the principal acts
in (a consumer's request never reads dealer cases). Windows are checked here as well as by
the policy: a relation that is revoked, expired, not yet started or closed is left out of the
entities altogether, and the reason it was left out is kept as a note that names a default
denial ("window-expired" rather than "no-relationship").

Everything built here describes ONE principal: ``VehicleFacts.delegation`` is the
requesting user's delegation, not the vehicle's list of drivers. A batch therefore shares
one principal and one context (see :class:`RelationSource`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Final, Protocol

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetward.authz.decision import (
    PLATFORM_ID,
    PrincipalKind,
    PrincipalRef,
    Reason,
    RequestContext,
    ResourceKind,
    ResourceRef,
)
from fleetward.authz.permissions import Permission
from fleetward.core.windows import is_active
from fleetward.identity.models import Membership, Role, Tenant, TenantKind, User
from fleetward.identity.oauth_models import Client, ClientType
from fleetward.vehicles.models import (
    CaseStatus,
    CaseTechnician,
    DealerCase,
    DriverDelegation,
    FleetGroup,
    FleetVehicle,
    GroupVehicle,
    OperatorAssignment,
    Ownership,
    PartnerConsent,
    SupportCase,
    Vehicle,
)

# --------------------------------------------------------------------------- facts


class RelationsRefused(Exception):
    """The principal cannot be evaluated at all (unknown, disabled, not a member of the
    token's tenant): every request of the batch is denied with ``reason``."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    """A delegation or consent in force: who holds it, what it allows, and its window."""

    holder_id: str
    permissions: frozenset[Permission]
    valid_from: datetime
    valid_until: datetime


@dataclass(frozen=True, slots=True)
class PrincipalFacts:
    ref: PrincipalRef
    tenant_id: str
    tenant_kind: TenantKind
    roles: frozenset[Role] = frozenset()
    client_type: ClientType | None = None
    operator_groups: frozenset[str] = frozenset()
    dealer_cases: frozenset[str] = frozenset()
    support_cases: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class VehicleFacts:
    id: str
    tenant_id: str
    region: str
    owner_id: str | None = None
    fleet_id: str | None = None
    # Relations of the principal in force now: the principal's groups holding the vehicle,
    # its open cases on the vehicle, its delegation or consent.
    groups: frozenset[str] = frozenset()
    dealer_cases: frozenset[str] = frozenset()
    support_cases: frozenset[str] = frozenset()
    delegation: Grant | None = None
    consent: Grant | None = None


@dataclass(frozen=True, slots=True)
class ObjectFacts:
    """A resource other than a vehicle. ``tenant_id``: a tenant's own id, a group's fleet, a
    case's dealer; ``tenant_kind`` for tenants; ``support_cases`` for accounts."""

    ref: ResourceRef
    tenant_id: str | None = None
    tenant_kind: TenantKind | None = None
    support_cases: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Relations:
    principal: PrincipalFacts
    vehicles: Mapping[str, VehicleFacts] = field(default_factory=dict)
    objects: Mapping[ResourceRef, ObjectFacts] = field(default_factory=dict)
    # Why a relation to a resource was left out; names a default denial.
    notes: Mapping[ResourceRef, Reason] = field(default_factory=dict)

    def exists(self, resource: ResourceRef) -> bool:
        if resource.kind is ResourceKind.VEHICLE:
            return resource.id in self.vehicles
        return resource in self.objects


class RelationSource(Protocol):
    """Where the PDP gets the facts of a batch: one principal, one context, many resources.

    Implementations read state as of ``context.now`` and leave out every relation that is not
    in force then. Safe for concurrent use unless the implementation says otherwise.
    """

    async def relations(
        self, principal: PrincipalRef, context: RequestContext, resources: Sequence[ResourceRef]
    ) -> Relations: ...


class SessionRelations:
    """Reads in the caller's transaction (so a request sees its own changes). Follows the
    session's rule: one call at a time."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def relations(
        self, principal: PrincipalRef, context: RequestContext, resources: Sequence[ResourceRef]
    ) -> Relations:
        return await load_relations(self._session, principal, context, resources)


class StoreRelations:
    """Reads in a short session of its own per call (for checks outside any request, such as
    a command's re-authorization at delivery). Safe for concurrent use."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def relations(
        self, principal: PrincipalRef, context: RequestContext, resources: Sequence[ResourceRef]
    ) -> Relations:
        async with self._sessions() as session:
            return await load_relations(session, principal, context, resources)


# --------------------------------------------------------------------------- loading


async def load_relations(
    session: AsyncSession,
    principal: PrincipalRef,
    context: RequestContext,
    resources: Sequence[ResourceRef],
) -> Relations:
    now = context.now
    facts = await _principal(session, principal, context.tenant_id, now)
    loader = _Loader(session, facts, now, resources)
    await loader.load()
    return Relations(
        principal=loader.principal,
        vehicles=loader.vehicles,
        objects=loader.objects,
        notes=loader.notes,
    )


async def _principal(
    session: AsyncSession, ref: PrincipalRef, tenant_id: str, now: datetime
) -> PrincipalFacts:
    if ref.kind is PrincipalKind.USER:
        rows = (
            await session.execute(
                select(
                    User.disabled_at,
                    Tenant.kind,
                    Tenant.disabled_at,
                    Membership.role,
                    Membership.valid_from,
                    Membership.valid_until,
                )
                .select_from(User)
                .join(Tenant, Tenant.id == tenant_id)
                .outerjoin(
                    Membership,
                    (Membership.user_id == User.id) & (Membership.tenant_id == Tenant.id),
                )
                .where(User.id == ref.id)
            )
        ).all()
        if not rows:
            raise RelationsRefused(Reason.UNKNOWN_PRINCIPAL)
        user_disabled, kind, tenant_disabled = rows[0][0], rows[0][1], rows[0][2]
        if user_disabled is not None or tenant_disabled is not None:
            raise RelationsRefused(Reason.PRINCIPAL_DISABLED)
        roles = frozenset(
            row[3] for row in rows if row[3] is not None and is_active(row[4], row[5], now)
        )
        if not roles:
            # The token names a tenant this person does not belong to (now).
            raise RelationsRefused(Reason.TOKEN_TENANT_MISMATCH)
        return PrincipalFacts(ref, tenant_id, TenantKind(kind), roles=roles)

    expected = ClientType.PARTNER if ref.kind is PrincipalKind.PARTNER else ClientType.WORKLOAD
    row = (
        await session.execute(
            select(
                Client.client_type,
                Client.tenant_id,
                Client.disabled_at,
                Tenant.kind,
                Tenant.disabled_at,
            )
            .select_from(Client)
            .join(Tenant, Tenant.id == Client.tenant_id)
            .where(Client.id == ref.id)
        )
    ).first()
    # A client of another type (a mobile app, a dealer tool) never acts for itself here.
    if row is None or row[0] is not expected or row[1] is None:
        raise RelationsRefused(Reason.UNKNOWN_PRINCIPAL)
    if row[2] is not None or row[4] is not None:
        raise RelationsRefused(Reason.PRINCIPAL_DISABLED)
    return PrincipalFacts(ref, row[1], TenantKind(row[3]), client_type=row[0])


class _Loader:
    """One batch's queries. Each method reads one kind of relation, only when the principal's
    tenant kind and roles make it relevant."""

    def __init__(
        self,
        session: AsyncSession,
        principal: PrincipalFacts,
        now: datetime,
        resources: Sequence[ResourceRef],
    ) -> None:
        self.session = session
        self.principal = principal
        self.now = now
        self.wanted: dict[ResourceKind, list[str]] = {}
        for resource in resources:
            self.wanted.setdefault(resource.kind, []).append(resource.id)
        self.vehicles: dict[str, VehicleFacts] = {}
        self.objects: dict[ResourceRef, ObjectFacts] = {}
        self.notes: dict[ResourceRef, Reason] = {}

    def _note(self, kind: ResourceKind, resource_id: str, reason: Reason) -> None:
        self.notes.setdefault(ResourceRef(kind, resource_id), reason)

    def _note_vehicles(self, lapsed: Mapping[str, Reason], in_force: Iterable[str]) -> None:
        # A lapsed relation names the denial only when no relation of its kind is in force.
        held = set(in_force)
        for vid, reason in lapsed.items():
            if vid not in held:
                self._note(ResourceKind.VEHICLE, vid, reason)

    def _note_isolation(self, kind: ResourceKind, resource_id: str, owner: str | None) -> None:
        # Consumer and fleet tenants are isolated: another tenant's object is named as such.
        p = self.principal
        isolated = p.tenant_kind in (TenantKind.CONSUMER, TenantKind.FLEET)
        if p.ref.kind is PrincipalKind.USER and isolated and owner != p.tenant_id:
            self._note(kind, resource_id, Reason.TENANT_MISMATCH)

    def _set(self, vid: str, **changes: Any) -> None:
        self.vehicles[vid] = replace(self.vehicles[vid], **changes)

    async def load(self) -> None:
        p = self.principal
        await self._vehicles()
        await self._objects()
        if p.ref.kind is PrincipalKind.USER:
            if p.tenant_kind is TenantKind.CONSUMER:
                await self._delegations()
            if p.tenant_kind is TenantKind.FLEET:
                await self._fleet()
            if Role.DEALER_TECHNICIAN in p.roles:
                await self._dealer_cases()
            if Role.SUPPORT_AGENT in p.roles:
                await self._support_cases()
        elif p.client_type is ClientType.PARTNER:
            await self._consents()

    async def _vehicles(self) -> None:
        ids = self.wanted.get(ResourceKind.VEHICLE)
        if not ids:
            return
        me = self.principal.ref.id
        rows = await self.session.execute(
            select(
                Vehicle.id,
                Vehicle.tenant_id,
                Vehicle.region,
                Ownership.owner_user_id,
                Ownership.valid_from,
                Ownership.valid_until,
            )
            .outerjoin(
                Ownership,
                (Ownership.vehicle_id == Vehicle.id)
                & (Ownership.valid_until.is_(None) | (Ownership.owner_user_id == me)),
            )
            .where(Vehicle.id.in_(ids))
        )
        former: dict[str, Reason] = {}
        for vid, tenant_id, region, owner, start, end in rows:
            if vid not in self.vehicles:
                self.vehicles[vid] = VehicleFacts(vid, tenant_id, region)
                self._note_isolation(ResourceKind.VEHICLE, vid, tenant_id)
            if owner is None:
                continue
            if is_active(start, end, self.now):
                self._set(vid, owner_id=owner)
            elif owner == me and end is not None and end <= self.now:
                former[vid] = Reason.FORMER_OWNER
        self._note_vehicles(former, (v.id for v in self.vehicles.values() if v.owner_id == me))

    async def _objects(self) -> None:
        for kind, ids in self.wanted.items():
            if kind is ResourceKind.VEHICLE:
                continue
            for ref, tenant_id, tenant_kind in await self._object_rows(kind, ids):
                self.objects[ref] = ObjectFacts(ref, tenant_id, tenant_kind)
                if kind in (ResourceKind.TENANT, ResourceKind.FLEET_GROUP):
                    self._note_isolation(kind, ref.id, tenant_id)

    async def _object_rows(
        self, kind: ResourceKind, ids: list[str]
    ) -> list[tuple[ResourceRef, str | None, TenantKind | None]]:
        if kind is ResourceKind.PLATFORM:
            return [(ResourceRef(kind, PLATFORM_ID), None, None)] if PLATFORM_ID in ids else []
        if kind is ResourceKind.TENANT:
            rows = await self.session.execute(
                select(Tenant.id, Tenant.kind).where(Tenant.id.in_(ids))
            )
            return [(ResourceRef(kind, i), i, TenantKind(k)) for i, k in rows]
        if kind is ResourceKind.FLEET_GROUP:
            stmt = select(FleetGroup.id, FleetGroup.tenant_id).where(FleetGroup.id.in_(ids))
        elif kind is ResourceKind.DEALER_CASE:
            stmt = select(DealerCase.id, DealerCase.dealer_tenant_id).where(DealerCase.id.in_(ids))
        elif kind is ResourceKind.ACCOUNT:
            stmt = select(User.id, User.home_tenant_id).where(User.id.in_(ids))
        else:  # ResourceKind.CLIENT_REGISTRATION: public clients belong to no tenant
            rows = await self.session.execute(
                select(Client.id, Client.tenant_id).where(Client.id.in_(ids))
            )
            return [(ResourceRef(kind, i), t, None) for i, t in rows]
        return [(ResourceRef(kind, i), t, None) for i, t in await self.session.execute(stmt)]

    async def _delegations(self) -> None:
        ids = list(self.vehicles)
        if not ids:
            return
        rows = await self.session.scalars(
            select(DriverDelegation).where(
                DriverDelegation.vehicle_id.in_(ids),
                DriverDelegation.driver_user_id == self.principal.ref.id,
            )
        )
        lapsed: dict[str, Reason] = {}
        held: list[str] = []
        for d in rows:
            why = _lapsed(d.valid_from, d.valid_until, d.revoked_at, self.now)
            if why is not None:
                lapsed.setdefault(d.vehicle_id, why)
                continue
            held.append(d.vehicle_id)
            grant = Grant(
                d.driver_user_id, _permissions(d.permissions), d.valid_from, d.valid_until
            )
            self._set(d.vehicle_id, delegation=grant)
        self._note_vehicles(lapsed, held)

    async def _fleet(self) -> None:
        p = self.principal
        ids = list(self.vehicles)
        if ids:
            rows = await self.session.execute(
                select(
                    FleetVehicle.vehicle_id, FleetVehicle.valid_from, FleetVehicle.valid_until
                ).where(FleetVehicle.vehicle_id.in_(ids), FleetVehicle.tenant_id == p.tenant_id)
            )
            for vid, start, end in rows:
                if is_active(start, end, self.now):
                    self._set(vid, fleet_id=p.tenant_id)
        if Role.FLEET_OPERATOR not in p.roles:
            return
        rows = await self.session.execute(
            select(
                OperatorAssignment.group_id,
                OperatorAssignment.valid_from,
                OperatorAssignment.valid_until,
            )
            .join(FleetGroup, FleetGroup.id == OperatorAssignment.group_id)
            .where(OperatorAssignment.user_id == p.ref.id, FleetGroup.tenant_id == p.tenant_id)
        )
        assigned: set[str] = set()
        ended: set[str] = set()
        for group_id, start, end in rows:
            (assigned if is_active(start, end, self.now) else ended).add(group_id)
        ended -= assigned
        self.principal = replace(p, operator_groups=frozenset(assigned))
        for gid in self.wanted.get(ResourceKind.FLEET_GROUP, ()):
            if gid in ended:
                self._note(ResourceKind.FLEET_GROUP, gid, Reason.UNASSIGNED)
        if not ids or not (assigned or ended):
            return
        memberships = await self.session.execute(
            select(
                GroupVehicle.vehicle_id,
                GroupVehicle.group_id,
                GroupVehicle.valid_from,
                GroupVehicle.valid_until,
            ).where(GroupVehicle.vehicle_id.in_(ids), GroupVehicle.group_id.in_(assigned | ended))
        )
        groups: dict[str, set[str]] = {}
        lapsed: dict[str, Reason] = {}
        for vid, gid, start, end in memberships:
            if not is_active(start, end, self.now):
                continue
            if gid in assigned:
                groups.setdefault(vid, set()).add(gid)
            else:
                lapsed[vid] = Reason.UNASSIGNED
        for vid, gids in groups.items():
            self._set(vid, groups=frozenset(gids))
        self._note_vehicles(lapsed, groups)

    async def _dealer_cases(self) -> None:
        p = self.principal
        vehicle_ids = list(self.vehicles)
        case_ids = self.wanted.get(ResourceKind.DEALER_CASE, [])
        if not vehicle_ids and not case_ids:
            return
        rows = await self.session.execute(
            select(
                DealerCase.id,
                DealerCase.vehicle_id,
                DealerCase.status,
                CaseTechnician.valid_from,
                CaseTechnician.valid_until,
            )
            .join(CaseTechnician, CaseTechnician.case_id == DealerCase.id)
            .where(
                CaseTechnician.user_id == p.ref.id,
                DealerCase.dealer_tenant_id == p.tenant_id,
                or_(DealerCase.vehicle_id.in_(vehicle_ids), DealerCase.id.in_(case_ids)),
            )
        )
        open_cases: dict[str, set[str]] = {}
        lapsed: dict[str, Reason] = {}
        for case_id, vid, status, start, end in rows:
            if status is not CaseStatus.OPEN:
                why = Reason.CASE_CLOSED
            elif not is_active(start, end, self.now):
                why = Reason.UNASSIGNED
            else:
                open_cases.setdefault(vid, set()).add(case_id)
                continue
            self._note(ResourceKind.DEALER_CASE, case_id, why)
            lapsed.setdefault(vid, why)
        self.principal = replace(
            p, dealer_cases=frozenset(c for cases in open_cases.values() for c in cases)
        )
        for vid, cases in open_cases.items():
            if vid in self.vehicles:
                self._set(vid, dealer_cases=frozenset(cases))
        self._note_vehicles({v: r for v, r in lapsed.items() if v in self.vehicles}, open_cases)

    async def _support_cases(self) -> None:
        p = self.principal
        accounts = self.wanted.get(ResourceKind.ACCOUNT, [])
        owned: dict[str, list[str]] = {}
        for facts in self.vehicles.values():
            if facts.owner_id is not None:
                owned.setdefault(facts.owner_id, []).append(facts.id)
        vehicle_ids = list(self.vehicles)
        if not accounts and not vehicle_ids:
            return
        rows = await self.session.execute(
            select(
                SupportCase.id,
                SupportCase.subject_user_id,
                SupportCase.vehicle_id,
                SupportCase.status,
            ).where(
                SupportCase.agent_user_id == p.ref.id,
                or_(
                    SupportCase.subject_user_id.in_([*accounts, *owned]),
                    SupportCase.vehicle_id.in_(vehicle_ids),
                ),
            )
        )
        mine: set[str] = set()
        by_vehicle: dict[str, set[str]] = {}
        by_account: dict[str, set[str]] = {}
        lapsed: dict[str, Reason] = {}
        for case_id, subject, vid, status in rows:
            # A case covers its account, and its vehicle if it names one, else every vehicle
            # the account owns now.
            covered = [vid] if vid is not None else owned.get(subject, [])
            covered = [v for v in covered if v in self.vehicles]
            if status is not CaseStatus.OPEN:
                lapsed.update(dict.fromkeys(covered, Reason.CASE_CLOSED))
                if subject in accounts:
                    self._note(ResourceKind.ACCOUNT, subject, Reason.CASE_CLOSED)
                continue
            mine.add(case_id)
            for v in covered:
                by_vehicle.setdefault(v, set()).add(case_id)
            by_account.setdefault(subject, set()).add(case_id)
        self.principal = replace(p, support_cases=frozenset(mine))
        for vid, cases in by_vehicle.items():
            self._set(vid, support_cases=frozenset(cases))
        self._note_vehicles(lapsed, by_vehicle)
        for ref, account in list(self.objects.items()):
            if ref.kind is ResourceKind.ACCOUNT and ref.id in by_account:
                self.notes.pop(ref, None)
                self.objects[ref] = replace(account, support_cases=frozenset(by_account[ref.id]))

    async def _consents(self) -> None:
        ids = list(self.vehicles)
        if not ids:
            return
        partner = self.principal.tenant_id
        rows = await self.session.scalars(
            select(PartnerConsent).where(
                PartnerConsent.vehicle_id.in_(ids), PartnerConsent.partner_tenant_id == partner
            )
        )
        lapsed: dict[str, Reason] = {}
        held: list[str] = []
        for c in rows:
            why = _lapsed(c.valid_from, c.valid_until, c.revoked_at, self.now)
            if why is not None:
                lapsed.setdefault(c.vehicle_id, why)
                continue
            held.append(c.vehicle_id)
            grant = Grant(partner, _permissions(c.scopes), c.valid_from, c.valid_until)
            self._set(c.vehicle_id, consent=grant)
        self._note_vehicles(lapsed, held)


def _lapsed(
    start: datetime, end: datetime, revoked_at: datetime | None, now: datetime
) -> Reason | None:
    """Why a grant is not in force now, or None when it is. Revocation is final whenever it
    was recorded (fail closed)."""
    if revoked_at is not None:
        return Reason.REVOKED
    if now < start:
        return Reason.WINDOW_NOT_STARTED
    if now >= end:
        return Reason.WINDOW_EXPIRED
    return None


def _permissions(values: Iterable[str]) -> frozenset[Permission]:
    # A stored value that is no longer a permission grants nothing.
    known = {p.value for p in Permission}
    return frozenset(Permission(v) for v in values if v in known)


# --------------------------------------------------------------------------- Cedar form
#
# Entity references inside attributes and the context are written in the implicit form
# ({"type", "id"}), which the schema resolves: loading them costs a fraction of the
# "__entity" escape. Tenants are plain id strings for the same reason.

NAMESPACE: Final = "Fleetward::"

_RESOURCE_TYPES: Final = {
    ResourceKind.VEHICLE: "Vehicle",
    ResourceKind.ACCOUNT: "Account",
    ResourceKind.TENANT: "Tenant",
    ResourceKind.FLEET_GROUP: "FleetGroup",
    ResourceKind.DEALER_CASE: "DealerCase",
    ResourceKind.CLIENT_REGISTRATION: "ClientRegistration",
    ResourceKind.PLATFORM: "Platform",
}


def entity_uid(type_name: str, entity_id: str) -> dict[str, str]:
    return {"type": NAMESPACE + type_name, "id": entity_id}


def principal_uid(ref: PrincipalRef) -> dict[str, str]:
    return entity_uid("User" if ref.kind is PrincipalKind.USER else "Client", ref.id)


def resource_uid(ref: ResourceRef) -> dict[str, str]:
    return entity_uid(_RESOURCE_TYPES[ref.kind], ref.id)


def action_uid(permission: Permission) -> dict[str, str]:
    return entity_uid("Action", permission.value)


def epoch(moment: datetime) -> int:
    """Whole seconds, rounded down: at a window's end the policy denies no later than the
    code that built the entities does."""
    return math.floor(moment.timestamp())


def _uids(type_name: str, ids: Iterable[str]) -> list[dict[str, str]]:
    return [entity_uid(type_name, i) for i in sorted(ids)]


def _grant(holder_key: str, holder: Any, grant: Grant) -> dict[str, Any]:
    return {
        holder_key: holder,
        "actions": [action_uid(p) for p in sorted(grant.permissions)],
        "valid_from": epoch(grant.valid_from),
        "valid_until": epoch(grant.valid_until),
    }


def cedar_entities(relations: Relations) -> list[dict[str, Any]]:
    """The Cedar entity list (JSON form) of a batch: the principal, the resources and the
    groups and cases that link them."""
    p = relations.principal
    out: dict[tuple[str, str], dict[str, Any]] = {}

    def put(type_name: str, entity_id: str, attrs: dict[str, Any], parents: Any = ()) -> None:
        out[(type_name, entity_id)] = {
            "uid": entity_uid(type_name, entity_id),
            "attrs": attrs,
            "parents": list(parents),
        }

    if p.ref.kind is PrincipalKind.USER:
        put(
            "User",
            p.ref.id,
            {
                "tenant": p.tenant_id,
                "tenant_kind": p.tenant_kind.value,
                "roles": sorted(r.value for r in p.roles),
                "operator_groups": _uids("FleetGroup", p.operator_groups),
                "dealer_cases": _uids("DealerCase", p.dealer_cases),
                "support_cases": _uids("SupportCase", p.support_cases),
            },
        )
    else:
        kind = p.client_type.value if p.client_type is not None else ""
        put("Client", p.ref.id, {"tenant": p.tenant_id, "kind": kind})
    for group_id in p.operator_groups:
        put("FleetGroup", group_id, {"tenant": p.tenant_id})
    for case_id in p.dealer_cases:
        put("DealerCase", case_id, {"tenant": p.tenant_id})
    for case_id in p.support_cases:
        put("SupportCase", case_id, {})

    for v in relations.vehicles.values():
        attrs: dict[str, Any] = {"tenant": v.tenant_id, "region": v.region}
        if v.owner_id is not None:
            attrs["owner"] = entity_uid("User", v.owner_id)
        if v.fleet_id is not None:
            attrs["fleet"] = v.fleet_id
        if v.delegation is not None:
            driver = entity_uid("User", v.delegation.holder_id)
            attrs["delegation"] = _grant("driver", driver, v.delegation)
        if v.consent is not None:
            attrs["consent"] = _grant("partner", v.consent.holder_id, v.consent)
        parents = [
            *_uids("FleetGroup", v.groups),
            *_uids("DealerCase", v.dealer_cases),
            *_uids("SupportCase", v.support_cases),
        ]
        put("Vehicle", v.id, attrs, parents)

    for ref, facts in relations.objects.items():
        type_name = _RESOURCE_TYPES[ref.kind]
        if (type_name, ref.id) in out:
            continue  # already there as the principal's group or case
        put(type_name, ref.id, *_object_entity(facts))
    return list(out.values())


def _object_entity(facts: ObjectFacts) -> tuple[dict[str, Any], list[dict[str, str]]]:
    kind = facts.ref.kind
    if kind is ResourceKind.TENANT:
        tenant_kind = facts.tenant_kind.value if facts.tenant_kind else ""
        return {"tenant": facts.ref.id, "kind": tenant_kind}, []
    if kind in (ResourceKind.FLEET_GROUP, ResourceKind.DEALER_CASE):
        return {"tenant": facts.tenant_id or ""}, []
    if kind is ResourceKind.ACCOUNT:
        return {}, _uids("SupportCase", facts.support_cases)
    return {}, []


def cedar_context(
    context: RequestContext, action: Permission, barred_regions: Iterable[str]
) -> dict[str, Any]:
    """The Cedar context of one request. ``scopes`` holds the token's scopes among the
    request's action and command only (the policy checks exactly those; the full list would
    only cost loading time). ``barred_regions``: where the action is barred."""
    asked = {action} if context.command is None else {action, context.command}
    out: dict[str, Any] = {
        "now": epoch(context.now),
        "auth_time": epoch(context.auth_time),
        "acr_level": context.acr_level,
        "tenant": context.tenant_id,
        "region": context.region or "",
        "scopes": [action_uid(p) for p in sorted(asked) if p.value in context.scopes],
        "barred_regions": sorted(barred_regions),
    }
    if context.command is not None:
        out["command"] = action_uid(context.command)
    return out
