"""Fleet membership of vehicles, fleet groups, and operator-to-group assignment."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import Conflict
from fleetward.core.ids import new_id
from fleetward.identity.directory import Directory
from fleetward.identity.errors import DuplicateName
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.services import ServiceContext
from fleetward.store.races import written_if
from fleetward.vehicles.errors import RelationshipRefused
from fleetward.vehicles.models import (
    FleetGroup,
    FleetVehicle,
    GroupVehicle,
    OperatorAssignment,
    Vehicle,
)


class FleetService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def add_vehicle(self, fleet: Tenant, vehicle: Vehicle, *, actor: Actor) -> FleetVehicle:
        if fleet.kind is not TenantKind.FLEET:
            raise RelationshipRefused("only fleet tenants have fleet vehicles", reason="tenant")
        if vehicle.tenant_id != fleet.id:
            raise RelationshipRefused("the vehicle belongs to another tenant", reason="tenant")
        session = self._ctx.session
        open_membership = await session.scalar(
            select(FleetVehicle.id).where(
                FleetVehicle.vehicle_id == vehicle.id, FleetVehicle.valid_until.is_(None)
            )
        )
        if open_membership is not None:
            raise RelationshipRefused("the vehicle is already in a fleet", reason="member")
        membership = FleetVehicle(
            id=new_id("flv"),
            tenant_id=fleet.id,
            vehicle_id=vehicle.id,
            valid_from=self._ctx.clock.now(),
            valid_until=None,
        )
        session.add(membership)
        self._ctx.audit.record(
            session,
            EventName.FLEET_VEHICLE_ADDED,
            actor=actor,
            target=Target("vehicle", vehicle.id, fleet.id),
        )
        await session.flush()
        return membership

    async def create_group(self, fleet: Tenant, name: str, *, actor: Actor) -> FleetGroup:
        if fleet.kind is not TenantKind.FLEET:
            raise RelationshipRefused("only fleet tenants have groups", reason="tenant")
        session = self._ctx.session
        taken = await session.scalar(
            select(FleetGroup.id).where(FleetGroup.tenant_id == fleet.id, FleetGroup.name == name)
        )
        if taken is not None:
            raise DuplicateName("the fleet already has a group of that name", reason="group")
        group = FleetGroup(
            id=new_id("grp"), tenant_id=fleet.id, name=name, created_at=self._ctx.clock.now()
        )
        session.add(group)
        self._ctx.audit.record(
            session,
            EventName.FLEET_GROUP_CREATED,
            actor=actor,
            target=Target("fleet_group", group.id, fleet.id),
        )
        try:
            await session.flush()
        except IntegrityError:  # a concurrent create took the name after the check above
            raise DuplicateName(
                "the fleet already has a group of that name", reason="group"
            ) from None
        return group

    async def add_to_group(
        self, group: FleetGroup, vehicle: Vehicle, *, actor: Actor
    ) -> GroupVehicle:
        # A group only ever holds vehicles of its own fleet: no cross-tenant grouping.
        in_fleet = await self._ctx.session.scalar(
            select(FleetVehicle.id).where(
                FleetVehicle.vehicle_id == vehicle.id,
                FleetVehicle.tenant_id == group.tenant_id,
                FleetVehicle.valid_until.is_(None),
            )
        )
        if in_fleet is None:
            raise RelationshipRefused("the vehicle is not in this group's fleet", reason="fleet")
        link = GroupVehicle(
            id=new_id("grv"),
            group_id=group.id,
            vehicle_id=vehicle.id,
            valid_from=self._ctx.clock.now(),
            valid_until=None,
        )
        self._ctx.session.add(link)
        self._ctx.audit.record(
            self._ctx.session,
            EventName.FLEET_GROUP_VEHICLE_ADDED,
            actor=actor,
            target=Target("fleet_group", group.id, group.tenant_id),
            details={"vehicle": vehicle.id},
        )
        try:
            await self._ctx.session.flush()
        except IntegrityError:
            # Two adds of the same vehicle at once: one open link per (group, vehicle)
            # (uq_group_vehicles_open), or a later removal would leave the other standing.
            raise Conflict(
                "a vehicle is already in this group", reason="already-in-group"
            ) from None
        return link

    async def assign_operator(
        self, group: FleetGroup, operator: User, *, actor: Actor
    ) -> OperatorAssignment:
        directory = Directory(self._ctx)
        fleet = await directory.tenant_by_id(group.tenant_id)
        roles = await directory.active_roles(operator, fleet)
        if Role.FLEET_OPERATOR not in roles:
            raise RelationshipRefused(
                "only an operator of this fleet can be assigned to its groups", reason="role"
            )
        assignment = OperatorAssignment(
            id=new_id("opa"),
            group_id=group.id,
            user_id=operator.id,
            valid_from=self._ctx.clock.now(),
            valid_until=None,
        )
        self._ctx.session.add(assignment)
        self._ctx.audit.record(
            self._ctx.session,
            EventName.FLEET_OPERATOR_ASSIGNED,
            actor=actor,
            target=Target("fleet_group", group.id, group.tenant_id),
            details={"operator": operator.id},
        )
        try:
            await self._ctx.session.flush()
        except IntegrityError:
            # Two assignments at once: one open assignment per (group, operator)
            # (uq_operator_assignments_open), or an unassignment would leave the other.
            raise Conflict(
                "the operator is already assigned to this group", reason="assigned"
            ) from None
        return assignment

    async def unassign_operator(self, assignment: OperatorAssignment, *, actor: Actor) -> bool:
        """End an operator's assignment; False when it had ended already (an unassignment
        that committed after this request read it is kept as it was, audited once)."""
        if assignment.valid_until is not None:
            return False
        if not await self._end(OperatorAssignment, assignment):
            return False
        self._ctx.audit.record(
            self._ctx.session,
            EventName.FLEET_OPERATOR_UNASSIGNED,
            actor=actor,
            target=Target("operator_assignment", assignment.id),
        )
        await self._ctx.session.flush()
        return True

    async def remove_from_group(
        self, group: FleetGroup, link: GroupVehicle, *, actor: Actor
    ) -> bool:
        """End a vehicle's membership of a group (the link stays, closed, as history); False
        when it had ended already (a removal that committed after this request read the
        link is kept as it was, audited once)."""
        if link.group_id != group.id:
            # A link reached through another group is a caller's bug, never a removal.
            raise RelationshipRefused("the vehicle is not in this group", reason="group")
        if link.valid_until is not None:
            return False
        if not await self._end(GroupVehicle, link):
            return False
        self._ctx.audit.record(
            self._ctx.session,
            EventName.FLEET_GROUP_VEHICLE_REMOVED,
            actor=actor,
            target=Target("fleet_group", group.id, group.tenant_id),
            details={"vehicle": link.vehicle_id},
        )
        await self._ctx.session.flush()
        return True

    async def _end(self, model: type[OperatorAssignment] | type[GroupVehicle], row: Any) -> bool:
        """Close an open row now, by a conditional UPDATE (``valid_until IS NULL``): True
        only for the one request whose UPDATE matched; the row is read back either way."""
        return await written_if(
            self._ctx.session, row, model.valid_until.is_(None), valid_until=self._ctx.clock.now()
        )
