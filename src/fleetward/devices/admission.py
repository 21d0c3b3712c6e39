"""The store's side of a device handshake: may this proven certificate open a session now?

The gateway has already proven possession of the key of a certificate the device CA issued,
valid now, naming one device and one vehicle. Admission adds what only the store knows: the
certificate is one we issued to that device (looked up by fingerprint), not revoked, and the
device is active and still bound to that vehicle. It also records the session's opening and
closing, and answers the session registry's periodic "is this still allowed?" question.
"""

from __future__ import annotations

import asyncio
import contextvars
import random
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.recorder import Actor, AuditRecorder, Target
from fleetward.core.clock import Clock
from fleetward.core.context import RequestContext, current_request
from fleetward.core.errors import JsonValue
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import (
    CertificateStatus,
    Device,
    DeviceCertificate,
    DeviceStatus,
)
from fleetward.devices.provisioning import on_vehicle
from fleetward.observability.logging import get_logger
from fleetward.services import ServiceContext
from fleetward.store.busy import StoreBusy, is_store_busy
from fleetward.store.uow import UnitOfWork
from fleetward.vehicles.models import Vehicle

_log = get_logger(__name__)

_REFUSAL_BY_STATUS = {
    DeviceStatus.SUSPENDED: "device-suspended",
    DeviceStatus.REVOKED: "device-revoked",
    DeviceStatus.DECOMMISSIONED: "device-decommissioned",
}
# A quarantined device still connects: its frames are set apart by the pipeline and kept for
# investigation, and it is not told. Only an operator suspends or revokes it.
ADMITTED_STATUSES = frozenset({DeviceStatus.ACTIVE, DeviceStatus.QUARANTINED})


class AdmissionRefused(Exception):
    """reason: unknown-certificate, binding, certificate-revoked, certificate-expired,
    device-suspended, device-revoked, device-decommissioned."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Admitted:
    device: Device
    certificate: DeviceCertificate
    tenant_id: str

    @property
    def first_use_of_rotation(self) -> bool:
        return self.certificate.status is CertificateStatus.PENDING


def device_actor(device_id: str, tenant_id: str | None = None) -> Actor:
    return Actor(ActorType.DEVICE, device_id, tenant_id)


class DeviceAdmission:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def check(self, *, device_id: str, vehicle_id: str, fingerprint: str) -> Admitted:
        session = self._ctx.session
        now = self._ctx.clock.now()
        certificate = await session.scalar(
            select(DeviceCertificate).where(DeviceCertificate.fingerprint == fingerprint)
        )
        if certificate is None:
            # Signed by our CA but not in our records: a CA key leak or a restored backup.
            raise AdmissionRefused("unknown-certificate")
        device = await session.get(Device, device_id)
        if certificate.device_id != device_id or device is None or device.vehicle_id != vehicle_id:
            raise AdmissionRefused("binding")
        withdrawn = _withdrawal(device, certificate)
        if withdrawn is not None:
            raise AdmissionRefused(withdrawn)
        if not certificate.not_before <= now <= certificate.not_after:
            raise AdmissionRefused("certificate-expired")
        vehicle = await session.get(Vehicle, vehicle_id)
        if vehicle is None:
            raise AdmissionRefused("binding")
        return Admitted(device, certificate, vehicle.tenant_id)

    async def replaced_serials(self, admitted: Admitted) -> frozenset[str]:
        """The active certificates a pending one replaces on its first use."""
        rows = await self._ctx.session.scalars(
            select(DeviceCertificate.serial).where(
                DeviceCertificate.device_id == admitted.device.id,
                DeviceCertificate.status == CertificateStatus.ACTIVE,
            )
        )
        return frozenset(rows)

    async def opened(
        self,
        admitted: Admitted,
        *,
        session_id: str,
        peer: str,
        software_version: str,
        details: dict[str, JsonValue],
    ) -> list[str]:
        """Record an admitted session; completes a rotation on its first use. Returns the
        serials that rotation revoked (their sessions must end)."""
        device = admitted.device
        actor = device_actor(device.id, admitted.tenant_id)
        now = self._ctx.clock.now()
        revoked: list[str] = []
        if admitted.first_use_of_rotation:
            revoked = await DeviceLifecycle(self._ctx).complete_rotation(
                device, admitted.certificate, actor=actor
            )
        if admitted.certificate.first_used_at is None:
            admitted.certificate.first_used_at = now
        device.last_peer = peer
        device.last_seen_at = now
        record = self._ctx.audit.record(
            self._ctx.session,
            EventName.DEVICE_SESSION_OPENED,
            actor=actor,
            target=Target("device", device.id, admitted.tenant_id),
            details={
                "session": session_id,
                "vehicle": device.vehicle_id,
                "serial": admitted.certificate.serial,
                "peer": peer,
                "software_version": software_version,
                "status": device.status.value,
                **details,
            },
        )
        on_vehicle(record, device.vehicle_id)
        await self._ctx.session.flush()
        return revoked

    async def closed(
        self, *, device_id: str, tenant_id: str, session_id: str, last_activity: datetime, code: str
    ) -> None:
        device = await self._ctx.session.get(Device, device_id)
        if device is not None and (
            device.last_seen_at is None or device.last_seen_at < last_activity
        ):
            device.last_seen_at = last_activity
        record = self._ctx.audit.record(
            self._ctx.session,
            EventName.DEVICE_SESSION_CLOSED,
            actor=device_actor(device_id, tenant_id),
            target=Target("device", device_id, tenant_id),
            details={"session": session_id, "close": code},
        )
        on_vehicle(record, device.vehicle_id if device is not None else None)
        await self._ctx.session.flush()


def record_refusal(
    audit: AuditRecorder,
    session: AsyncSession,
    *,
    reason: str,
    device_id: str | None,
    peer: str,
    close: str,
) -> None:
    """A refused handshake. ``device_id`` only when our CA vouched for it."""
    actor = device_actor(device_id) if device_id else Actor.system("gateway")
    audit.record(
        session,
        EventName.DEVICE_HANDSHAKE_FAILED,
        actor=actor,
        target=Target("device", device_id or "unknown"),
        decision=Decision.DENIED,
        reason=reason,
        details={"peer": peer, "close": close},
    )


def record_churn(
    audit: AuditRecorder,
    session: AsyncSession,
    *,
    device_id: str,
    peer: str,
    transport: str,
    burst: int,
    refill_seconds: float,
    retry_after_seconds: float,
) -> None:
    """A device proven by its key refused for opening sessions faster than its budget
    (``gateway.churn``): recorded once per breach, the refusals themselves within the refusal
    budget. A device in a loop: a TCU fault, or a copy of its key superseding its sessions."""
    audit.record(
        session,
        EventName.DEVICE_SESSION_CHURN,
        actor=device_actor(device_id),
        target=Target("device", device_id),
        decision=Decision.DENIED,
        reason="session-churn",
        details={
            "peer": peer,
            "transport": transport,
            "burst": burst,
            "refill_seconds": refill_seconds,
            "retry_after_seconds": retry_after_seconds,
        },
    )


def record_unrecorded(
    audit: AuditRecorder,
    session: AsyncSession,
    *,
    network: str,
    started: datetime,
    recorded: int,
    unrecorded: int,
    window_seconds: float,
) -> None:
    """Refused handshakes from ``network`` that were counted, not recorded one by one, in the
    window that began at ``started`` (``recorded`` were). Written while another connection is
    handled: none of that request's facts (address, ids) belong on it."""
    row = audit.record(
        session,
        EventName.DEVICE_HANDSHAKES_UNRECORDED,
        actor=Actor.system("gateway"),
        target=Target("network", network),
        decision=Decision.DENIED,
        reason="refusal-budget",
        details={
            "network": network,
            "window_started_at": started.isoformat(),
            "window_seconds": window_seconds,
            "recorded": recorded,
            "unrecorded": unrecorded,
        },
    )
    row.update(source_ip=None, request_id=None, trace_id=None)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the store says about the credentials of live sessions."""

    statuses: Mapping[str, DeviceStatus]  # device id -> status; a missing device is gone
    withdrawn_serials: frozenset[str]  # certificates revoked, expired or unknown


class StoreCredentialCheck:
    """Re-reads the credentials of live sessions, for changes made outside this process (the
    CLI, another replica). Opens a short session of its own per call; safe for concurrent use."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], clock: Clock) -> None:
        self._sessions = sessions
        self._clock = clock

    async def current(self, live: Sequence[tuple[str, str]]) -> Credentials:
        """``live``: (device id, certificate serial) of each live session."""
        if not live:
            return Credentials({}, frozenset())
        now = self._clock.now()
        serials = sorted({serial for _, serial in live})
        async with self._sessions() as session:
            device_rows = await session.execute(
                select(Device.id, Device.status).where(
                    Device.id.in_(sorted({device for device, _ in live}))
                )
            )
            statuses = {device_id: status for device_id, status in device_rows}
            certificate_rows = await session.execute(
                select(DeviceCertificate.serial).where(
                    DeviceCertificate.serial.in_(serials),
                    DeviceCertificate.status != CertificateStatus.REVOKED,
                    DeviceCertificate.not_after >= now,
                )
            )
            valid = {serial for (serial,) in certificate_rows}
        return Credentials(statuses, frozenset(serials) - valid)


# --------------------------------------------------------------------------- ledger

Services = Callable[[], AbstractAsyncContextManager[tuple[UnitOfWork, ServiceContext]]]

LEDGER_MAX_ENTRIES: Final = 500
LEDGER_MAX_WAIT_S: Final = 0.005
LEDGER_ATTEMPTS: Final = 4
LEDGER_BACKOFF_S: Final = 0.05


@dataclass(frozen=True, slots=True)
class SessionOpened:
    """An admitted session (no rotation to complete, no clone finding: those are recorded in
    the handshake's own transaction)."""

    device_id: str
    certificate_id: str
    serial: str
    vehicle_id: str
    tenant_id: str
    status: DeviceStatus
    session_id: str
    peer: str
    software_version: str
    at: datetime
    details: Mapping[str, JsonValue] = field(default_factory=dict)
    request: RequestContext | None = field(default_factory=current_request)


@dataclass(frozen=True, slots=True)
class SessionClosed:
    device_id: str
    tenant_id: str
    session_id: str
    last_activity: datetime
    code: str
    at: datetime
    request: RequestContext | None = field(default_factory=current_request)


LedgerEntry = SessionOpened | SessionClosed


class SessionLedger:
    """Records session openings and closings in batches: one short transaction for
    everything that arrived within ``max_wait`` seconds, instead of one per handshake.

    On SQLite every write transaction takes the one database write lock; thousands of
    handshakes each taking it (and holding it across several event-loop round trips) starve
    each other and the telemetry writer beyond the busy timeout. Batched, the gateway's
    bookkeeping takes the lock a few times a second however many devices connect.

    :meth:`record` returns a future that resolves once the entry committed (with its audit
    event, in the same transaction) or fails with :class:`StoreBusy` after bounded retries
    with jitter; a handshake waits for it before its WELCOME, so a session is never served
    unrecorded. For one event loop; the writing task runs only while entries are pending.
    """

    def __init__(
        self,
        services: Services,
        *,
        max_entries: int = LEDGER_MAX_ENTRIES,
        max_wait: float = LEDGER_MAX_WAIT_S,
        attempts: int = LEDGER_ATTEMPTS,
        backoff: float = LEDGER_BACKOFF_S,
    ) -> None:
        if not (max_entries >= 1 and 0 <= max_wait <= 1 and attempts >= 1 and backoff >= 0):
            raise ValueError("need max_entries >= 1, 0 <= max_wait <= 1 s, attempts >= 1")
        self._services = services
        self._max_entries = max_entries
        self._max_wait = max_wait
        self._attempts = attempts
        self._backoff = backoff
        self._pending: list[tuple[LedgerEntry, asyncio.Future[None]]] = []
        self._task: asyncio.Task[None] | None = None

    def record(self, entry: LedgerEntry) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((entry, waiter))
        if self._task is None or self._task.done():
            # A context of its own: not the request context of whichever handshake came first.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="gateway-session-ledger", context=contextvars.Context()
            )
        return waiter

    async def _run(self) -> None:
        while self._pending:
            if len(self._pending) < self._max_entries:
                await asyncio.sleep(self._max_wait)  # let a batch gather
            batch = self._pending[: self._max_entries]
            del self._pending[: self._max_entries]
            try:
                refusals = await self._write_with_retry(batch)
            except Exception as exc:  # nothing in the batch committed: every waiter hears it
                _log.error("gateway.ledger_not_written", error=type(exc).__name__, n=len(batch))
                busy = is_store_busy(exc)
                for _entry, waiter in batch:
                    if not waiter.done():
                        waiter.set_exception(StoreBusy() if busy else exc)
                continue
            for (_entry, waiter), refusal in zip(batch, refusals, strict=True):
                if waiter.done():
                    continue
                if refusal is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(refusal)

    async def _write_with_retry(
        self, batch: Sequence[tuple[LedgerEntry, object]]
    ) -> list[AdmissionRefused | None]:
        """Each entry's refusal (None: recorded), once the batch committed."""
        for attempt in range(1, self._attempts):
            try:
                return await self._write([entry for entry, _waiter in batch])
            except Exception as exc:
                if not is_store_busy(exc):
                    raise
            # Jittered back-off so that retries do not meet the same writer again in step.
            await asyncio.sleep(self._backoff * attempt * (0.5 + random.random()))  # noqa: S311 - jitter, not a secret
        return await self._write([entry for entry, _waiter in batch])

    async def _write(self, entries: Sequence[LedgerEntry]) -> list[AdmissionRefused | None]:
        async with self._services() as (uow, ctx):
            session = ctx.session
            # Reads first (no lock on SQLite), then every change, then one flush and commit:
            # the write lock is held only for those few statements.
            device_ids = sorted({entry.device_id for entry in entries})
            devices = {
                device.id: device
                for device in await session.scalars(select(Device).where(Device.id.in_(device_ids)))
            }
            certificate_ids = sorted(
                {entry.certificate_id for entry in entries if isinstance(entry, SessionOpened)}
            )
            certificates = (
                {
                    certificate.id: certificate
                    for certificate in await session.scalars(
                        select(DeviceCertificate).where(DeviceCertificate.id.in_(certificate_ids))
                    )
                }
                if certificate_ids
                else {}
            )
            unused = {key: c for key, c in certificates.items() if c.first_used_at is None}
            # Read after the session was registered: see _withdrawn.
            refusals = [_withdrawn(entry, devices, certificates) for entry in entries]
            with session.no_autoflush:
                for entry, refusal in zip(entries, refusals, strict=True):
                    if refusal is None:
                        _apply(ctx, entry, devices.get(entry.device_id), unused)
            await uow.commit()
        return refusals


def _withdrawn(
    entry: LedgerEntry,
    devices: Mapping[str, Device],
    certificates: Mapping[str, DeviceCertificate],
) -> AdmissionRefused | None:
    """Why an admitted session may no longer open, read after it was registered; None if it
    may. Its admission read the store before the session was registered, so a revocation or
    suspension committed in between found no session to close (the registry had none yet);
    this later read sees such a change, and one committed after it finds the session
    registered and closes it."""
    if not isinstance(entry, SessionOpened):
        return None
    device = devices.get(entry.device_id)
    if device is None:
        return AdmissionRefused("binding")
    withdrawn = _withdrawal(device, certificates.get(entry.certificate_id))
    return AdmissionRefused(withdrawn) if withdrawn is not None else None


def _withdrawal(device: Device, certificate: DeviceCertificate | None) -> str | None:
    """Why the device's credentials no longer admit it (None: they do). The device's status
    first: it names why (revoked, suspended) better than the certificate revocation that
    ending an identity also causes."""
    if device.status not in ADMITTED_STATUSES:
        return _REFUSAL_BY_STATUS[device.status]
    if certificate is None or certificate.status is CertificateStatus.REVOKED:
        return "certificate-revoked"
    return None


def _apply(
    ctx: ServiceContext,
    entry: LedgerEntry,
    device: Device | None,
    unused: Mapping[str, DeviceCertificate],
) -> None:
    seen = entry.at if isinstance(entry, SessionOpened) else entry.last_activity
    if device is not None and (device.last_seen_at is None or device.last_seen_at < seen):
        device.last_seen_at = seen
    actor = device_actor(entry.device_id, entry.tenant_id)
    target = Target("device", entry.device_id, entry.tenant_id)
    if isinstance(entry, SessionOpened):
        certificate = unused.get(entry.certificate_id)
        if certificate is not None and certificate.first_used_at is None:
            certificate.first_used_at = entry.at
        if device is not None:
            device.last_peer = entry.peer
        record = ctx.audit.record(
            ctx.session,
            EventName.DEVICE_SESSION_OPENED,
            actor=actor,
            target=target,
            details={
                "session": entry.session_id,
                "vehicle": entry.vehicle_id,
                "serial": entry.serial,
                "peer": entry.peer,
                "software_version": entry.software_version,
                "status": entry.status.value,
                **entry.details,
            },
        )
    else:
        record = ctx.audit.record(
            ctx.session,
            EventName.DEVICE_SESSION_CLOSED,
            actor=actor,
            target=target,
            details={"session": entry.session_id, "close": entry.code},
        )
    on_vehicle(record, device.vehicle_id if device is not None else None)
    # The event is the handshake's (or the close's), not the batch's: its time and request.
    record["occurred_at"] = entry.at
    request = entry.request
    record["request_id"] = request.request_id if request else None
    record["trace_id"] = request.trace_id if request else None
