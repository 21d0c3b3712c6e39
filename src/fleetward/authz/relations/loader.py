"""One batch's relation queries (:class:`Loader`): each method reads one kind of relation,
only when the principal's tenant kind and roles make it relevant. Windows are checked here as
well as by the policy: a relation that is revoked, expired, not yet started or closed is left
out, and the reason is kept as a note that names a default denial."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, Final

from sqlalchemy import BindParameter, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.authz.decision import PLATFORM_ID, PrincipalKind, Reason, ResourceKind, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.authz.relations.facts import Grant, ObjectFacts, PrincipalFacts, VehicleFacts
from fleetward.core.windows import is_active
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.identity.oauth_models import Client, ClientType
from fleetward.store.reads import read_rows
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

# Built once (bound at execution): building a statement and its cache key per batch cost
# as much CPU as running it.
_ME: Final[BindParameter[str]] = bindparam("me")
_IDS: Final[BindParameter[list[str]]] = bindparam("ids", expanding=True)
_VEHICLES: Final = (
    select(
        Vehicle.id,
        Vehicle.tenant_id,
        Vehicle.region,
        Ownership.id,
        Ownership.owner_user_id,
        Ownership.valid_from,
        Ownership.valid_until,
    )
    .outerjoin(
        Ownership,
        (Ownership.vehicle_id == Vehicle.id)
        & (Ownership.valid_until.is_(None) | (Ownership.owner_user_id == _ME)),
    )
    .where(Vehicle.id.in_(_IDS))
)
_VEHICLES_WITH_DELEGATIONS: Final = _VEHICLES.add_columns(
    DriverDelegation.id,
    DriverDelegation.permissions,
    DriverDelegation.valid_from,
    DriverDelegation.valid_until,
    DriverDelegation.revoked_at,
).outerjoin(
    DriverDelegation,
    (DriverDelegation.vehicle_id == Vehicle.id) & (DriverDelegation.driver_user_id == _ME),
)


class Loader:
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
        consumer = p.ref.kind is PrincipalKind.USER and p.tenant_kind is TenantKind.CONSUMER
        # A consumer's delegations come in the vehicles' query (one query fewer per decision).
        await self._vehicles(with_delegations=consumer)
        await self._objects()
        if p.ref.kind is PrincipalKind.USER:
            if p.tenant_kind is TenantKind.FLEET:
                await self._fleet()
            if Role.DEALER_TECHNICIAN in p.roles:
                await self._dealer_cases()
            if Role.SUPPORT_AGENT in p.roles:
                await self._support_cases()
        elif p.client_type is ClientType.PARTNER:
            await self._consents()

    async def _vehicles(self, *, with_delegations: bool = False) -> None:
        """The vehicles asked for, their current owner (and the principal's past ownership);
        with ``with_delegations``, the principal's driver delegations on them, in the same
        query (one row per ownership x delegation; each is read once)."""
        ids = self.wanted.get(ResourceKind.VEHICLE)
        if not ids:
            return
        me = self.principal.ref.id
        stmt = _VEHICLES_WITH_DELEGATIONS if with_delegations else _VEHICLES
        rows = await read_rows(self.session, stmt, {"me": me, "ids": ids})
        former: dict[str, Reason] = {}
        ownerships: set[str] = set()
        delegations: dict[str, tuple[str, list[str], datetime, datetime, datetime | None]] = {}
        for row in rows:
            values: tuple[Any, ...] = tuple(row)
            vid, tenant_id, region, ownership_id, owner, start, end = values[:7]
            if with_delegations and values[7] is not None:
                _, permissions, valid_from, valid_until, revoked_at = values[7:]
                delegations.setdefault(
                    values[7], (vid, permissions, valid_from, valid_until, revoked_at)
                )
            if vid not in self.vehicles:
                self.vehicles[vid] = VehicleFacts(vid, tenant_id, region)
                self._note_isolation(ResourceKind.VEHICLE, vid, tenant_id)
            if owner is None or ownership_id in ownerships:
                continue
            ownerships.add(ownership_id)
            if is_active(start, end, self.now):
                self._set(vid, owner_id=owner)
            elif owner == me and end is not None and end <= self.now:
                former[vid] = Reason.FORMER_OWNER
        self._note_vehicles(former, (v.id for v in self.vehicles.values() if v.owner_id == me))
        if with_delegations:
            self._delegations(delegations.values())

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
            rows = await read_rows(
                self.session, select(Tenant.id, Tenant.kind).where(Tenant.id.in_(ids))
            )
            return [(ResourceRef(kind, i), i, TenantKind(k)) for i, k in rows]
        if kind is ResourceKind.FLEET_GROUP:
            stmt = select(FleetGroup.id, FleetGroup.tenant_id).where(FleetGroup.id.in_(ids))
        elif kind is ResourceKind.DEALER_CASE:
            stmt = select(DealerCase.id, DealerCase.dealer_tenant_id).where(DealerCase.id.in_(ids))
        elif kind is ResourceKind.ACCOUNT:
            stmt = select(User.id, User.home_tenant_id).where(User.id.in_(ids))
        elif kind is ResourceKind.SUPPORT_CASE:  # platform staff's: no tenant to isolate
            rows = await read_rows(
                self.session, select(SupportCase.id).where(SupportCase.id.in_(ids))
            )
            return [(ResourceRef(kind, i), None, None) for (i,) in rows]
        else:  # ResourceKind.CLIENT_REGISTRATION: public clients belong to no tenant
            rows = await read_rows(
                self.session, select(Client.id, Client.tenant_id).where(Client.id.in_(ids))
            )
            return [(ResourceRef(kind, i), t, None) for i, t in rows]
        return [(ResourceRef(kind, i), t, None) for i, t in await read_rows(self.session, stmt)]

    def _delegations(
        self, rows: Iterable[tuple[str, list[str], datetime, datetime, datetime | None]]
    ) -> None:
        """The principal's delegations (vehicle, permissions, window, revocation): those in
        force become the vehicle's ``delegation``; a lapsed one names the default denial."""
        me = self.principal.ref.id
        lapsed: dict[str, Reason] = {}
        held: list[str] = []
        for vid, permissions, valid_from, valid_until, revoked_at in rows:
            why = _lapsed(valid_from, valid_until, revoked_at, self.now)
            if why is not None:
                lapsed.setdefault(vid, why)
                continue
            held.append(vid)
            grant = Grant(me, _permissions(permissions), valid_from, valid_until)
            self._set(vid, delegation=grant)
        self._note_vehicles(lapsed, held)

    async def _fleet(self) -> None:
        p = self.principal
        ids = list(self.vehicles)
        if ids:
            rows = await read_rows(
                self.session,
                select(
                    FleetVehicle.vehicle_id, FleetVehicle.valid_from, FleetVehicle.valid_until
                ).where(FleetVehicle.vehicle_id.in_(ids), FleetVehicle.tenant_id == p.tenant_id),
            )
            for vid, start, end in rows:
                if is_active(start, end, self.now):
                    self._set(vid, fleet_id=p.tenant_id)
        if Role.FLEET_OPERATOR not in p.roles:
            return
        rows = await read_rows(
            self.session,
            select(
                OperatorAssignment.group_id,
                OperatorAssignment.valid_from,
                OperatorAssignment.valid_until,
            )
            .join(FleetGroup, FleetGroup.id == OperatorAssignment.group_id)
            .where(OperatorAssignment.user_id == p.ref.id, FleetGroup.tenant_id == p.tenant_id),
        )
        since = p.tenure_start(Role.FLEET_OPERATOR, self.now)
        assigned: set[str] = set()
        ended: set[str] = set()
        for group_id, start, end in rows:
            current = is_active(start, end, self.now) and start >= since
            (assigned if current else ended).add(group_id)
        ended -= assigned
        self.principal = replace(p, operator_groups=frozenset(assigned))
        for gid in self.wanted.get(ResourceKind.FLEET_GROUP, ()):
            if gid in ended:
                self._note(ResourceKind.FLEET_GROUP, gid, Reason.UNASSIGNED)
        if not ids or not (assigned or ended):
            return
        memberships = await read_rows(
            self.session,
            select(
                GroupVehicle.vehicle_id,
                GroupVehicle.group_id,
                GroupVehicle.valid_from,
                GroupVehicle.valid_until,
            ).where(GroupVehicle.vehicle_id.in_(ids), GroupVehicle.group_id.in_(assigned | ended)),
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
        rows = await read_rows(
            self.session,
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
            ),
        )
        since = self.principal.tenure_start(Role.DEALER_TECHNICIAN, self.now)
        open_cases: dict[str, set[str]] = {}
        lapsed: dict[str, Reason] = {}
        for case_id, vid, status, start, end in rows:
            if status is not CaseStatus.OPEN:
                why = Reason.CASE_CLOSED
            elif not is_active(start, end, self.now) or start < since:
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
        asked_cases = self.wanted.get(ResourceKind.SUPPORT_CASE, [])
        owned: dict[str, list[str]] = {}
        for facts in self.vehicles.values():
            if facts.owner_id is not None:
                owned.setdefault(facts.owner_id, []).append(facts.id)
        vehicle_ids = list(self.vehicles)
        if not accounts and not vehicle_ids and not asked_cases:
            return
        rows = await read_rows(
            self.session,
            select(
                SupportCase.id,
                SupportCase.subject_user_id,
                SupportCase.vehicle_id,
                SupportCase.status,
                SupportCase.opened_at,
            ).where(
                SupportCase.agent_user_id == p.ref.id,
                or_(
                    SupportCase.subject_user_id.in_([*accounts, *owned]),
                    SupportCase.vehicle_id.in_(vehicle_ids),
                    SupportCase.id.in_(asked_cases),
                ),
            ),
        )
        # A case is assigned to its agent when it is opened: one opened before the agent's
        # current, unbroken hold of the role was theirs under an ended membership.
        since = p.tenure_start(Role.SUPPORT_AGENT, self.now)
        mine: set[str] = set()
        by_vehicle: dict[str, set[str]] = {}
        by_account: dict[str, set[str]] = {}
        lapsed: dict[str, Reason] = {}
        for case_id, subject, vid, status, opened_at in rows:
            # A case covers its account, and its vehicle if it names one, else every vehicle
            # the account owns now; a named vehicle only while the account owns it (a sale
            # ends the case's reach to the buyer's car, as it ends the seller's own).
            now_owned = owned.get(subject, [])
            covered = now_owned if vid is None else [v for v in now_owned if v == vid]
            covered = [v for v in covered if v in self.vehicles]
            if status is not CaseStatus.OPEN or opened_at < since:
                why = Reason.CASE_CLOSED if status is not CaseStatus.OPEN else Reason.UNASSIGNED
                lapsed.update(dict.fromkeys(covered, why))
                if subject in accounts:
                    self._note(ResourceKind.ACCOUNT, subject, why)
                if case_id in asked_cases:
                    self._note(ResourceKind.SUPPORT_CASE, case_id, why)
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


__all__ = ["Loader"]
