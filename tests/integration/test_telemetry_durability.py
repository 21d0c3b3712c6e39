"""A crash between receive and ack loses no acknowledged message.

The pipeline runs in a child process on a SQLite file (frames in on stdin, replies out on
stdout, length-prefixed). The test streams frames without waiting, kills the child with
SIGKILL once some acks are back and more frames are still in flight, then proves that every
acknowledged message is in the store. A second child (a new session: the device reconnected)
receives the retransmission of everything unacknowledged, plus some acknowledged messages
again; afterwards every message is stored exactly once, with the content first sent.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import struct
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest
from sqlalchemy import select

from fleetward.core.clock import SystemClock
from fleetward.identity.models import TenantKind
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.store.engine import create_engine
from fleetward.store.migrate import upgrade
from fleetward.telemetry.envelope import open_reply, seal
from fleetward.telemetry.errors import Status
from fleetward.telemetry.models import TelemetryMessage

LENGTH = struct.Struct(">I")
MESSAGES = 4000
KILL_AFTER_ACKS = 400


@dataclass(frozen=True)
class Identity:
    device_id: str
    vehicle_id: str
    tenant_id: str


def _speed(sequence: int) -> float:
    return float(sequence % 300)


def _frame(key: bytes, counter: int, sequence: int) -> bytes:
    body = json.dumps({"signals": {"Vehicle.Speed": _speed(sequence)}}).encode()
    return seal(
        key, body, counter=counter, sequence=sequence, device_time_ms=int(time.time() * 1000)
    )


class Child:
    """One gateway process; ``replies`` maps sequence -> status for every verified reply."""

    def __init__(self, database: Path, identity: Identity, log: Path) -> None:
        self.database = database
        self.identity = identity
        self.log = log
        self.key = secrets.token_bytes(32)
        self.session_id = f"ses_{secrets.token_hex(8)}"
        self.replies: dict[int, Status] = {}
        self.process: asyncio.subprocess.Process | None = None
        self._stderr: BinaryIO | None = None

    async def start(self) -> None:
        config = {
            "database": str(self.database),
            "session_id": self.session_id,
            "key": self.key.hex(),
            **self.identity.__dict__,
        }
        self._stderr = self.log.open("ab")
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            json.dumps(config),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._stderr,
        )

    async def send(self, frames: list[bytes]) -> None:
        assert self.process is not None and self.process.stdin is not None
        try:
            for frame in frames:
                self.process.stdin.write(LENGTH.pack(len(frame)) + frame)
                await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return  # killed mid-stream, as intended

    async def receive(self, count: int) -> None:
        assert self.process is not None and self.process.stdout is not None
        while len(self.replies) < count:
            try:
                (size,) = LENGTH.unpack(await self.process.stdout.readexactly(LENGTH.size))
                raw = await self.process.stdout.readexactly(size)
            except asyncio.IncompleteReadError:
                return
            reply = open_reply(self.key, raw)  # only the server holds the key: no forged ack
            self.replies[reply.sequence] = reply.status

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)

    async def finish(self) -> None:
        assert self.process is not None
        if self.process.stdin is not None and not self.process.stdin.is_closing():
            self.process.stdin.close()
        await self.process.wait()
        if self._stderr is not None:
            self._stderr.close()


async def _stored(database: Path) -> dict[int, float]:
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    try:
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    select(TelemetryMessage.sequence, TelemetryMessage.signals)
                )
            ).all()
    finally:
        await engine.dispose()
    counted: dict[int, float] = {}
    for sequence, signals in rows:
        assert sequence not in counted, "a message stored twice"
        counted[sequence] = signals["Vehicle.Speed"]
    return counted


@pytest.fixture
async def world(tmp_path: Path) -> tuple[Path, Identity]:
    database = tmp_path / "gateway.db"
    engine = create_engine(f"sqlite+aiosqlite:///{database}")
    await upgrade(engine)
    platform = Platform.build(
        Settings(
            data_dir=tmp_path / "var",
            password_hash_memory_kib=19_456,
            password_hash_time_cost=2,
        ),
        clock=SystemClock(),
        engine=engine,
    )
    from support.factories import WorldFactory

    async with platform.services() as (uow, ctx):
        factory = WorldFactory(ctx)
        tenant = await factory.tenant(TenantKind.FLEET)
        vehicle = await factory.vehicle(tenant)
        await uow.commit()
    await platform.close()
    return database, Identity(f"dev_{secrets.token_hex(8)}", vehicle.id, tenant.id)


async def test_a_crash_loses_no_acknowledged_message(
    world: tuple[Path, Identity], tmp_path: Path
) -> None:
    database, identity = world
    log = tmp_path / "children.log"
    async with asyncio.timeout(120):
        first = Child(database, identity, log)
        await first.start()
        frames = [_frame(first.key, n, n) for n in range(1, MESSAGES + 1)]
        sender = asyncio.create_task(first.send(frames))
        await first.receive(KILL_AFTER_ACKS)
        first.kill()  # between receive and ack for every frame still in flight
        await sender
        await first.receive(MESSAGES)  # drain what was already written before the kill
        await first.finish()

        acked = {seq for seq, status in first.replies.items() if status.stored}
        assert all(status is Status.ACCEPTED for status in first.replies.values())
        assert KILL_AFTER_ACKS <= len(acked) < MESSAGES, "the kill did not land mid-stream"
        stored = await _stored(database)
        assert acked <= set(stored), "an acknowledged message was lost"

        # The device reconnects: a new session, counters from 1, sequences kept. It resends
        # everything not acknowledged, and (its outbox being conservative) some that were.
        second = Child(database, identity, log)
        await second.start()
        resend = sorted(set(range(1, MESSAGES + 1)) - acked) + sorted(acked)[:50]
        await second.send(
            [_frame(second.key, n, sequence) for n, sequence in enumerate(resend, start=1)]
        )
        await second.receive(len(resend))
        await second.finish()

    assert len(second.replies) == len(resend)
    assert all(status.stored for status in second.replies.values())
    stored = await _stored(database)
    assert stored == {n: _speed(n) for n in range(1, MESSAGES + 1)}


# ------------------------------------------------------------------ the child process


async def _child(config: dict[str, str]) -> None:
    from fleetward.gateway.session import DeviceSession, Transport
    from fleetward.observability.logging import configure_logging
    from fleetward.telemetry.pipeline import TelemetryConfig, TelemetryPipeline
    from fleetward.telemetry.quotas import Rate

    class NoStatus:
        async def quarantine(self, device_id: str, reason: str) -> None:
            raise RuntimeError("no bad frames in this test")

    configure_logging(level="WARNING")
    engine = create_engine(f"sqlite+aiosqlite:///{config['database']}")
    pipeline = TelemetryPipeline.build(
        engine,
        SystemClock(),
        NoStatus(),
        config=TelemetryConfig(
            device_rate=Rate(per_second=1e6, burst=1e6), fleet_rate=Rate(1e6, 1e6)
        ),
    )
    session = DeviceSession(
        session_id=config["session_id"],
        device_id=config["device_id"],
        vehicle_id=config["vehicle_id"],
        tenant_id=config["tenant_id"],
        certificate_serial="5e11a",
        session_key=bytes.fromhex(config["key"]),
        transport=Transport.WEBSOCKET,
        peer="127.0.0.1",
        software_version="tcu-5.2.1",
        vehicle_config="ev-awd-eu",
        established_at=datetime.now(UTC),
    )
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer
    await pipeline.start()
    in_flight: set[asyncio.Task[None]] = set()

    async def one(frame: bytes) -> None:
        reply = await pipeline.handle(session, frame)
        out.write(LENGTH.pack(len(reply)) + reply)
        out.flush()

    while True:
        try:
            (size,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
            frame = await reader.readexactly(size)
        except asyncio.IncompleteReadError:
            break
        # Frames are judged concurrently (so batches form), in arrival order.
        task = asyncio.create_task(one(frame))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight)
    await pipeline.stop()
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(_child(json.loads(sys.argv[1])))
