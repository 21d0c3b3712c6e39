"""Device lifecycle routes: platform operations on the admin surface, TCU replacement on the
dealer surface, and enrolment for the devices themselves.

Authorization:

* admin routes: an admin-surface token with ``admin:manage_clients`` (a device is a platform
  client; the vocabulary has no device permission) held by a person who is a platform admin of
  the operator tenant the token names, checked here for every request; mutations need a
  recent multi-factor sign-in (step-up).
* the dealer route: a dealer-surface token with ``dealer:manage_case``, and the policy decision
  point's answer for that case (an open case of the caller's dealer, assigned to them); the
  service checks the case again. Not-yours and not-found answer the same.
* enrolment: a one-time enrolment token in the body, nothing else.

Every decision is audited; after a change commits, the device's live sessions are closed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from fleetward.api.auth import Caller, StepUp, authenticate
from fleetward.api.authorize import ObjectNotFound, authorize
from fleetward.api.routing import CataloguedRoute
from fleetward.audit.events import Decision, EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.authz.decision import ResourceKind, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import (
    AUTHENTICATED,
    CallerType,
    CatalogEntry,
    DataClass,
    Impact,
    PublicMarker,
    catalogued,
)
from fleetward.commands.runtime import commands_of
from fleetward.core.errors import FleetwardError, JsonValue
from fleetward.core.surfaces import Surface
from fleetward.devices.admission import record_unrecorded
from fleetward.devices.ca import load_device_ca
from fleetward.devices.errors import CaseNotFound, NotPlatformAdmin
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import Device, DeviceStatus
from fleetward.devices.provisioning import Provisioning, on_vehicle
from fleetward.devices.views import (
    CertificateView,
    CsrBody,
    DeviceView,
    EnrolBody,
    EnrolmentBody,
    EnrolmentView,
    ReasonBody,
    ReEnrolBody,
    ReplacementView,
    device_view,
)
from fleetward.gateway.refusals import Unrecorded
from fleetward.gateway.websocket import GATEWAY_SURFACE, gateway_of
from fleetward.identity.directory import Directory
from fleetward.identity.login.limits import client_network
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.vehicles.errors import VehicleNotFound
from fleetward.vehicles.models import DealerCase, Vehicle

OWNER = "devices-team"
_ADMIN_PURPOSE = " (platform operation: devices are platform clients, so admin:manage_clients)"

# ----------------------------------------------------------------------------- helpers


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def _entry(
    surface: Surface | str,
    purpose: str,
    permission: Permission | PublicMarker,
    callers: frozenset[CallerType],
    *,
    objects: Sequence[str] = ("device",),
    rate: int = 10,
) -> CatalogEntry:
    return CatalogEntry(
        surface=surface,
        owner=OWNER,
        purpose=purpose,
        callers=callers,
        permission=permission,
        data_class=DataClass.CREDENTIAL,
        objects=tuple(objects),
        impact=frozenset({Impact.SAFETY, Impact.OPERATIONAL}),
        expected_rate_per_minute=rate,
        tags=("devices",),
    )


def _admin_actor(caller: Caller) -> Actor:
    return Actor.user(caller.claims.sub, caller.claims.tenant)


async def _require_platform_admin(
    platform: Platform,
    ctx: ServiceContext,
    caller: Caller,
    operation: str,
    target: str,
    *,
    kind: str = "device",
) -> None:
    """A person who is a platform admin of the (operator) tenant the token names, now.
    ``kind``: what ``target`` names (a vehicle for an enrolment: its records are found by
    vehicle)."""
    claims = caller.claims
    reason: str | None = None
    if claims.sub_type != "user":
        reason = "not-a-person"  # platform operations on devices are never automated
    else:
        user = await ctx.session.get(User, claims.sub)
        tenant = await ctx.session.get(Tenant, claims.tenant)
        if (
            user is None
            or tenant is None
            or user.disabled_at is not None
            or tenant.disabled_at is not None
            or tenant.kind is not TenantKind.OPERATOR
            or Role.PLATFORM_ADMIN not in await Directory(ctx).active_roles(user, tenant)
        ):
            reason = "role"
    if reason is None:
        # An allowed decision is an audit event too (a read changes nothing else to record),
        # kept like a denial: an operation refused after it (an attempt to resume a revoked
        # device, 409) rolls the route's transaction back, and the attempt must still show.
        platform.audit.record(
            ctx.session,
            EventName.DEVICE_OPERATION_ALLOWED,
            actor=_admin_actor(caller),
            target=Target(kind, target),
            details={"operation": operation, "surface": caller.surface.value},
            keep=True,
        )
        return
    # Kept: the refusal rolls the caller's transaction back, and its unit of work then
    # writes the denial in a transaction of its own (store.pending).
    platform.audit.record(
        ctx.session,
        EventName.DEVICE_OPERATION_DENIED,
        actor=_admin_actor(caller),
        target=Target(kind, target),
        decision=Decision.DENIED,
        reason=reason,
        details={"operation": operation, "surface": caller.surface.value},
        keep=True,
    )
    raise NotPlatformAdmin("this operation is for platform administrators", reason=reason)


async def _apply(request: Request, device_id: str, status: DeviceStatus, reason: str) -> None:
    """After the change committed: close the device's sessions, or tell the pipeline."""
    gateway = gateway_of(request.app)
    if gateway is not None:
        await gateway.registry.apply(device_id, status, reason)


async def _view(request: Request, ctx: ServiceContext, device: Device) -> DeviceView:
    gateway = gateway_of(request.app)
    live = len(gateway.registry.sessions(device.id)) if gateway else 0
    return await device_view(ctx, device, live_sessions=live)


# ----------------------------------------------------------------------------- admin

admin_router = APIRouter(prefix="/admin/v1", tags=["admin"], route_class=CataloguedRoute)
_ADMIN = frozenset({CallerType.ADMIN})
AdminCaller = Annotated[Caller, Depends(authenticate(Surface.ADMIN))]
SteppedUpAdmin = Annotated[Caller, Depends(authenticate(Surface.ADMIN, step_up=StepUp()))]


@admin_router.post(
    "/vehicles/{vehicle_id}/device-enrolments",
    name="admin:devices:enrol",
    status_code=201,
    response_model=EnrolmentView,
)
@catalogued(
    _entry(
        Surface.ADMIN,
        "creates a one-time enrolment token for a vehicle's first TCU" + _ADMIN_PURPOSE,
        Permission.ADMIN_MANAGE_CLIENTS,
        _ADMIN,
        objects=("vehicle", "device"),
    )
)
async def create_enrolment(
    vehicle_id: str, body: EnrolmentBody, request: Request, caller: SteppedUpAdmin
) -> EnrolmentView:
    platform = _platform(request)
    async with platform.services() as (uow, ctx):
        await _require_platform_admin(platform, ctx, caller, "enrol", vehicle_id, kind="vehicle")
        vehicle = await ctx.session.get(Vehicle, vehicle_id)
        if vehicle is None:
            raise VehicleNotFound("no such vehicle")
        grant = await Provisioning(ctx).create_enrolment(
            vehicle, actor=_admin_actor(caller), lifetime=timedelta(hours=body.hours)
        )
        await uow.commit()
    return EnrolmentView.of(grant)


@admin_router.get("/devices/{device_id}", name="admin:devices:show", response_model=DeviceView)
@catalogued(
    _entry(
        Surface.ADMIN,
        "a device identity: status, certificates, clone incidents" + _ADMIN_PURPOSE,
        Permission.ADMIN_MANAGE_CLIENTS,
        _ADMIN,
        rate=30,
    )
)
async def show_device(device_id: str, request: Request, caller: AdminCaller) -> DeviceView:
    platform = _platform(request)
    async with platform.services() as (uow, ctx):
        await _require_platform_admin(platform, ctx, caller, "show", device_id)
        device = await DeviceLifecycle(ctx).get(device_id)
        view = await _view(request, ctx, device)
        await uow.commit()  # the decision's record
    return view


@admin_router.post(
    "/devices/{device_id}/rotate", name="admin:devices:rotate", response_model=CertificateView
)
@catalogued(
    _entry(
        Surface.ADMIN,
        "certifies a device's new key; the old certificate is revoked when the new one is "
        "first used" + _ADMIN_PURPOSE,
        Permission.ADMIN_MANAGE_CLIENTS,
        _ADMIN,
    )
)
async def rotate_device(
    device_id: str, body: CsrBody, request: Request, caller: SteppedUpAdmin
) -> CertificateView:
    platform = _platform(request)
    async with platform.services() as (uow, ctx):
        await _require_platform_admin(platform, ctx, caller, "rotate", device_id)
        lifecycle = DeviceLifecycle(ctx)
        device = await lifecycle.get(device_id)
        ca = load_device_ca(platform.settings, platform.identity.data_key, platform.clock)
        issued = await lifecycle.rotate(device, body.csr, ca, actor=_admin_actor(caller))
        await uow.commit()
    return CertificateView.of(issued)


def _transition_route(operation: str, purpose: str) -> None:
    @admin_router.post(
        f"/devices/{{device_id}}/{operation}",
        name=f"admin:devices:{operation}",
        response_model=DeviceView,
    )
    @catalogued(
        _entry(Surface.ADMIN, purpose + _ADMIN_PURPOSE, Permission.ADMIN_MANAGE_CLIENTS, _ADMIN)
    )
    async def transition(
        device_id: str, body: ReasonBody, request: Request, caller: SteppedUpAdmin
    ) -> DeviceView:
        platform = _platform(request)
        async with platform.services() as (uow, ctx):
            await _require_platform_admin(platform, ctx, caller, operation, device_id)
            lifecycle = DeviceLifecycle(ctx)
            device = await lifecycle.get(device_id)
            move = {
                "suspend": lifecycle.suspend,
                "resume": lifecycle.resume,
                "revoke": lifecycle.revoke,
                "decommission": lifecycle.decommission,
            }[operation]
            await move(device, reason=body.reason, actor=_admin_actor(caller))
            await uow.commit()
            await _apply(request, device.id, device.status, body.reason)
            return await _view(request, ctx, device)


_transition_route("suspend", "suspends a device: its sessions close and it cannot connect")
_transition_route("resume", "resumes a suspended or quarantined device")
_transition_route("revoke", "revokes a device identity and its certificates for good")
_transition_route("decommission", "retires a device identity (end of life) for good")


@admin_router.post(
    "/devices/{device_id}/re-enrol",
    name="admin:devices:re-enrol",
    status_code=201,
    response_model=EnrolmentView,
)
@catalogued(
    _entry(
        Surface.ADMIN,
        "ends a device identity and creates an enrolment for fresh credentials" + _ADMIN_PURPOSE,
        Permission.ADMIN_MANAGE_CLIENTS,
        _ADMIN,
        objects=("device", "vehicle"),
    )
)
async def re_enrol_device(
    device_id: str, body: ReEnrolBody, request: Request, caller: SteppedUpAdmin
) -> EnrolmentView:
    platform = _platform(request)
    async with platform.services() as (uow, ctx):
        await _require_platform_admin(platform, ctx, caller, "re-enrol", device_id)
        lifecycle = DeviceLifecycle(ctx)
        device = await lifecycle.get(device_id)
        grant = await lifecycle.re_enrol(
            device,
            reason=body.reason,
            actor=_admin_actor(caller),
            lifetime=timedelta(hours=body.hours),
        )
        await uow.commit()
    await _apply(request, device.id, device.status, body.reason)
    return EnrolmentView.of(grant)


# ----------------------------------------------------------------------------- dealer

dealer_router = APIRouter(prefix="/dealer/v1", tags=["dealer"], route_class=CataloguedRoute)
SteppedUpTechnician = Annotated[Caller, Depends(authenticate(Surface.DEALER, step_up=StepUp()))]


@dealer_router.post(
    "/cases/{case_id}/tcu-replacement",
    name="dealer:cases:tcu-replacement",
    status_code=201,
    response_model=ReplacementView,
)
@catalogued(
    _entry(
        Surface.DEALER,
        "replaces a vehicle's TCU under an open dealer case: revokes the old device and "
        "creates the new one's enrolment in one transaction",
        Permission.DEALER_MANAGE_CASE,
        frozenset({CallerType.USER}),
        objects=("dealer_case", "vehicle", "device"),
        rate=2,
    )
)
async def replace_tcu(
    case_id: str, body: EnrolmentBody, request: Request, caller: SteppedUpTechnician
) -> ReplacementView:
    platform = _platform(request)
    async with platform.services() as (uow, ctx):
        # The route helper, as every route: fails closed, refuses an allow carrying an
        # obligation (none is applied here), answers a decision cut off by its deadline with
        # a retryable 503, and keeps a denial's record through the refusal's rollback.
        case_ref = ResourceRef(ResourceKind.DEALER_CASE, case_id)
        try:
            await authorize(request, caller, Permission.DEALER_MANAGE_CASE, case_ref, ctx=ctx)
        except ObjectNotFound:
            raise CaseNotFound("no such case") from None
        case = await ctx.session.get(DealerCase, case_id)
        technician = await ctx.session.get(User, caller.claims.sub)
        if case is None or technician is None:  # the PDP saw both a moment ago
            raise CaseNotFound("no such case")
        replacement = await DeviceLifecycle(ctx).replace_tcu(
            case,
            technician,
            actor=Actor.user(technician.id, caller.claims.tenant),
            lifetime=timedelta(hours=body.hours),
        )
        await uow.commit()
    if replacement.revoked_device_id is not None:
        await _apply(request, replacement.revoked_device_id, DeviceStatus.REVOKED, "tcu-replaced")
    grant = replacement.enrolment
    return ReplacementView(
        **EnrolmentView.of(grant).model_dump(), revoked_device_id=replacement.revoked_device_id
    )


# ----------------------------------------------------------------------------- device

enrolment_router = APIRouter(
    prefix="/gateway/v1", tags=[GATEWAY_SURFACE], route_class=CataloguedRoute
)


@enrolment_router.post("/enrol", name="gateway:enrol", response_model=CertificateView)
@catalogued(
    _entry(
        GATEWAY_SURFACE,
        "a TCU redeems a one-time enrolment token with its CSR for its device certificate "
        "(authorized by the token in the body, no access token)",
        AUTHENTICATED,
        frozenset({CallerType.VEHICLE}),
        rate=1,
    )
)
async def enrol(body: EnrolBody, request: Request) -> CertificateView:
    platform = _platform(request)
    try:
        async with platform.services() as (uow, ctx):
            ca = load_device_ca(platform.settings, platform.identity.data_key, platform.clock)
            issued = await Provisioning(ctx).enrol(body.token, body.csr, ca)
            await uow.commit()
    except FleetwardError as refused:
        await _record_enrolment_refusal(request, platform, body.token, refused)
        raise
    signer = commands_of(request.app).signer
    return CertificateView.of(issued, (signer.key_id, signer.public_key_pem))


async def _record_enrolment_refusal(
    request: Request, platform: Platform, token: str, refused: FleetwardError
) -> None:
    """Anyone can have an enrolment refused, with a made-up token and no credential at all:
    past its network's budget (the one refused handshakes spend, ``gateway.refusals``) a
    refusal is counted, not written, so a flood is not a flood of audit writes. The windows
    the budget hands back are written here, once (``device:handshake:unrecorded``). A
    recorded refusal names the enrolment its token belongs to, if any (a spent token tried
    again is how a stolen one shows), never the token."""
    gateway = gateway_of(request.app)
    ended: list[Unrecorded] = []
    window_seconds = 0.0
    record = True  # without a gateway there is no budget: every refusal is recorded
    if gateway is not None:
        peer = request.client.host if request.client else None
        record, ended = gateway.refusals.admit(client_network(peer), platform.clock.now())
        window_seconds = gateway.config.refusal_window.total_seconds()
    if not record and not ended:
        return
    async with platform.services() as (uow, ctx):
        if record:
            await _record_refused_enrolment(ctx, token, refused)
        for window in ended:
            record_unrecorded(
                platform.audit,
                uow.session,
                network=window.network,
                started=window.started,
                recorded=window.recorded,
                unrecorded=window.unrecorded,
                window_seconds=window_seconds,
            )
        await uow.commit()


async def _record_refused_enrolment(
    ctx: ServiceContext, token: str, refused: FleetwardError
) -> None:
    """Against the enrolment's device and vehicle when the token names one (whatever its
    state), else an unknown device."""
    enrolment = await Provisioning(ctx).named_by(token)
    target = Target("device", "unknown")
    details: dict[str, JsonValue] = {"problem": refused.code}
    if enrolment is not None:
        vehicle = await ctx.session.get(Vehicle, enrolment.vehicle_id)
        tenant_id = vehicle.tenant_id if vehicle is not None else None
        target = Target("device", enrolment.device_id, tenant_id)
        details.update(enrolment=enrolment.id, vehicle=enrolment.vehicle_id)
    row = ctx.audit.record(
        ctx.session,
        EventName.DEVICE_ENROLMENT_REFUSED,
        actor=Actor.system("gateway:enrolment"),
        target=target,
        decision=Decision.DENIED,
        reason=refused.reason or refused.code,
        details=details,
    )
    on_vehicle(row, enrolment.vehicle_id if enrolment is not None else None)


router = APIRouter()
router.include_router(admin_router)
router.include_router(dealer_router)
router.include_router(enrolment_router)
