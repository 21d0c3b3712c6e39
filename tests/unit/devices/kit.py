"""A small world for device tests: vehicles, a dealer with a case and technicians, a platform
admin, the device CA, and enrolled devices made through the real services.

Imported as ``unit.devices.kit``. Runs on SQLite and PostgreSQL (through ``ctx``).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from sqlalchemy import select

from fleetward.audit.models import AuditRecord
from fleetward.devices.ca import DeviceCa, load_device_ca
from fleetward.devices.models import Device, KeyAlgorithm
from fleetward.devices.provisioning import Provisioning
from fleetward.gateway.device_client import (
    DeviceCredentials,
    DevicePrivateKey,
    build_csr,
    generate_key,
)
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.models import DealerCase, Vehicle
from support.factories import FACTORY, WorldFactory


@dataclass
class DeviceWorld:
    platform: Platform
    ctx: ServiceContext
    ca: DeviceCa
    consumer: Tenant
    owner: User
    car: Vehicle
    other_car: Vehicle
    dealer: Tenant
    technician: User
    unassigned_technician: User
    case: DealerCase
    operator: Tenant
    admin: User

    async def enrol(
        self,
        vehicle: Vehicle | None = None,
        *,
        algorithm: KeyAlgorithm = KeyAlgorithm.ED25519,
        key: DevicePrivateKey | None = None,
    ) -> tuple[DeviceCredentials, Device]:
        """A device enrolled through a real token and CSR, with its credentials."""
        target = vehicle or self.car
        provisioning = Provisioning(self.ctx)
        grant = await provisioning.create_enrolment(target, actor=FACTORY)
        the_key = key or generate_key(algorithm)
        csr = build_csr(the_key, device_id=grant.device_id, vehicle_id=target.id)
        issued = await provisioning.enrol(grant.token, csr, self.ca)
        credentials = DeviceCredentials.from_pem(
            the_key,
            issued.certificate_pem,
            issued.ca_certificate_pem,
            device_id=issued.device_id,
            vehicle_id=issued.vehicle_id,
        )
        device = await self.ctx.session.get(Device, issued.device_id)
        assert device is not None
        return credentials, device

    async def events(self, name: str, object_id: str | None = None) -> list[AuditRecord]:
        query = select(AuditRecord).where(AuditRecord.name == name).order_by(AuditRecord.seq)
        if object_id is not None:
            query = query.where(AuditRecord.object_id == object_id)
        return list(await self.ctx.session.scalars(query))


def san_uris(certificate: x509.Certificate) -> list[str]:
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return names.get_values_for_type(x509.UniformResourceIdentifier)


async def build_device_world(platform: Platform, ctx: ServiceContext) -> DeviceWorld:
    world = WorldFactory(ctx)
    consumer = await world.tenant(TenantKind.CONSUMER)
    owner = await world.user(consumer)
    car = await world.owned_vehicle(owner)
    other_car = await world.owned_vehicle(owner)
    dealer = await world.tenant(TenantKind.DEALER)
    technician = await world.user(dealer, Role.DEALER_TECHNICIAN)
    unassigned = await world.user(dealer, Role.DEALER_TECHNICIAN)
    cases = CaseService(ctx)
    case = await cases.open_dealer_case(dealer, car, "replace the TCU", actor=FACTORY)
    await cases.assign_technician(case, technician, actor=FACTORY)
    operator = await world.tenant(TenantKind.OPERATOR)
    admin = await world.user(operator, Role.PLATFORM_ADMIN)
    ca = load_device_ca(platform.settings, platform.identity.data_key, platform.clock)
    return DeviceWorld(
        platform,
        ctx,
        ca,
        consumer,
        owner,
        car,
        other_car,
        dealer,
        technician,
        unassigned,
        case,
        operator,
        admin,
    )
