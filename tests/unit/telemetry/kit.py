"""A device side written from docs/telemetry-format.md (not from the server's code), and a rig
that runs the real pipeline on the test store."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import secrets
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from fleetward.core.clock import FrozenClock
from fleetward.gateway.session import DeviceSession, Transport
from fleetward.platform import Platform
from fleetward.telemetry.envelope import Reply, open_reply
from fleetward.telemetry.errors import Status
from fleetward.telemetry.models import QuarantinedMessage, TelemetryMessage
from fleetward.telemetry.pipeline import TelemetryPipeline

# From the format document, on purpose not imported from the implementation.
FRAME_LABEL = b"fleetward-telemetry-v1\x00"
HEADER = struct.Struct(">BBQQQ")

_ids = itertools.count(1)


def payload(signals: dict[str, Any] | None = None, **extra: Any) -> bytes:
    body: dict[str, Any] = {"signals": {"Vehicle.Speed": 42.5} if signals is None else signals}
    body.update(extra)
    return json.dumps(body).encode()


def raw_frame(
    key: bytes,
    body: bytes,
    *,
    counter: int,
    sequence: int,
    device_time_ms: int,
    flags: int = 0,
    version: int = 1,
) -> bytes:
    unsigned = HEADER.pack(version, flags, counter, sequence, device_time_ms) + body
    return unsigned + hmac.new(key, FRAME_LABEL + unsigned, hashlib.sha256).digest()


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeDeviceStatus:
    """The devices capability's side of the port: records calls, can be made to fail."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    failing: bool = False
    hanging: bool = False

    async def quarantine(self, device_id: str, reason: str) -> None:
        if self.hanging:
            await asyncio.sleep(3600)
        if self.failing:
            raise ConnectionError("device registry unavailable")
        self.calls.append((device_id, reason))


@dataclass
class Device:
    """One TCU: its session, its counter (per session) and its sequence (per device)."""

    session: DeviceSession
    clock: FrozenClock
    counter: int = 0
    sequence: int = 0
    # (counter, sequence) of the last frame built: what an authenticated reply echoes.
    last: tuple[int, int] = (0, 0)

    @property
    def key(self) -> bytes:
        return self.session.session_key

    def frame(
        self,
        body: bytes | None = None,
        *,
        counter: int | None = None,
        sequence: int | None = None,
        offset: timedelta = timedelta(0),
        store_and_forward: bool = False,
        key: bytes | None = None,
        flags: int | None = None,
        version: int = 1,
    ) -> bytes:
        """The next frame: a new counter and, unless given, a new sequence."""
        if counter is None:
            self.counter += 1
            counter = self.counter
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        device_time = self.clock.now() + offset
        self.last = (counter, sequence)
        return raw_frame(
            key or self.key,
            payload() if body is None else body,
            counter=counter,
            sequence=sequence,
            device_time_ms=int(device_time.timestamp() * 1000),
            flags=(1 if store_and_forward else 0) if flags is None else flags,
            version=version,
        )

    def reconnect(self) -> Device:
        """A new session for the same device (new key, counters restart, sequence kept)."""
        return Device(
            session=new_session(
                self.session.device_id, self.session.vehicle_id, self.session.tenant_id
            ),
            clock=self.clock,
            sequence=self.sequence,
        )


def new_session(device_id: str, vehicle_id: str, tenant_id: str) -> DeviceSession:
    n = next(_ids)
    return DeviceSession(
        session_id=f"ses_test{n:06d}",
        device_id=device_id,
        vehicle_id=vehicle_id,
        tenant_id=tenant_id,
        certificate_serial="7a3f09c2e1",
        session_key=secrets.token_bytes(32),
        transport=Transport.WEBSOCKET,
        peer="192.0.2.10",
        software_version="tcu-5.2.1",
        vehicle_config="ev-awd-eu",
        established_at=datetime(2026, 11, 26, 8, 59, tzinfo=UTC),
    )


@dataclass
class Rig:
    platform: Platform
    pipeline: TelemetryPipeline
    clock: FrozenClock
    monotonic: FakeMonotonic
    status: FakeDeviceStatus
    vehicle_id: str
    tenant_id: str
    other_vehicle_id: str

    def device(self, *, vehicle_id: str | None = None, tenant_id: str | None = None) -> Device:
        device_id = f"dev_test{next(_ids):06d}"
        session = new_session(device_id, vehicle_id or self.vehicle_id, tenant_id or self.tenant_id)
        return Device(session=session, clock=self.clock)

    async def send(self, device: Device, frame: object) -> Reply:
        raw = await self.pipeline.handle(device.session, frame)  # type: ignore[arg-type]
        return open_reply(device.key, raw)

    async def accept(self, device: Device, frame: bytes) -> Reply:
        reply = await self.send(device, frame)
        assert reply.status is Status.ACCEPTED, reply
        return reply

    async def stored(self) -> Sequence[TelemetryMessage]:
        async with self.platform.unit_of_work() as uow:
            rows = await uow.session.scalars(
                select(TelemetryMessage).order_by(
                    TelemetryMessage.device_id, TelemetryMessage.sequence
                )
            )
            return rows.all()

    async def quarantined(self) -> Sequence[QuarantinedMessage]:
        async with self.platform.unit_of_work() as uow:
            rows = await uow.session.scalars(
                select(QuarantinedMessage).order_by(
                    QuarantinedMessage.received_at, QuarantinedMessage.sequence
                )
            )
            return rows.all()
