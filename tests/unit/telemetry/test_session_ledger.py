"""The gateway's session bookkeeping, batched (``devices.admission.SessionLedger``): many
handshakes' records in one short transaction, each with its audit event; a busy store is
retried a bounded number of times and then refused as retryable, never half-written."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.core.clock import FrozenClock
from fleetward.core.context import RequestContext, set_request
from fleetward.devices.admission import (
    Services,
    SessionClosed,
    SessionLedger,
    SessionOpened,
)
from fleetward.devices.ca import load_device_ca
from fleetward.devices.models import Device, DeviceCertificate, DeviceStatus
from fleetward.devices.provisioning import IssuedCertificate, Provisioning
from fleetward.gateway.device_client import build_csr, generate_key
from fleetward.identity.models import TenantKind
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.store.busy import StoreBusy, is_store_busy
from fleetward.store.uow import UnitOfWork
from support.factories import WorldFactory

ACTOR = Actor.system("test:ledger")


class _PgBusy(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__("could not serialize access")
        self.sqlstate = sqlstate


def _operational(original: Exception) -> OperationalError:
    return OperationalError("UPDATE devices", {}, original)


@pytest.mark.parametrize(
    ("error", "busy"),
    [
        # SQLite: another connection holds the write lock beyond the busy timeout.
        (_operational(sqlite3.OperationalError("database is locked")), True),
        (_operational(sqlite3.OperationalError("database table is locked")), True),
        # PostgreSQL: serialization failure, deadlock, lock not available.
        (_operational(_PgBusy("40001")), True),
        (_operational(_PgBusy("40P01")), True),
        (_operational(_PgBusy("55P03")), True),
        # Every pooled connection in use for longer than the pool's timeout.
        (PoolTimeout("QueuePool limit reached"), True),
        (StoreBusy(), True),
        # Not busy: retrying cannot help, and must not be offered to the caller.
        (_operational(sqlite3.OperationalError("disk I/O error")), False),
        (_operational(sqlite3.OperationalError("no such table: devices")), False),
        (IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed")), False),
        (ValueError("database is locked"), False),  # the text alone is not a store error
    ],
)
def test_store_busy_is_told_apart_from_other_store_errors(error: Exception, busy: bool) -> None:
    assert is_store_busy(error) is busy


def test_store_busy_is_a_retryable_problem() -> None:
    problem = StoreBusy(retry_after_s=2)
    assert problem.status == 503
    assert problem.headers == {"Retry-After": "2"}
    assert problem.to_problem()["type"] == "urn:fleetward:problem:store-busy"


async def _devices(
    platform: Platform, clock: FrozenClock, count: int
) -> tuple[str, list[IssuedCertificate]]:
    ca = load_device_ca(platform.settings, platform.identity.data_key, clock)
    issued: list[IssuedCertificate] = []
    async with platform.services() as (uow, ctx):
        world = WorldFactory(ctx)
        tenant = await world.tenant(TenantKind.FLEET)
        for _ in range(count):
            vehicle = await world.vehicle(tenant)
            grant = await Provisioning(ctx).create_enrolment(
                vehicle, actor=ACTOR, lifetime=timedelta(hours=1)
            )
            csr = build_csr(generate_key(), device_id=grant.device_id, vehicle_id=vehicle.id)
            issued.append(await Provisioning(ctx).enrol(grant.token, csr, ca))
        await uow.commit()
    return tenant.id, issued


def _counting(platform: Platform, calls: list[int]) -> Services:
    @asynccontextmanager
    async def services() -> AsyncIterator[tuple[UnitOfWork, ServiceContext]]:
        calls.append(1)
        async with platform.services() as pair:
            yield pair

    return services


def _opened(
    certificate: IssuedCertificate,
    certificate_id: str,
    tenant_id: str,
    session_id: str,
    at: datetime,
) -> SessionOpened:
    return SessionOpened(
        device_id=certificate.device_id,
        certificate_id=certificate_id,
        serial=certificate.serial,
        vehicle_id=certificate.vehicle_id,
        tenant_id=tenant_id,
        status=DeviceStatus.ACTIVE,
        session_id=session_id,
        peer="198.51.100.7",
        software_version="tcu-5.2.1",
        at=at,
        details={"superseded": [], "handed_over": []},
    )


async def test_many_sessions_are_recorded_in_one_transaction_each_with_its_audit_event(
    platform: Platform, clock: FrozenClock, backend: str
) -> None:
    tenant_id, issued = await _devices(platform, clock, 3)
    async with platform.unit_of_work() as uow:
        certificate_ids = {
            c.serial: c.id for c in await uow.session.scalars(select(DeviceCertificate))
        }
    calls: list[int] = []
    ledger = SessionLedger(_counting(platform, calls), max_wait=0.01)
    opened_at = clock.now()
    set_request(RequestContext(request_id="req-ledger-1", trace_id="a" * 32))
    try:
        waiters = [
            ledger.record(
                _opened(c, certificate_ids[c.serial], tenant_id, f"ses_ledger{n}", opened_at)
            )
            for n, c in enumerate(issued)
        ]
    finally:
        set_request(None)
    closed_at = opened_at + timedelta(seconds=30)
    waiters.append(
        ledger.record(
            SessionClosed(
                device_id=issued[0].device_id,
                tenant_id=tenant_id,
                session_id="ses_ledger0",
                last_activity=closed_at,
                code="by-device",
                at=closed_at,
            )
        )
    )
    await asyncio.gather(*waiters)

    assert calls == [1]  # one transaction for all four records
    async with platform.unit_of_work() as uow:
        events = list(
            await uow.session.scalars(
                select(AuditRecord)
                .where(AuditRecord.object_type == "device")
                .where(
                    AuditRecord.name.in_(
                        [EventName.DEVICE_SESSION_OPENED, EventName.DEVICE_SESSION_CLOSED]
                    )
                )
                .order_by(AuditRecord.seq)
            )
        )
        devices = {d.id: d for d in await uow.session.scalars(select(Device))}
        certificates = list(await uow.session.scalars(select(DeviceCertificate)))
    opened = [e for e in events if e.name == EventName.DEVICE_SESSION_OPENED]
    closed = [e for e in events if e.name == EventName.DEVICE_SESSION_CLOSED]
    assert sorted(e.details["session"] for e in opened) == [f"ses_ledger{n}" for n in range(3)]
    assert all(e.occurred_at == opened_at for e in opened)  # the handshake's time
    assert {e.request_id for e in opened} == {"req-ledger-1"}  # and its request
    assert [(e.object_id, e.details["close"]) for e in closed] == [
        (issued[0].device_id, "by-device")
    ]
    assert all(devices[c.device_id].last_peer == "198.51.100.7" for c in issued)
    assert devices[issued[0].device_id].last_seen_at == closed_at
    assert devices[issued[1].device_id].last_seen_at == opened_at
    assert all(c.first_used_at == opened_at for c in certificates)


async def test_a_busy_store_is_retried_then_refused_as_retryable_with_nothing_written(
    platform: Platform, clock: FrozenClock
) -> None:
    tenant_id, issued = await _devices(platform, clock, 1)
    calls: list[int] = []

    @asynccontextmanager
    async def locked() -> AsyncIterator[tuple[UnitOfWork, ServiceContext]]:
        calls.append(1)
        raise _operational(sqlite3.OperationalError("database is locked"))
        yield  # pragma: no cover - never reached

    ledger = SessionLedger(locked, attempts=3, backoff=0)
    entry = _opened(issued[0], "dcr_unused", tenant_id, "ses_busy", clock.now())
    with pytest.raises(StoreBusy):
        await ledger.record(entry)
    assert len(calls) == 3  # bounded: the configured attempts, no more
    async with platform.unit_of_work() as uow:
        written = await uow.session.scalar(
            select(AuditRecord.id).where(AuditRecord.name == EventName.DEVICE_SESSION_OPENED)
        )
    assert written is None


async def test_a_store_busy_once_is_retried_and_then_recorded(
    platform: Platform, clock: FrozenClock
) -> None:
    tenant_id, issued = await _devices(platform, clock, 1)
    calls: list[int] = []

    def flaky() -> AbstractAsyncContextManager[tuple[UnitOfWork, ServiceContext]]:
        calls.append(1)
        if len(calls) == 1:
            raise _operational(sqlite3.OperationalError("database is locked"))
        return platform.services()

    async with platform.unit_of_work() as uow:
        certificate_id = await uow.session.scalar(select(DeviceCertificate.id))
    assert certificate_id is not None
    ledger = SessionLedger(flaky, backoff=0)
    await ledger.record(_opened(issued[0], certificate_id, tenant_id, "ses_flaky", clock.now()))
    assert len(calls) == 2
    async with platform.unit_of_work() as uow:
        sessions = list(
            await uow.session.scalars(
                select(AuditRecord.details).where(
                    AuditRecord.name == EventName.DEVICE_SESSION_OPENED
                )
            )
        )
    assert [d["session"] for d in sessions] == ["ses_flaky"]  # once, not twice


async def test_an_error_that_is_not_busy_is_not_retried_nor_reported_as_busy(
    platform: Platform, clock: FrozenClock
) -> None:
    tenant_id, issued = await _devices(platform, clock, 1)
    calls: list[int] = []

    def broken() -> AbstractAsyncContextManager[tuple[UnitOfWork, ServiceContext]]:
        calls.append(1)
        raise _operational(sqlite3.OperationalError("disk I/O error"))

    ledger = SessionLedger(broken, backoff=0)
    with pytest.raises(OperationalError):
        await ledger.record(_opened(issued[0], "dcr_unused", tenant_id, "ses_io", clock.now()))
    assert len(calls) == 1


@pytest.mark.parametrize(
    "arguments",
    [
        {"max_entries": 0},
        {"max_wait": -0.1},
        {"max_wait": 2.0},
        {"attempts": 0},
        {"backoff": -1.0},
    ],
)
def test_ledger_bounds_are_checked(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need"):
        SessionLedger(lambda: None, **arguments)  # type: ignore[arg-type, return-value]
