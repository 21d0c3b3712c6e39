"""Accepted messages: stored once with their provenance, labelled, in the device's order."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

import pytest

from fleetward.telemetry.errors import Status
from fleetward.telemetry.history import device_history
from fleetward.telemetry.pipeline import TelemetryConfig
from unit.telemetry.conftest import TEST_CONFIG, RigFactory
from unit.telemetry.kit import Rig, payload

SPEED = "Vehicle.Speed"


def ms(rig: Rig, offset: timedelta = timedelta(0)) -> int:
    return int((rig.clock.now() + offset).timestamp() * 1000)


async def test_accepted_message_is_stored_with_provenance(rig: Rig) -> None:
    dev = rig.device()
    body = payload(
        {
            SPEED: 52,
            "Vehicle.CurrentLocation.Latitude": 48.137154,
            "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": True,
            "Vehicle.Powertrain.Range": 312_000,
        }
    )
    reply = await rig.send(dev, dev.frame(body, offset=timedelta(milliseconds=-250)))

    assert (reply.status, reply.counter, reply.sequence) == (Status.ACCEPTED, 1, 1)
    [row] = await rig.stored()
    session = dev.session
    assert (row.device_id, row.sequence, row.vehicle_id, row.tenant_id, row.session_id) == (
        session.device_id,
        1,
        session.vehicle_id,
        session.tenant_id,
        session.session_id,
    )
    assert (row.certificate_serial, row.software_version, row.vehicle_config) == (
        session.certificate_serial,
        session.software_version,
        session.vehicle_config,
    )
    assert row.received_at == rig.clock.now()
    assert row.device_time == rig.clock.now() - timedelta(milliseconds=250)
    assert (row.store_and_forward, row.late) == (False, False)
    # Identity fields never reach the signals; numbers are stored by their VSS type.
    assert row.signals == {
        SPEED: 52.0,
        "Vehicle.CurrentLocation.Latitude": 48.137154,
        "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": True,
        "Vehicle.Powertrain.Range": 312_000,
    }


async def test_payload_naming_its_own_vehicle_is_accepted(rig: Rig) -> None:
    dev = rig.device()
    body = payload(vehicle_id=dev.session.vehicle_id, device_id=dev.session.device_id)
    assert (await rig.send(dev, dev.frame(body))).status is Status.ACCEPTED
    [row] = await rig.stored()
    assert row.signals == {SPEED: 42.5}


async def test_store_and_forward_is_labelled(rig: Rig) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame(offset=timedelta(hours=-30), store_and_forward=True))
    await rig.accept(dev, dev.frame())

    backlog, live = await rig.stored()
    assert (backlog.store_and_forward, backlog.late) == (True, False)
    assert backlog.device_time == rig.clock.now() - timedelta(hours=30)
    assert live.store_and_forward is False


async def test_retransmission_in_the_same_session_is_stored_once(rig: Rig) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame(payload({SPEED: 10.0})))
    # The ack was lost: the TCU sends the message again, new counter, same sequence.
    again = await rig.send(dev, dev.frame(payload({SPEED: 99.0}), sequence=1))

    assert (again.status, again.sequence) == (Status.DUPLICATE, 1)
    [row] = await rig.stored()
    assert row.signals == {SPEED: 10.0}


async def test_retransmission_after_reconnect_is_stored_once(rig: Rig) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame())
    rig.pipeline.end_session(dev.session.session_id)
    later = dev.reconnect()

    reply = await rig.send(later, later.frame(sequence=1))

    assert reply.status is Status.DUPLICATE
    assert len(await rig.stored()) == 1


async def test_retransmission_after_restart_is_stored_once(rig: Rig, make_rig: RigFactory) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame(payload({SPEED: 10.0})))
    await rig.pipeline.stop()
    restarted = await make_rig()  # a new process: nothing remembered but the store
    later = dev.reconnect()

    reply = await restarted.send(later, later.frame(payload({SPEED: 99.0}), sequence=1))

    # The store's key makes the insert a no-op; the device learns it is stored.
    assert reply.status is Status.ACCEPTED
    [row] = await restarted.stored()
    assert row.signals == {SPEED: 10.0}


async def test_copies_arriving_together_are_stored_once(rig: Rig) -> None:
    dev = rig.device()
    first = dev.frame(sequence=7)
    second = dev.frame(sequence=7)

    replies = await asyncio.gather(rig.send(dev, first), rig.send(dev, second))

    assert sorted(r.status for r in replies) == [Status.ACCEPTED, Status.DUPLICATE]
    assert [(r.device_id, r.sequence) for r in await rig.stored()] == [(dev.session.device_id, 7)]


async def test_old_retransmission_beyond_memory_is_still_stored_once(
    make_rig: RigFactory,
) -> None:
    config = TelemetryConfig(
        device_rate=TEST_CONFIG.device_rate, remembered_sequences=1, batch_max_wait=0.001
    )
    rig = await make_rig(config)
    dev = rig.device()
    for _ in range(3):
        await rig.accept(dev, dev.frame())

    reply = await rig.send(dev, dev.frame(sequence=1))

    assert reply.status is Status.ACCEPTED  # not remembered: answered by the store's key
    assert [r.sequence for r in await rig.stored()] == [1, 2, 3]


async def test_late_messages_are_kept_in_device_order(rig: Rig) -> None:
    dev = rig.device()
    for sequence in (1, 2, 5):
        await rig.accept(dev, dev.frame(sequence=sequence))
    # The backlog from an offline period arrives after live data.
    rig.monotonic.advance(2)  # refills the device's quota (burst 4 in the tests)
    for sequence in (3, 4):
        await rig.accept(
            dev,
            dev.frame(sequence=sequence, offset=timedelta(minutes=-10), store_and_forward=True),
        )

    async with rig.platform.unit_of_work() as uow:
        history = await device_history(uow.session, dev.session.device_id)
    assert [(m.sequence, m.late) for m in history] == [
        (1, False),
        (2, False),
        (3, True),
        (4, True),
        (5, False),
    ]


async def test_counter_is_consumed_by_an_authentic_refused_frame(rig: Rig) -> None:
    dev = rig.device()
    refused = await rig.send(dev, dev.frame(payload({"Vehicle.Warp": 1.0}), counter=3))
    assert refused.status is Status.UNKNOWN_SIGNAL
    # The same counter with acceptable content is a counter reuse, not a second chance.
    again = await rig.send(dev, dev.frame(counter=3))
    assert again.status is Status.STALE_COUNTER
    assert await rig.stored() == []


# Authentic frames whose header the format does not allow (the tag verified).
MALFORMED_HEADERS: list[tuple[str, dict[str, int]]] = [
    ("unknown-flags", {"flags": 0x02}),
    ("sequence-zero", {"sequence": 0}),
    ("sequence-beyond-int64", {"sequence": 2**63}),
]


@pytest.mark.parametrize(
    ("case", "fields"), MALFORMED_HEADERS, ids=[c[0] for c in MALFORMED_HEADERS]
)
async def test_an_authentic_malformed_frame_consumes_its_counter(
    rig: Rig, case: str, fields: dict[str, int]
) -> None:
    # Threat: a relay (a broker, a proxy) replays an authentic frame the platform refused as
    # malformed. Its counter was judged after its header, so it stayed unspent: every replay
    # was answered malformed-frame as the original was (never stale-counter, as a replay
    # is), and the counter stayed free for other content.
    dev = rig.device()
    frame = dev.frame(counter=3, **fields)
    refused = await rig.send(dev, frame)
    # A malformed header is never echoed.
    assert (refused.status, refused.counter, refused.sequence) == (Status.MALFORMED_FRAME, 0, 0)

    replayed = await rig.send(dev, frame)
    assert (replayed.status, replayed.counter) == (Status.STALE_COUNTER, 3)
    reused = await rig.send(dev, dev.frame(counter=3))
    assert reused.status is Status.STALE_COUNTER
    assert await rig.stored() == []
    await rig.accept(dev, dev.frame(counter=4))


async def test_a_frame_with_counter_zero_has_no_counter_to_consume(rig: Rig) -> None:
    # Counter 0 is never fresh, so it spends nothing: its replays are answered as it was (a
    # replay adds nothing the device could not send itself), and the session's next counter
    # is still free.
    dev = rig.device()
    frame = dev.frame(counter=0)
    for _ in range(2):
        reply = await rig.send(dev, frame)
        assert (reply.status, reply.counter, reply.sequence) == (Status.MALFORMED_FRAME, 0, 0)
    await rig.accept(dev, dev.frame(counter=1))
    assert [row.sequence for row in await rig.stored()] == [2]


async def test_counters_are_per_session(rig: Rig) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame())
    other = rig.device()
    # Another session starting at counter 1 is fine: counters never cross sessions.
    await rig.accept(other, other.frame())
    assert len(await rig.stored()) == 2


async def test_gaps_in_counters_are_allowed(rig: Rig) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame(counter=1))
    await rig.accept(dev, dev.frame(counter=10))
    assert len(await rig.stored()) == 2


async def test_clock_drift_is_reported_and_the_reply_carries_server_time(rig: Rig) -> None:
    dev = rig.device()
    reply = await rig.send(dev, dev.frame(offset=timedelta(minutes=3)))

    assert reply.status is Status.CLOCK_DRIFT
    # The device resynchronises from the reply; the server's clock decides.
    assert reply.server_time_ms == ms(rig)
    snapshot = rig.pipeline.metrics()
    assert snapshot.drift_reports[10] == 1
    # A rate over the seconds counted since the pipeline started (one or two here).
    assert snapshot.refused["clock-drift"][10] == pytest.approx(1 / snapshot.covered[10])
    # Within the skew is tolerated and not reported.
    await rig.accept(dev, dev.frame(offset=timedelta(seconds=29)))
    assert rig.pipeline.metrics().drift_reports[10] == 1


async def test_metrics_show_accepted_signals(rig: Rig) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame(payload({SPEED: 10.0})))
    await rig.accept(dev, dev.frame(payload({SPEED: 30.0, "Vehicle.Exterior.AirTemperature": 5})))

    snapshot = rig.pipeline.metrics()
    speed = snapshot.signals[SPEED][10]
    assert speed.messages_per_s == pytest.approx(2 / snapshot.covered[10])
    assert speed.mean == pytest.approx(20.0)


async def test_a_closed_session_cannot_send_again(rig: Rig) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame())
    rig.pipeline.end_session(dev.session.session_id)
    # Forgetting its counters must not let the old session start over at counter 1.
    with pytest.raises(ValueError, match="closed session"):
        await rig.pipeline.handle(dev.session, dev.frame(counter=1))
    assert len(await rig.stored()) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        # A key of the wrong size would make every tag meaningless.
        ("session_key", b"0123456789abcdef"),
        ("session_key", b""),
        # Provenance that cannot be stored would fail every batch the row joins.
        ("software_version", "v" * 65),
        ("certificate_serial", ""),
        ("vehicle_config", "c" * 129),
    ],
)
async def test_sessions_the_handshake_should_never_produce(
    rig: Rig, field: str, value: object
) -> None:
    dev = rig.device()
    dev.session = dataclasses.replace(dev.session, **{field: value})
    with pytest.raises(ValueError, match="session"):
        await rig.pipeline.handle(dev.session, dev.frame())
    assert await rig.stored() == []


async def test_one_session_id_with_two_keys_is_refused(rig: Rig) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame())
    impostor = dataclasses.replace(dev.session, session_key=b"k" * 32)
    with pytest.raises(ValueError, match="session id reused"):
        await rig.pipeline.handle(impostor, dev.frame(key=b"k" * 32))
    assert len(await rig.stored()) == 1


async def test_live_sessions_are_bounded_and_the_oldest_is_ended(make_rig: RigFactory) -> None:
    rig = await make_rig(TelemetryConfig(max_live_sessions=2))
    first, second, third = rig.device(), rig.device(), rig.device()
    await rig.accept(first, first.frame())
    await rig.accept(second, second.frame())
    await rig.accept(first, first.frame())  # first is now the most recently active
    await rig.accept(third, third.frame())  # evicts second, the least recently active

    # Its counters are gone, so it may not continue: the transport closes it.
    with pytest.raises(ValueError, match="closed session"):
        await rig.pipeline.handle(second.session, second.frame())
    await rig.accept(first, first.frame())
    await rig.accept(third, third.frame())
