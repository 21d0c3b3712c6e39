"""Telemetry ingestion throughput and ack latency, as a ratio to a bare ceiling in the same run.

Measured on the embedded store (SQLite file, WAL, the writer's ``synchronous=FULL``):

a. ``bare``: for pre-built frames, HMAC-SHA256 verify + header unpack + msgspec decode, rows
   inserted 1,000 per transaction on one connection: no pipeline logic at all (the ceiling);
b. ``pipeline``: :meth:`TelemetryPipeline.handle` for the same kind of frames, sent by 2,000
   concurrent simulated devices that each wait for their ack before sending the next frame
   (closed loop, as the WebSocket transport does), every stage on: size, tag, counter, time
   window, duplicates, schema, quotas, batched writer, metrics, authenticated reply. The
   same 2,000 sessions stay open for the whole run, their counters and sequences continuing
   from slice to slice (a session's set-up is the handshake's cost, measured by
   ``gateway_load``, not a frame's);
c. ``latency``: the same 2,000 devices each reporting on a fixed schedule so that the fleet
   offers 50% of (b)'s rate; ack latency from the moment each frame was due (queueing behind a
   slow ack counts), p50/p99.

The store already holds ``history`` messages (default 100,000: about an hour of the 2,000
vehicles reporting once a minute) of a past fleet before anything is measured: an empty store
is the ceiling's best case (shallow indexes, every page in cache), which no running gateway
has. ``history=0`` measures that case.

(a) and (b) alternate in short slices so that load from other processes hits both alike, and
both are also given per CPU-second of this process (all threads): on a shared machine the
CPU-normalised ratio is the steadier figure. What start-up built is frozen out of the cyclic
garbage collector before anything is measured, as the app's lifespan does; for (c) the
pre-built frames are frozen too (a gateway process holds no such data).
Run: ``python -m fleetward.bench.telemetry [seconds [history]]`` (seconds per measurement,
default 4; messages stored before measuring, default 100,000).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import hmac
import json
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import msgspec
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from fleetward.core.clock import SystemClock
from fleetward.core.collector import freeze_start_up_objects
from fleetward.gateway.session import DeviceSession, Transport
from fleetward.identity.models import Tenant, TenantKind
from fleetward.store.engine import create_engine, sqlite_pragma
from fleetward.store.migrate import upgrade
from fleetward.telemetry import COMPILED
from fleetward.telemetry.envelope import FRAME_LABEL, HEADER, TAG_BYTES, seal
from fleetward.telemetry.errors import Status
from fleetward.telemetry.persist import SQLITE_WRITER_PRAGMAS, RowCodec
from fleetward.telemetry.pipeline import TELEMETRY_TARGET, TelemetryConfig, TelemetryPipeline
from fleetward.telemetry.quotas import Rate
from fleetward.telemetry.signals import UnverifiedPayload
from fleetward.vehicles.models import Vehicle

# The scale: 2,000 vehicles connected to one gateway process, each waiting for its
# ack before sending the next message (a TCU's outbox drains in order).
_DEVICES = 2000
_VEHICLES = 500
# Frames pre-built per measurement slice: more than any slice can use on one core.
_MAX_RATE = 60_000
_SLICES = 4
_BARE_BATCH = 1000
# Messages stored before measuring (see _World.history): about an hour of the 2,000 vehicles
# reporting once a minute. 0 measures an empty store, the ceiling's best case.
DEFAULT_HISTORY = 100_000
# Every bench device's provenance (the past fleet's rows carry the same).
_SERIAL, _SOFTWARE, _CONFIG = "4f2a9c01d3", "tcu-5.2.1", "ev-awd-eu"


@dataclass
class _Device:
    session: DeviceSession
    frames: list[bytes]
    # The last counter and sequence sealed: the next frames continue above them.
    sealed: int = 0

    def refill(self, count: int) -> None:
        """The next ``count`` frames of this device's session (nothing duplicate, no gap
        that would make a frame late)."""
        now_ms = int(time.time() * 1000)
        key = self.session.session_key
        first = self.sealed + 1
        self.frames = [
            seal(key, _payload(n), counter=n, sequence=n, device_time_ms=now_ms)
            for n in range(first, first + count)
        ]
        self.sealed = first + count - 1


class _NoStatus:
    async def quarantine(self, device_id: str, reason: str) -> None:
        raise RuntimeError("the benchmark sends no bad frames")


def _payload(n: int) -> bytes:
    # ~230 bytes: a typical periodic report (frame ~290 bytes with header and tag).
    return json.dumps(
        {
            "signals": {
                "Vehicle.Speed": 40 + n % 60,
                "Vehicle.CurrentLocation.Latitude": 48.137154 + n * 1e-6,
                "Vehicle.CurrentLocation.Longitude": 11.576124 - n * 1e-6,
                "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 80.5,
                "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": True,
                "Vehicle.Cabin.HVAC.AmbientAirTemperature": 21.5,
                "Vehicle.Powertrain.Range": 312_000,
            }
        },
        separators=(",", ":"),
    ).encode()


class _World:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.tenant_id = "ten_bench"
        self.vehicle_ids: list[str] = []
        self._next = 0

    async def create(self, vehicles: int) -> None:
        now = datetime.now(UTC)
        self.vehicle_ids = [f"veh_bench{n:06d}" for n in range(vehicles)]
        async with self.engine.begin() as connection:
            await connection.execute(
                insert(Tenant),
                [
                    {
                        "id": self.tenant_id,
                        "slug": "bench",
                        "name": "Bench",
                        "kind": TenantKind.FLEET,
                        "created_at": now,
                        "disabled_at": None,
                    }
                ],
            )
            await connection.execute(
                insert(Vehicle),
                [
                    {
                        "id": vid,
                        # VINs are unique; the benchmark never validates them.
                        "vin": f"{n:017d}",
                        "label": vid,
                        "model": "Bench",
                        "region": "NA",
                        "tenant_id": self.tenant_id,
                        "created_at": now,
                    }
                    for n, vid in enumerate(self.vehicle_ids)
                ],
            )

    async def history(self, rows: int) -> None:
        """``rows`` messages already stored, 100 per device of a past fleet, so that the run
        measures a store that holds data (its indexes deeper, its pages not all in cache),
        as a gateway's store does, rather than an empty one."""
        codec = RowCodec(TELEMETRY_TARGET, self.engine.dialect)
        at = datetime.now(UTC)
        signals = msgspec.json.decode(_payload(1), type=UnverifiedPayload).signals
        per_device = 100
        async with self.engine.begin() as connection:
            for first in range(0, rows, 10_000):
                batch = [
                    {
                        "device_id": f"dev_past{n // per_device:08d}",
                        "sequence": n % per_device + 1,
                        "vehicle_id": self.vehicle_ids[n % len(self.vehicle_ids)],
                        "tenant_id": self.tenant_id,
                        "session_id": f"ses_past{n // per_device:08d}",
                        "certificate_serial": _SERIAL,
                        "software_version": _SOFTWARE,
                        "vehicle_config": _CONFIG,
                        "received_at": at,
                        "device_time": at,
                        "store_and_forward": False,
                        "late": False,
                        "signals": signals,
                    }
                    for n in range(first, min(rows, first + 10_000))
                ]
                await connection.exec_driver_sql(codec.sql, codec.encode(batch))

    def devices(self, count: int) -> list[_Device]:
        """``count`` connected vehicles: a session each (and a device id), no frames yet."""
        made = []
        for _ in range(count):
            self._next += 1
            session = DeviceSession(
                session_id=f"ses_bench{self._next:08d}",
                device_id=f"dev_bench{self._next:08d}",
                vehicle_id=self.vehicle_ids[self._next % len(self.vehicle_ids)],
                tenant_id=self.tenant_id,
                certificate_serial=_SERIAL,
                session_key=secrets.token_bytes(32),
                transport=Transport.WEBSOCKET,
                peer="127.0.0.1",
                software_version=_SOFTWARE,
                vehicle_config=_CONFIG,
                established_at=datetime.now(UTC),
            )
            made.append(_Device(session, []))
        return made


def _refilled(devices: list[_Device], frames_each: int) -> list[_Device]:
    for device in devices:
        device.refill(frames_each)
    return devices


async def _bare(
    engine: AsyncEngine, devices: list[_Device], seconds: float
) -> tuple[int, float, float]:
    """HMAC verify + decode + batched insert with no pipeline logic.

    Returns (messages, wall seconds, CPU seconds of the whole process)."""
    decoder = msgspec.json.Decoder(UnverifiedPayload)
    codec = RowCodec(TELEMETRY_TARGET, engine.dialect)
    work = [
        (d.session, hmac.new(d.session.session_key, FRAME_LABEL, hashlib.sha256), frame)
        for d in devices
        for frame in d.frames
    ]
    # Interleave devices as a gateway would see them.
    work.sort(key=lambda item: HEADER.unpack_from(item[2])[2])
    count = 0
    async with engine.connect() as connection:
        for pragma in SQLITE_WRITER_PRAGMAS:  # the writer's own settings
            await sqlite_pragma(connection, pragma)
        start, cpu_start = time.perf_counter(), time.process_time()
        deadline = start + seconds
        for offset in range(0, len(work), _BARE_BATCH):
            rows = []
            for session, base, frame in work[offset : offset + _BARE_BATCH]:
                mac = base.copy()
                mac.update(memoryview(frame)[:-TAG_BYTES])
                if not hmac.compare_digest(mac.digest(), frame[-TAG_BYTES:]):
                    raise RuntimeError("bench frame does not verify")
                _v, flags, _counter, sequence, device_ms = HEADER.unpack_from(frame)
                payload = decoder.decode(frame[HEADER.size : -TAG_BYTES])
                now = datetime.now(UTC)
                rows.append(
                    {
                        "device_id": session.device_id,
                        "sequence": sequence,
                        "vehicle_id": session.vehicle_id,
                        "tenant_id": session.tenant_id,
                        "session_id": session.session_id,
                        "certificate_serial": session.certificate_serial,
                        "software_version": session.software_version,
                        "vehicle_config": session.vehicle_config,
                        "received_at": now,
                        "device_time": datetime.fromtimestamp(device_ms / 1000, UTC),
                        "store_and_forward": bool(flags & 1),
                        "late": False,
                        "signals": payload.signals,
                    }
                )
            async with connection.begin():
                await connection.exec_driver_sql(codec.sql, codec.encode(rows))
            count += len(rows)
            if time.perf_counter() >= deadline:
                break
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    return count, elapsed, cpu


@contextlib.contextmanager
def _frozen() -> Iterator[None]:
    """Keep the pre-built frames (data a gateway process never holds) out of the cyclic
    garbage collector's full passes, for the bare loop and the pipeline alike."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _config() -> TelemetryConfig:
    # Quotas far above the offered load: their cost is measured, their refusals are not.
    return TelemetryConfig(
        device_rate=Rate(per_second=1e6, burst=1e6), fleet_rate=Rate(per_second=1e7, burst=1e7)
    )


async def _closed_loop(
    pipeline: TelemetryPipeline, devices: list[_Device], seconds: float
) -> tuple[int, float, float]:
    deadline = time.perf_counter() + seconds
    counts = [0]

    async def device(d: _Device) -> None:
        for frame in d.frames:
            reply = await pipeline.handle(d.session, frame)
            if reply[1] != Status.ACCEPTED:
                raise RuntimeError(f"bench frame refused: {Status(reply[1]).slug}")
            counts[0] += 1
            if time.perf_counter() >= deadline:
                return

    start, cpu_start = time.perf_counter(), time.process_time()
    await asyncio.gather(*(device(d) for d in devices))
    return counts[0], time.perf_counter() - start, time.process_time() - cpu_start


async def _open_loop(
    pipeline: TelemetryPipeline, devices: list[_Device], rate: float, seconds: float
) -> list[float]:
    """Every device sends its frames on its own schedule so that the fleet offers ``rate``
    frames per second in total (a TCU reporting periodically, each waiting for its ack).
    Latency runs from the moment a frame was due, so a late ack also delays, and is charged
    to, the frames queued behind it (no coordinated omission)."""
    period = len(devices) / rate
    latencies: list[float] = []
    start = time.perf_counter() + 0.1

    async def device(d: _Device, offset: float) -> None:
        for n, frame in enumerate(d.frames):
            due = start + offset + n * period
            if due - start > seconds:
                return
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            reply = await pipeline.handle(d.session, frame)
            latencies.append(time.perf_counter() - due)
            if reply[1] != Status.ACCEPTED:
                raise RuntimeError(f"bench frame refused: {Status(reply[1]).slug}")

    await asyncio.gather(*(device(d, n * period / len(devices)) for n, d in enumerate(devices)))
    return latencies


async def _measure(seconds: float, history: int, directory: Path) -> dict[str, float]:
    engine = create_engine(f"sqlite+aiosqlite:///{directory / 'bench.db'}")
    await upgrade(engine)
    world = _World(engine)
    await world.create(_VEHICLES)
    await world.history(history)
    pipeline = TelemetryPipeline.build(engine, SystemClock(), _NoStatus(), config=_config())
    await pipeline.start()
    # As the app does once it has started (its lifespan): what start-up built is frozen out
    # of the collector, the vehicles connecting afterwards are not.
    freeze_start_up_objects()
    slice_s = seconds / _SLICES
    bare = [0.0, 0.0, 0.0]  # messages, wall seconds, CPU seconds
    full = [0.0, 0.0, 0.0]
    # The same 2,000 vehicles stay connected for the whole run (sessions, counters and
    # sequences continue from slice to slice), as they would on a gateway; the bare loop
    # writes under device ids of its own so that no row of one is a duplicate of the other.
    connected, bare_devices = world.devices(_DEVICES), world.devices(_DEVICES)
    try:
        for _ in range(_SLICES):
            frames_each = max(2, int(_MAX_RATE * slice_s / _DEVICES))
            for totals, measured in (
                (bare, await _bare(engine, _refilled(bare_devices, frames_each), slice_s)),
                (
                    full,
                    await _closed_loop(pipeline, _refilled(connected, frames_each), slice_s),
                ),
            ):
                for n, value in enumerate(measured):
                    totals[n] += value
        offered = full[0] / full[1] * 0.5
        _refilled(connected, int(offered * seconds / _DEVICES) + 2)
        with _frozen():
            latencies = await _open_loop(pipeline, connected, offered, seconds)
    finally:
        await pipeline.stop()
        await engine.dispose()
    ordered = sorted(latencies)
    return {
        # How many of the stages run compiled (make native); 0 measures the Python sources.
        "compiled_stages": float(len(COMPILED)),
        "history_rows": float(history),
        "bare_msgs_per_s": bare[0] / bare[1],
        "pipeline_msgs_per_s": full[0] / full[1],
        "ratio_pipeline_to_bare": (full[0] / full[1]) / (bare[0] / bare[1]),
        # Per core: messages per CPU-second of this process (all its threads), which other
        # processes on a shared machine disturb far less than wall-clock rates.
        "bare_msgs_per_cpu_s": bare[0] / bare[2],
        "pipeline_msgs_per_cpu_s": full[0] / full[2],
        "ratio_per_cpu_s": (full[0] / full[2]) / (bare[0] / bare[2]),
        "latency_offered_msgs_per_s": offered,
        "latency_acked": float(len(latencies)),
        "ack_latency_p50_ms": statistics.median(ordered) * 1000,
        "ack_latency_p99_ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))] * 1000,
        "ack_latency_max_ms": ordered[-1] * 1000,
    }


def run(seconds: float = 4.0, history: int = DEFAULT_HISTORY) -> dict[str, float]:
    """Measure (a)-(c), ``seconds`` each, on a store already holding ``history`` messages;
    returns rates, the ratio and latencies."""
    if history < 0:
        raise ValueError("history is a number of stored messages, 0 or more")
    with tempfile.TemporaryDirectory(prefix="fleetward-bench-") as directory:
        return asyncio.run(_measure(seconds, history, Path(directory)))


def main(argv: list[str]) -> None:
    seconds = float(argv[1]) if len(argv) > 1 else 4.0
    history = int(argv[2]) if len(argv) > 2 else DEFAULT_HISTORY
    for name, value in run(seconds, history).items():
        print(f"{name:32} {value:14.3f}")


if __name__ == "__main__":
    main(sys.argv)
