"""Batched durable writes: an ack is released only after its batch committed, never before and
never for a batch that failed. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, Numeric, String, Table, event, func, select, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from fleetward.platform import Platform
from fleetward.store.base import UtcDateTime
from fleetward.store.engine import create_engine
from fleetward.telemetry.errors import Status
from fleetward.telemetry.models import TelemetryMessage
from fleetward.telemetry.persist import BatchWriter, RowCodec, StoreUnavailable, Target
from fleetward.telemetry.pipeline import TELEMETRY_TARGET, TelemetryConfig
from fleetward.telemetry.quarantine import REASON_REPEATED
from fleetward.telemetry.quotas import Rate
from unit.telemetry.conftest import RigFactory
from unit.telemetry.kit import Rig, payload

GENEROUS = Rate(per_second=1000, burst=1000)


@asynccontextmanager
async def write_lock(platform: Platform) -> AsyncIterator[None]:
    """Hold the telemetry table's write lock from another connection (readers still read)."""
    async with platform.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # A write statement takes the database's write lock (it touches no row), whether
            # the engine begins transactions deferred or immediate.
            await connection.begin()
            await connection.exec_driver_sql("DELETE FROM telemetry_messages WHERE 0")
        else:
            await connection.exec_driver_sql("LOCK TABLE telemetry_messages IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            await connection.rollback()


async def visible_rows(platform: Platform) -> int:
    """Telemetry rows a reader sees now, read without waiting for the write lock (on SQLite a
    transaction of this engine takes the lock when it begins: read on the driver directly,
    outside any transaction, as WAL allows)."""
    async with platform.engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            count = await connection.scalar(select(func.count()).select_from(TelemetryMessage))
            return int(count or 0)
        raw = await connection.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        cursor = await driver.execute("SELECT count(*) FROM telemetry_messages")
        row = await cursor.fetchone()
        await cursor.close()
        return int(row[0])


@pytest.fixture
async def empty_engine(platform: Platform, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A reachable store of the same backend without the telemetry tables: every batch fails."""
    if platform.engine.dialect.name == "sqlite":
        engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
        yield engine
        await engine.dispose()
        return
    schema = f"e_{secrets.token_hex(6)}"
    url = platform.engine.url.render_as_string(hide_password=False)
    admin = create_engine(url)
    async with admin.begin() as connection:
        await connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    engine = create_engine(url, schema=schema)
    yield engine
    await engine.dispose()
    async with admin.begin() as connection:
        await connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    await admin.dispose()


def inserts(engine: AsyncEngine) -> list[int]:
    """Rows per telemetry insert statement executed on ``engine`` from now on."""
    sizes: list[int] = []

    def record(
        _conn: Any, _cursor: Any, statement: str, parameters: Any, _ctx: Any, many: bool
    ) -> None:
        if statement.startswith("INSERT INTO telemetry_messages"):
            sizes.append(len(parameters) if many else 1)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    return sizes


async def test_ack_waits_for_the_commit(rig: Rig) -> None:
    dev = rig.device()
    async with write_lock(rig.platform):
        pending = asyncio.create_task(rig.send(dev, dev.frame()))
        await asyncio.sleep(0.3)
        # The write is blocked: no ack yet, and nothing is visible in the store.
        assert not pending.done()
        assert await visible_rows(rig.platform) == 0
    reply = await pending
    assert reply.status is Status.ACCEPTED
    assert len(await rig.stored()) == 1


async def test_a_batch_that_does_not_commit_is_never_acknowledged(
    make_rig: RigFactory, empty_engine: AsyncEngine
) -> None:
    broken = await make_rig(engine=empty_engine)
    dev = broken.device()

    reply = await broken.send(dev, dev.frame())

    # Temporary: the device keeps the message and sends it again later.
    assert (reply.status, reply.retry_after_ms) == (Status.STORE_UNAVAILABLE, 1000)
    assert reply.status.retryable and not reply.status.stored
    assert await broken.stored() == []  # (the real store: nothing written there either)

    healthy = await make_rig()
    later = dev.reconnect()
    assert (await healthy.send(later, later.frame(sequence=1))).status is Status.ACCEPTED
    assert [r.sequence for r in await healthy.stored()] == [1]


async def test_a_quarantined_devices_refusal_stands_when_the_store_is_down(
    make_rig: RigFactory, empty_engine: AsyncEngine
) -> None:
    # Threat: a compromised TCU probes whether it was noticed. A refused frame is answered
    # with its refusal, store or no store; a quarantined device's refused frame, which is
    # also kept for investigation, came back store-unavailable when that keeping failed: a
    # different answer (and a retryable one, for a frame that will never be accepted).
    broken = await make_rig(engine=empty_engine)
    trusted, suspect = broken.device(), broken.device()
    broken.pipeline.stages.quarantine.mark(suspect.session.device_id, REASON_REPEATED)
    unknown = payload({"Vehicle.Warp": 9.0})

    assert (await broken.send(trusted, trusted.frame(unknown))).status is Status.UNKNOWN_SIGNAL
    assert (await broken.send(suspect, suspect.frame(unknown))).status is Status.UNKNOWN_SIGNAL
    # A frame it would accept is not kept either: that one is retried, as for any device.
    assert (await broken.send(suspect, suspect.frame())).status is Status.STORE_UNAVAILABLE


async def test_a_row_the_store_refuses_does_not_sink_its_batch(make_rig: RigFactory) -> None:
    rig = await make_rig(TelemetryConfig(batch_max_wait=0.2))
    good = rig.device()
    # A session bound to a vehicle the store does not know (a handshake bug): its row
    # violates the foreign key, and must not take its batch down with it.
    ghost = rig.device(vehicle_id="veh_" + "x" * 26)

    replies = await asyncio.gather(
        rig.send(good, good.frame()), rig.send(ghost, ghost.frame()), rig.send(good, good.frame())
    )

    assert [r.status for r in replies] == [
        Status.ACCEPTED,
        Status.STORE_UNAVAILABLE,
        Status.ACCEPTED,
    ]
    assert [r.device_id for r in await rig.stored()] == [good.session.device_id] * 2


async def test_concurrent_messages_share_one_transaction(make_rig: RigFactory) -> None:
    rig = await make_rig(TelemetryConfig(batch_max_wait=0.1, fleet_rate=GENEROUS))
    sizes = inserts(rig.platform.engine)
    devices = [rig.device() for _ in range(20)]

    replies = await asyncio.gather(*(rig.send(d, d.frame()) for d in devices))

    assert {r.status for r in replies} == {Status.ACCEPTED}
    assert sizes == [20]


async def test_batches_are_capped_in_rows(make_rig: RigFactory) -> None:
    rig = await make_rig(TelemetryConfig(batch_max_wait=0.1, batch_max_rows=5, fleet_rate=GENEROUS))
    sizes = inserts(rig.platform.engine)
    devices = [rig.device() for _ in range(12)]

    replies = await asyncio.gather(*(rig.send(d, d.frame()) for d in devices))

    assert {r.status for r in replies} == {Status.ACCEPTED}
    assert sizes == [5, 5, 2]


def _row(rig: Rig, sequence: int) -> dict[str, Any]:
    return {
        "device_id": "dev_writer",
        "sequence": sequence,
        "vehicle_id": rig.vehicle_id,
        "tenant_id": rig.tenant_id,
        "session_id": "ses_writer",
        "certificate_serial": "01",
        "software_version": "1",
        "vehicle_config": "c",
        "received_at": rig.clock.now(),
        "device_time": rig.clock.now(),
        "store_and_forward": False,
        "late": False,
        "signals": {"Vehicle.Speed": 1.0},
    }


async def test_a_full_backlog_refuses_at_once(rig: Rig) -> None:
    writer = BatchWriter(rig.platform.engine, max_rows=1, max_pending=1)
    await writer.start()
    first = writer.submit(TELEMETRY_TARGET, _row(rig, 1))
    second = writer.submit(TELEMETRY_TARGET, _row(rig, 2))
    assert second.done()
    with pytest.raises(StoreUnavailable):
        second.result()
    await first
    await writer.stop()
    assert [r.sequence for r in await rig.stored()] == [1]


async def test_stop_writes_what_was_submitted(rig: Rig) -> None:
    writer = BatchWriter(rig.platform.engine, max_wait=1)  # stop() must not wait for it
    await writer.start()
    waiters = [writer.submit(TELEMETRY_TARGET, _row(rig, n)) for n in range(1, 4)]
    started = time.monotonic()
    await writer.stop()
    assert time.monotonic() - started < 0.5
    assert all(w.done() and w.exception() is None for w in waiters)
    assert len(await rig.stored()) == 3
    late = writer.submit(TELEMETRY_TARGET, _row(rig, 9))
    with pytest.raises(StoreUnavailable):
        await late


def test_the_codec_refuses_column_types_it_does_not_know(rig: Rig) -> None:
    table = Table("t", MetaData(), Column("id", String(4)), Column("amount", Numeric(10, 2)))
    with pytest.raises(ValueError, match="no row encoding"):
        RowCodec(Target(table), rig.platform.engine.dialect)


def _sqlalchemy_text(value: datetime) -> str:
    """What the ORM binds: UtcDateTime's naive UTC value through SQLite's DATETIME processor."""
    dialect = sqlite.dialect()
    process = sqlite.DATETIME().bind_processor(dialect)
    assert process is not None
    text_value = process(UtcDateTime().process_bind_param(value, dialect))
    assert isinstance(text_value, str) and len(text_value) == 26
    return text_value


def _timed_row(sequence: int, received_at: datetime, device_time: datetime) -> dict[str, Any]:
    return {
        "device_id": "dev_x",
        "sequence": sequence,
        "vehicle_id": "veh_x",
        "tenant_id": "ten_x",
        "session_id": "ses_x",
        "certificate_serial": "4f",
        "software_version": "tcu",
        "vehicle_config": "ev",
        "received_at": received_at,
        "device_time": device_time,
        "store_and_forward": False,
        "late": False,
        "signals": {},
    }


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 12, 6, 7, 54, 17, 916073, tzinfo=UTC),
        datetime(2026, 1, 1, tzinfo=UTC),  # no microseconds: still six digits
        datetime(2026, 6, 30, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=2))),
        datetime(1999, 12, 31, 22, 0, 0, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    ],
)
def test_the_codec_writes_times_as_sqlalchemy_does(value: datetime) -> None:
    """The codec's text for a UTC column is byte for byte what SQLAlchemy binds for it on
    SQLite, so rows written by the writer read back like rows written through the ORM."""
    codec = RowCodec(TELEMETRY_TARGET, sqlite.dialect())
    expected = _sqlalchemy_text(value)
    (encoded,) = codec.encode([_timed_row(1, value, value)])
    assert expected in encoded
    assert encoded.count(expected) == 2


def test_the_codec_formats_each_second_anew() -> None:
    """Times across a second boundary, and back, in one batch: the text of the last second is
    kept only while the seconds match."""
    codec = RowCodec(TELEMETRY_TARGET, sqlite.dialect())
    base = datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    times = [base, base + timedelta(microseconds=1), base - timedelta(seconds=1), base]
    rows = [_timed_row(n, value, times[-1 - n]) for n, value in enumerate(times)]
    expected = [_sqlalchemy_text(t) for t in times]
    for n, encoded in enumerate(codec.encode(rows)):
        assert expected[n] in encoded
        assert expected[-1 - n] in encoded
