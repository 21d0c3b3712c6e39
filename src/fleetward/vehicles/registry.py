"""Registering vehicles and finding them."""

from __future__ import annotations

from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.ids import new_id
from fleetward.core.vin import parse_vin
from fleetward.identity.models import Tenant, TenantKind
from fleetward.services import ServiceContext
from fleetward.vehicles.errors import DuplicateVin, RelationshipRefused, VehicleNotFound
from fleetward.vehicles.models import Vehicle

_VEHICLE_TENANT_KINDS = frozenset({TenantKind.CONSUMER, TenantKind.FLEET})


class VehicleRegistry:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def register(
        self, vin: str, *, label: str, model: str, region: str, tenant: Tenant, actor: Actor
    ) -> Vehicle:
        parsed = parse_vin(vin)  # raises InvalidVin before anything is written
        if tenant.kind not in _VEHICLE_TENANT_KINDS:
            raise RelationshipRefused(
                "vehicles live in consumer or fleet tenants", reason="tenant-kind"
            )
        session = self._ctx.session
        if await session.scalar(select(Vehicle.id).where(Vehicle.vin == parsed.value)):
            raise DuplicateVin("that VIN is already registered")
        vehicle = Vehicle(
            id=new_id("veh"),
            vin=parsed.value,
            label=label,
            model=model,
            region=region,
            tenant_id=tenant.id,
            created_at=self._ctx.clock.now(),
        )
        session.add(vehicle)
        self._ctx.audit.record(
            session,
            EventName.VEHICLE_REGISTERED,
            actor=actor,
            target=Target("vehicle", vehicle.id, tenant.id),
            details={"region": region},
        )
        await session.flush()
        return vehicle

    async def get(self, vehicle_id: str) -> Vehicle:
        found = await self._ctx.session.get(Vehicle, vehicle_id)
        if found is None:
            raise VehicleNotFound("no such vehicle")
        return found

    async def by_label(self, label: str) -> Vehicle:
        found = await self._ctx.session.scalar(select(Vehicle).where(Vehicle.label == label))
        if found is None:
            raise VehicleNotFound("no such vehicle")
        return found
