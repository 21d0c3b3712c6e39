"""Factories that build world objects through the real services (never raw inserts)."""

from __future__ import annotations

import itertools
import random
from datetime import datetime, timedelta

from fleetward.audit.recorder import Actor
from fleetward.authz.permissions import Permission
from fleetward.core.ids import new_id
from fleetward.core.vin import random_vin
from fleetward.identity.directory import Directory
from fleetward.identity.models import ROLES_BY_TENANT_KIND, Role, Tenant, TenantKind, User
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.telemetry.models import TelemetryMessage
from fleetward.vehicles.consents import ConsentService
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.models import DriverDelegation, PartnerConsent, Vehicle
from fleetward.vehicles.ownership import OwnershipService
from fleetward.vehicles.records import Trip
from fleetward.vehicles.registry import VehicleRegistry

FACTORY = Actor.system("test-factory")
_counter = itertools.count(1)
_rng = random.Random(20261126)


class WorldFactory:
    def __init__(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        self.directory = Directory(ctx)

    async def tenant(
        self, kind: TenantKind = TenantKind.CONSUMER, slug: str | None = None
    ) -> Tenant:
        name = slug or f"{kind.value}-{next(_counter)}"
        return await self.directory.create_tenant(name, name.title(), kind, actor=FACTORY)

    async def user(self, tenant: Tenant | None = None, role: Role | None = None) -> User:
        home = tenant or await self.tenant()
        user = await self.directory.create_user(
            f"user-{next(_counter)}", "Test User", home, password_hash=None, actor=FACTORY
        )
        the_role = role or sorted(ROLES_BY_TENANT_KIND[home.kind])[0]
        await self.directory.grant_membership(user, home, the_role, actor=FACTORY)
        return user

    async def vehicle(self, tenant: Tenant, *, wmi: str = "1FW") -> Vehicle:
        return await VehicleRegistry(self.ctx).register(
            random_vin(_rng, wmi=wmi).value,
            label=f"V-{next(_counter)}",
            model="Test",
            region="NA",
            tenant=tenant,
            actor=FACTORY,
        )

    async def owned_vehicle(self, owner: User) -> Vehicle:
        tenant = await self.directory.tenant_by_id(owner.home_tenant_id)
        vehicle = await self.vehicle(tenant)
        await OwnershipService(self.ctx).start(vehicle, owner, actor=FACTORY)
        return vehicle

    async def grants(
        self, vehicle: Vehicle, owner: User, driver: User, partner: Tenant, *, until: datetime
    ) -> tuple[DriverDelegation, PartnerConsent]:
        """The owner's delegation of ``lock`` to ``driver`` and consent of ``read_status`` to
        ``partner``, both until ``until``."""
        delegation = await DelegationService(self.ctx).delegate(
            vehicle, owner, driver, [Permission.VEHICLE_LOCK], valid_until=until, actor=FACTORY
        )
        consent = await ConsentService(self.ctx).grant(
            partner,
            vehicle,
            owner,
            [Permission.VEHICLE_READ_STATUS],
            valid_until=until,
            actor=FACTORY,
        )
        return delegation, consent


async def committed_vehicle(platform: Platform) -> tuple[str, str]:
    """A consumer tenant and a vehicle of it, committed: (tenant id, vehicle id), for rows
    that refer to them (foreign keys)."""
    async with platform.services() as (uow, ctx):
        world = WorldFactory(ctx)
        tenant = await world.tenant(TenantKind.CONSUMER)
        vehicle = await world.vehicle(tenant)
        await uow.commit()
    return tenant.id, vehicle.id


def trip(vehicle_id: str, at: datetime) -> Trip:
    """A 20-minute, 12 km trip of ``vehicle_id`` starting at ``at``, with its coordinates."""
    return Trip(
        id=new_id("trp"),
        vehicle_id=vehicle_id,
        started_at=at,
        ended_at=at + timedelta(minutes=20),
        distance_km=12.0,
        energy_kwh=2.2,
        start_latitude=48.1,
        start_longitude=11.5,
        end_latitude=48.2,
        end_longitude=11.6,
    )


def accepted_message(
    vehicle: Vehicle,
    at: datetime,
    signals: dict[str, object],
    *,
    sequence: int = 1,
    device: str = "dev_factory",
    received_after: timedelta = timedelta(0),
) -> TelemetryMessage:
    """An accepted telemetry message of ``vehicle`` stamped ``at`` by the car (received
    ``received_after`` later), as the pipeline stores one."""
    return TelemetryMessage(
        device_id=device,
        sequence=sequence,
        vehicle_id=vehicle.id,
        tenant_id=vehicle.tenant_id,
        session_id="ses_factory",
        certificate_serial="01",
        software_version="1.0.0",
        vehicle_config="base",
        received_at=at + received_after,
        device_time=at,
        store_and_forward=False,
        late=False,
        signals=signals,
    )
