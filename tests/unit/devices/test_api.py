"""The device routes through HTTP: who may call them, what they change, what they record.

Admin routes: a platform admin's admin-surface token with admin:manage_clients and a recent
multi-factor sign-in. The dealer route: the technician assigned to the open case, as the policy
decision point says. Enrolment: a one-time token in the body. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from fastapi import FastAPI
from sqlalchemy import select

from fleetward.api import devices as devices_api
from fleetward.app import build_app
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.authz.decision import Obligation
from fleetward.authz.entities import Relations, SessionRelations
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import AUTHENTICATED
from fleetward.catalog.inventory import inventory
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.devices.models import Device, DeviceStatus, EnrolmentKind, KeyAlgorithm
from fleetward.devices.provisioning import Provisioning
from fleetward.gateway.device_client import build_csr, generate_key
from fleetward.gateway.websocket import gateway_of, install
from fleetward.identity.acr import Acr
from fleetward.identity.models import Role, TenantKind, User
from fleetward.platform import Platform
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.models import DealerCase
from support.api import obliged
from support.factories import FACTORY, WorldFactory
from support.http import client_for
from unit.devices.kit import DeviceWorld, build_device_world


@dataclass
class Api:
    platform: Platform
    clock: FrozenClock
    app: FastAPI
    http: httpx.AsyncClient
    world: DeviceWorld
    agent: User  # a support agent of the operator tenant: not a platform admin
    other_dealer_technician: User

    def token(
        self,
        user: User,
        tenant_id: str,
        surface: Surface,
        scopes: list[str],
        *,
        auth_age: timedelta = timedelta(seconds=10),
        subject_type: str = "user",
    ) -> dict[str, str]:
        issued = self.platform.identity.tokens.issue(
            subject=user.id,
            client_id="cli_test_console",
            tenant=tenant_id,
            surface=surface,
            scopes=scopes,
            auth_time=self.clock.now() - auth_age,
            acr=Acr.MFA.value,
            amr=["pwd", "otp"],
            token_family=None,
            subject_type=subject_type,  # type: ignore[arg-type]
        )
        return {"authorization": f"Bearer {issued.token}"}

    def admin(self, **changes: Any) -> dict[str, str]:
        world = self.world
        scopes = [Permission.ADMIN_MANAGE_CLIENTS.value]
        return self.token(world.admin, world.operator.id, Surface.ADMIN, scopes, **changes)

    def technician(self, user: User | None = None, tenant_id: str | None = None) -> dict[str, str]:
        world = self.world
        return self.token(
            user or world.technician,
            tenant_id or world.dealer.id,
            Surface.DEALER,
            [Permission.DEALER_MANAGE_CASE.value],
        )

    async def device(self, vehicle_id: str | None = None) -> str:
        """An enrolled device id (through the HTTP enrolment route)."""
        async with self.platform.services() as (uow, ctx):
            vehicle = await ctx.session.get(type(self.world.car), vehicle_id or self.world.car.id)
            assert vehicle is not None
            grant = await Provisioning(ctx).create_enrolment(vehicle, actor=FACTORY)
            await uow.commit()
        csr = build_csr(generate_key(), device_id=grant.device_id, vehicle_id=grant.vehicle_id)
        response = await self.http.post(
            "/gateway/v1/enrol", json={"token": grant.token, "csr": csr}
        )
        assert response.status_code == 200, response.text
        return grant.device_id

    async def events(self, name: str) -> list[AuditRecord]:
        async with self.platform.unit_of_work() as uow:
            rows = await uow.session.scalars(
                select(AuditRecord).where(AuditRecord.name == name).order_by(AuditRecord.seq)
            )
            return list(rows)

    async def status(self, device_id: str) -> DeviceStatus:
        async with self.platform.unit_of_work() as uow:
            device = await uow.session.get(Device, device_id)
            assert device is not None
            return device.status


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[Api]:
    clock = platform.clock
    assert isinstance(clock, FrozenClock)
    async with platform.services() as (uow, ctx):
        world = await build_device_world(platform, ctx)
        factory = WorldFactory(ctx)
        agent = await factory.user(world.operator, Role.SUPPORT_AGENT)
        other_dealer = await factory.tenant(TenantKind.DEALER)
        other_technician = await factory.user(other_dealer, Role.DEALER_TECHNICIAN)
        await uow.commit()
    app = build_app(platform.settings, platform=platform)
    app.include_router(devices_api.router)
    install(app, platform)
    async with client_for(app) as http:
        yield Api(platform, clock, app, http, world, agent, other_technician)


async def test_enrolment_lifecycle_through_the_admin_surface(api: Api) -> None:
    response = await api.http.post(
        f"/admin/v1/vehicles/{api.world.car.id}/device-enrolments",
        json={"hours": 2},
        headers=api.admin(),
    )
    assert response.status_code == 201, response.text
    grant = response.json()
    assert grant["kind"] == EnrolmentKind.INITIAL.value and grant["token"].startswith("fwenrol_")
    key = generate_key()
    csr = build_csr(key, device_id=grant["device_id"], vehicle_id=api.world.car.id)
    enrolled = await api.http.post("/gateway/v1/enrol", json={"token": grant["token"], "csr": csr})
    assert enrolled.status_code == 200, enrolled.text
    assert enrolled.json()["certificate"].startswith("-----BEGIN CERTIFICATE-----")
    device_id = grant["device_id"]
    shown = await api.http.get(f"/admin/v1/devices/{device_id}", headers=api.admin())
    assert shown.status_code == 200
    assert shown.json()["status"] == "active" and len(shown.json()["certificates"]) == 1
    for operation, status in (
        ("suspend", "suspended"),
        ("resume", "active"),
        ("revoke", "revoked"),
    ):
        changed = await api.http.post(
            f"/admin/v1/devices/{device_id}/{operation}",
            json={"reason": "investigation"},
            headers=api.admin(),
        )
        assert changed.status_code == 200, changed.text
        assert changed.json()["status"] == status
    re_enrolled = await api.http.post(
        f"/admin/v1/devices/{device_id}/re-enrol",
        json={"reason": "lost"},
        headers=api.admin(),
    )
    # A revoked identity is re-enrolled as a new device for the same vehicle.
    assert re_enrolled.status_code == 201, re_enrolled.text
    assert re_enrolled.json()["kind"] == EnrolmentKind.RE_ENROLMENT.value
    for event in (
        EventName.DEVICE_ENROLMENT_CREATED,
        EventName.DEVICE_PROVISIONED,
        EventName.DEVICE_SUSPENDED,
        EventName.DEVICE_RESUMED,
        EventName.DEVICE_REVOKED,
        EventName.DEVICE_REENROLMENT_STARTED,
    ):
        records = await api.events(event.value)
        assert records, event
        if event is not EventName.DEVICE_PROVISIONED:
            assert records[-1].actor_id == api.world.admin.id


async def test_rotate_and_decommission_through_the_admin_surface(api: Api) -> None:
    device_id = await api.device()
    csr = build_csr(generate_key(), device_id=device_id, vehicle_id=api.world.car.id)
    rotated = await api.http.post(
        f"/admin/v1/devices/{device_id}/rotate", json={"csr": csr}, headers=api.admin()
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["status"] == "pending"
    retired = await api.http.post(
        f"/admin/v1/devices/{device_id}/decommission",
        json={"reason": "end-of-life"},
        headers=api.admin(),
    )
    assert retired.status_code == 200
    assert {c["status"] for c in retired.json()["certificates"]} == {"revoked"}
    assert await api.status(device_id) is DeviceStatus.DECOMMISSIONED


def _headers(kind: str, api: Api) -> dict[str, str]:
    world = api.world
    scopes = [Permission.ADMIN_MANAGE_CLIENTS.value]
    if kind == "none":
        return {}
    if kind == "dealer-audience":
        return api.token(world.admin, world.operator.id, Surface.DEALER, scopes)
    if kind == "no-scope":
        return api.token(world.admin, world.operator.id, Surface.ADMIN, ["admin:manage_tenants"])
    if kind == "support-agent":
        return api.token(api.agent, world.operator.id, Surface.ADMIN, scopes)
    if kind == "admin-elsewhere":
        return api.token(world.admin, world.dealer.id, Surface.ADMIN, scopes)
    if kind == "workload":
        return api.token(
            world.admin, world.operator.id, Surface.ADMIN, scopes, subject_type="workload"
        )
    if kind == "stale-sign-in":
        return api.admin(auth_age=timedelta(minutes=30))
    raise KeyError(kind)


ADMIN_REFUSALS: list[tuple[str, int, str, str | None]] = [
    # No token, or a token for another surface: not authenticated here.
    ("none", 401, "authentication-required", None),
    ("dealer-audience", 401, "authentication-required", None),
    # The scope bounds everything: admin:manage_tenants is not admin:manage_clients.
    ("no-scope", 403, "insufficient-scope", None),
    # The role decides, per request: a support agent with the scope is still not an admin...
    ("support-agent", 403, "platform-admin-required", "role"),
    # ...nor is an admin acting in a tenant where they hold no admin role.
    ("admin-elsewhere", 403, "platform-admin-required", "role"),
    # Device credentials are managed by people, never by a workload acting for itself.
    ("workload", 403, "platform-admin-required", "not-a-person"),
    # Revocation is high impact: a sign-in older than five minutes must be refreshed.
    ("stale-sign-in", 401, "insufficient-user-authentication", None),
]


@pytest.mark.parametrize(
    ("kind", "status", "code", "reason"), ADMIN_REFUSALS, ids=[r[0] for r in ADMIN_REFUSALS]
)
async def test_admin_route_refuses(
    api: Api, kind: str, status: int, code: str, reason: str | None
) -> None:
    device_id = await api.device()
    response = await api.http.post(
        f"/admin/v1/devices/{device_id}/revoke",
        json={"reason": "compromised"},
        headers=_headers(kind, api),
    )
    assert response.status_code == status, response.text
    assert response.json()["type"] == f"urn:fleetward:problem:{code}"
    assert await api.status(device_id) is DeviceStatus.ACTIVE
    denied = await api.events(EventName.DEVICE_OPERATION_DENIED.value)
    assert [d.reason for d in denied] == ([reason] if reason else [])


async def test_an_admins_allowed_reads_and_changes_are_audited(api: Api) -> None:
    """Every decision is an audit event: a platform admin looking at a device identity (its
    vehicle, its last address) leaves a record as a refused caller does."""
    device_id = await api.device()
    shown = await api.http.get(f"/admin/v1/devices/{device_id}", headers=api.admin())
    assert shown.status_code == 200, shown.text
    suspended = await api.http.post(
        f"/admin/v1/devices/{device_id}/suspend", json={"reason": "check"}, headers=api.admin()
    )
    assert suspended.status_code == 200, suspended.text
    allowed = await api.events(EventName.DEVICE_OPERATION_ALLOWED.value)
    assert [(e.object_id, e.details["operation"], e.actor_id) for e in allowed] == [
        (device_id, "show", api.world.admin.id),
        (device_id, "suspend", api.world.admin.id),
    ]
    assert all(e.decision.value == "allowed" for e in allowed)


async def test_a_decision_on_a_vehicles_enrolment_is_recorded_against_the_vehicle(
    api: Api,
) -> None:
    # Threat: someone who is not a platform admin tries to have a car's identity issued.
    # The denial named the car's id as a device's, so an investigation of the car (its
    # records by vehicle) never saw the attempt.
    car = api.world.car.id
    headers = _headers("support-agent", api)
    response = await api.http.post(
        f"/admin/v1/vehicles/{car}/device-enrolments", json={}, headers=headers
    )
    assert response.status_code == 403
    [denied] = await api.events(EventName.DEVICE_OPERATION_DENIED.value)
    assert (denied.object_type, denied.object_id, denied.vehicle_id) == ("vehicle", car, car)
    allowed = await api.http.post(
        f"/admin/v1/vehicles/{car}/device-enrolments", json={}, headers=api.admin()
    )
    assert allowed.status_code == 201, allowed.text
    [decision] = await api.events(EventName.DEVICE_OPERATION_ALLOWED.value)
    assert (decision.object_type, decision.vehicle_id) == ("vehicle", car)


async def test_an_admins_refused_attempt_to_undo_a_revocation_is_still_recorded(
    api: Api,
) -> None:
    # Threat: an admin account (stolen, or its holder) tries to bring a revoked device back.
    # The attempt is refused (409), and its allowed authorization decision went down with
    # the refused transaction: no trace of who tried what on which device.
    device_id = await api.device()
    revoked = await api.http.post(
        f"/admin/v1/devices/{device_id}/revoke", json={"reason": "stolen"}, headers=api.admin()
    )
    assert revoked.status_code == 200, revoked.text
    resumed = await api.http.post(
        f"/admin/v1/devices/{device_id}/resume", json={"reason": "oops"}, headers=api.admin()
    )
    assert resumed.status_code == 409
    assert await api.status(device_id) is DeviceStatus.REVOKED
    allowed = await api.events(EventName.DEVICE_OPERATION_ALLOWED.value)
    assert [(e.object_id, e.details["operation"]) for e in allowed] == [
        (device_id, "revoke"),
        (device_id, "resume"),
    ]


async def test_admin_body_and_ids_are_checked(api: Api) -> None:
    device_id = await api.device()
    for body in ({"reason": "x", "status": "active"}, {"reason": "Free text!"}, {}):
        response = await api.http.post(
            f"/admin/v1/devices/{device_id}/suspend", json=body, headers=api.admin()
        )
        assert response.status_code == 422, body
    missing = await api.http.get("/admin/v1/devices/dev_" + "a" * 26, headers=api.admin())
    assert missing.json()["type"] == "urn:fleetward:problem:device-not-found"
    garbage = await api.http.get("/admin/v1/devices/../../etc", headers=api.admin())
    assert garbage.status_code == 404
    assert await api.status(device_id) is DeviceStatus.ACTIVE


def _technician(kind: str, api: Api) -> dict[str, str]:
    world = api.world
    if kind == "assigned":
        return api.technician()
    if kind == "unassigned":
        return api.technician(world.unassigned_technician)
    if kind == "other-dealer":
        return api.technician(
            api.other_dealer_technician, api.other_dealer_technician.home_tenant_id
        )
    if kind == "owner":
        return api.token(world.owner, world.consumer.id, Surface.DEALER, ["dealer:manage_case"])
    raise KeyError(kind)


async def test_tcu_replacement_by_the_assigned_technician(api: Api) -> None:
    old = await api.device()
    response = await api.http.post(
        f"/dealer/v1/cases/{api.world.case.id}/tcu-replacement", json={}, headers=api.technician()
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["revoked_device_id"] == old and body["kind"] == "replacement"
    assert await api.status(old) is DeviceStatus.REVOKED
    [decision] = await api.events("authz:decision:made")
    assert (decision.decision.value, decision.reason) == ("allowed", "dealer-case-manage")
    [replaced] = await api.events(EventName.DEVICE_TCU_REPLACED.value)
    assert replaced.actor_id == api.world.technician.id


REPLACEMENT_REFUSALS: list[tuple[str, str]] = [
    # A technician of the dealer, but not assigned to this case.
    ("unassigned", "no-relationship"),
    # Another dealer's technician: the case is not theirs (and not told it exists).
    ("other-dealer", "no-relationship"),
    # Not a dealer at all, whatever the token's scope says.
    ("owner", "no-relationship"),
]


@pytest.mark.parametrize(
    ("kind", "reason"), REPLACEMENT_REFUSALS, ids=[r[0] for r in REPLACEMENT_REFUSALS]
)
async def test_tcu_replacement_refused(api: Api, kind: str, reason: str) -> None:
    old = await api.device()
    response = await api.http.post(
        f"/dealer/v1/cases/{api.world.case.id}/tcu-replacement",
        json={},
        headers=_technician(kind, api),
    )
    # Not-yours and not-found answer the same.
    assert response.status_code == 404, response.text
    assert response.json()["type"] == "urn:fleetward:problem:case-not-found"
    assert await api.status(old) is DeviceStatus.ACTIVE
    [decision] = await api.events("authz:decision:made")
    assert decision.decision.value == "denied"
    assert decision.reason == reason, decision.reason
    assert await api.events(EventName.DEVICE_TCU_REPLACED.value) == []


async def test_tcu_replacement_without_an_open_case_is_refused(api: Api) -> None:
    old = await api.device()
    async with api.platform.services() as (uow, ctx):
        case = await ctx.session.get(DealerCase, api.world.case.id)
        assert case is not None
        await CaseService(ctx).close_dealer_case(case, actor=FACTORY)
        await uow.commit()
    response = await api.http.post(
        f"/dealer/v1/cases/{api.world.case.id}/tcu-replacement", json={}, headers=api.technician()
    )
    assert response.status_code == 404
    assert await api.status(old) is DeviceStatus.ACTIVE


async def test_tcu_replacement_refuses_an_allow_carrying_an_obligation(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The route asked the PDP itself and acted on any allow: a policy attaching an obligation
    # to dealer-case-manage (which nothing here applies) would still have revoked the car's
    # TCU (fail open). It asks through the route helper now, which refuses such an allow.
    old = await api.device()
    obliged(monkeypatch, Obligation.MINIMISE_FIELDS)
    response = await api.http.post(
        f"/dealer/v1/cases/{api.world.case.id}/tcu-replacement", json={}, headers=api.technician()
    )
    assert response.status_code == 404, response.text
    assert response.json()["type"] == "urn:fleetward:problem:case-not-found"
    assert await api.status(old) is DeviceStatus.ACTIVE
    assert await api.events(EventName.DEVICE_TCU_REPLACED.value) == []


async def test_tcu_replacement_cut_off_by_the_pdp_deadline_is_store_busy(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A decision the PDP could not make in time says nothing about the case: the technician
    # is told to retry (503), not that their case does not exist, and nothing is recorded
    # from a transaction whose read was cut off.
    old = await api.device()

    async def cut_off(*_args: object) -> Relations:
        raise TimeoutError  # what the PDP's deadline raises inside the relations' read

    monkeypatch.setattr(SessionRelations, "relations", cut_off)
    response = await api.http.post(
        f"/dealer/v1/cases/{api.world.case.id}/tcu-replacement", json={}, headers=api.technician()
    )
    assert response.status_code == 503, response.text
    assert response.json()["type"] == "urn:fleetward:problem:store-busy"
    assert await api.status(old) is DeviceStatus.ACTIVE
    assert await api.events("authz:decision:made") == []


async def test_refused_enrolment_is_audited_and_changes_nothing(api: Api) -> None:
    response = await api.http.post(
        "/gateway/v1/enrol", json={"token": "fwenrol_" + "x" * 43, "csr": "null"}
    )
    assert response.status_code == 401
    assert response.json()["type"] == "urn:fleetward:problem:enrolment-token-invalid"
    [refused] = await api.events(EventName.DEVICE_ENROLMENT_REFUSED.value)
    assert refused.reason == "unknown" and "token" not in refused.details
    smuggled = await api.http.post(
        "/gateway/v1/enrol", json={"token": "t", "csr": "c", "device_id": "dev_mine"}
    )
    assert smuggled.status_code == 422  # a device cannot name its own identity


async def test_a_refused_enrolment_names_the_enrolment_its_token_belongs_to(api: Api) -> None:
    # Threat: an enrolment token leaks and someone else redeems it first; the genuine TCU's
    # attempt is then refused as "used". Its record named no enrolment, device or vehicle
    # ("unknown"), so nothing tied the refusal to the identity the thief obtained.
    async with api.platform.services() as (uow, ctx):
        grant = await Provisioning(ctx).create_enrolment(api.world.car, actor=FACTORY)
        await uow.commit()
    for _ in range(2):
        csr = build_csr(generate_key(), device_id=grant.device_id, vehicle_id=grant.vehicle_id)
        response = await api.http.post("/gateway/v1/enrol", json={"token": grant.token, "csr": csr})
    assert response.status_code == 401
    [refused] = await api.events(EventName.DEVICE_ENROLMENT_REFUSED.value)
    assert refused.reason == "used"
    assert (refused.object_id, refused.vehicle_id, refused.tenant_id) == (
        grant.device_id,
        api.world.car.id,
        api.world.car.tenant_id,
    )
    assert refused.details["enrolment"] == grant.enrolment_id
    assert grant.token not in str(refused.details)


async def test_a_flood_of_refused_enrolments_is_counted_not_written(api: Api) -> None:
    # Threat: anyone can have an enrolment refused, without any credential (a made-up token
    # will do), and each refusal recorded was an audit write of its own: an unauthenticated
    # flood of database writes that also buries the real refusals. Past its network's budget
    # (the one refused handshakes spend) a refusal is counted, and the count is written once
    # its window is over. The caller's answer is the same either way.
    gateway = gateway_of(api.app)
    assert gateway is not None
    budget = gateway.config.refusals_per_network
    for _ in range(budget + 5):
        response = await api.http.post(
            "/gateway/v1/enrol", json={"token": "fwenrol_" + "x" * 43, "csr": "null"}
        )
        assert response.status_code == 401
        assert response.json()["type"] == "urn:fleetward:problem:enrolment-token-invalid"
    assert len(await api.events(EventName.DEVICE_ENROLMENT_REFUSED.value)) == budget
    api.clock.advance(gateway.config.refusal_window)
    await gateway.flush_refusals()
    [summary] = await api.events(EventName.DEVICE_HANDSHAKES_UNRECORDED.value)
    assert (summary.details["recorded"], summary.details["unrecorded"]) == (budget, 5)


async def test_a_csr_with_a_key_the_library_cannot_load_is_a_refusal(api: Api) -> None:
    # A key on a curve the crypto library does not know escaped the CSR checks as its own
    # exception: a 500, and a refusal nobody recorded.
    async with api.platform.services() as (uow, ctx):
        grant = await Provisioning(ctx).create_enrolment(api.world.car, actor=FACTORY)
        await uow.commit()
    key = generate_key(KeyAlgorithm.P256)
    pem = build_csr(key, device_id=grant.device_id, vehicle_id=grant.vehicle_id)
    raw = x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER)
    unknown_curve = raw.replace(
        bytes.fromhex("06082a8648ce3d030107"), bytes.fromhex("06082a8648ce3d030109")
    )
    body = base64.encodebytes(unknown_curve).decode("ascii")
    csr = f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n"
    response = await api.http.post("/gateway/v1/enrol", json={"token": grant.token, "csr": csr})
    assert response.status_code == 422, response.text
    assert response.json()["type"] == "urn:fleetward:problem:csr-refused"
    [refused] = await api.events(EventName.DEVICE_ENROLMENT_REFUSED.value)
    assert refused.reason == "key-type"
    # The token is not spent: the TCU retries with a key the platform certifies.
    retry = build_csr(generate_key(), device_id=grant.device_id, vehicle_id=grant.vehicle_id)
    enrolled = await api.http.post("/gateway/v1/enrol", json={"token": grant.token, "csr": retry})
    assert enrolled.status_code == 200, enrolled.text


def test_every_device_route_is_catalogued(api: Api) -> None:
    items = {(i.path, i.methods): i.entry for i in inventory(api.app.router.routes)}
    admin = [e for (path, _), e in items.items() if path.startswith("/admin/v1/devices")]
    assert len(admin) == 7
    for entry in admin:
        assert entry.permission is Permission.ADMIN_MANAGE_CLIENTS
        assert "admin:manage_clients" in entry.purpose
    replacement = items[("/dealer/v1/cases/{case_id}/tcu-replacement", ("POST",))]
    assert replacement.permission is Permission.DEALER_MANAGE_CASE
    assert items[("/gateway/v1/enrol", ("POST",))].permission is AUTHENTICATED
    socket = items[("/gateway/v1/ws", ("WEBSOCKET",))]
    assert (socket.surface, socket.permission) == ("gateway", AUTHENTICATED)
