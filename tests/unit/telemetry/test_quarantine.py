"""A device that keeps sending malformed or suspicious frames is quarantined: its later data is
kept apart (never in telemetry_messages), flagged, and the devices capability is told."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from fleetward.telemetry import quarantine
from fleetward.telemetry.errors import Status
from fleetward.telemetry.pipeline import TelemetryConfig
from fleetward.telemetry.quarantine import REASON_FOREIGN_IDENTITY, REASON_REPEATED
from fleetward.telemetry.quotas import Rate
from unit.telemetry.conftest import RigFactory
from unit.telemetry.kit import Device, Rig, payload

UNKNOWN = payload({"Vehicle.Warp": 9.0})


async def send_bad(rig: Rig, dev: Device, count: int) -> None:
    for _ in range(count):
        assert (await rig.send(dev, dev.frame(UNKNOWN))).status is Status.UNKNOWN_SIGNAL


async def test_repeated_bad_frames_quarantine_the_device(rig: Rig) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame(payload({"Vehicle.Speed": 10.0})))  # before: stays put
    await send_bad(rig, dev, 9)
    assert rig.status.calls == []

    await send_bad(rig, dev, 1)  # the threshold (10 in the window)

    assert rig.status.calls == [(dev.session.device_id, REASON_REPEATED)]
    assert rig.pipeline.stages.quarantine.reason(dev.session.device_id) == REASON_REPEATED


async def test_quarantined_data_is_kept_apart_and_flagged(rig: Rig) -> None:
    dev = rig.device()
    await rig.accept(dev, dev.frame(payload({"Vehicle.Speed": 10.0})))
    await send_bad(rig, dev, 10)
    neighbour = rig.device(vehicle_id=rig.other_vehicle_id)

    good = dev.frame(payload({"Vehicle.Speed": 20.0}))
    reply = await rig.send(dev, good)
    bad = await rig.send(dev, dev.frame(UNKNOWN))
    forged = await rig.send(dev, dev.frame(key=b"f" * 32))
    await rig.accept(neighbour, neighbour.frame())

    # The device is not told (no oracle for a compromised TCU): the replies are the usual ones.
    assert (reply.status, bad.status, forged.status) == (
        Status.ACCEPTED,
        Status.UNKNOWN_SIGNAL,
        Status.BAD_MAC,
    )
    stored = await rig.stored()
    assert [(r.device_id, r.signals) for r in stored] == sorted(
        [
            (dev.session.device_id, {"Vehicle.Speed": 10.0}),  # accepted before quarantine
            (neighbour.session.device_id, {"Vehicle.Speed": 42.5}),  # others unaffected
        ]
    )
    kept = await rig.quarantined()
    # Authentic frames only (the forged one is nobody's data), each with its verdict.
    assert [(q.device_id, q.verdict, q.quarantine_reason) for q in kept] == [
        (dev.session.device_id, "accepted", REASON_REPEATED),
        (dev.session.device_id, "unknown-signal", REASON_REPEATED),
    ]
    assert kept[0].payload == payload({"Vehicle.Speed": 20.0})
    assert kept[0].sequence == 12
    assert (kept[0].session_id, kept[0].certificate_serial) == (
        dev.session.session_id,
        dev.session.certificate_serial,
    )


async def test_naming_another_vehicle_quarantines_at_once(rig: Rig) -> None:
    dev = rig.device()
    reply = await rig.send(dev, dev.frame(payload(vehicle_id=rig.other_vehicle_id)))

    assert reply.status is Status.FOREIGN_IDENTITY
    assert rig.status.calls == [(dev.session.device_id, REASON_FOREIGN_IDENTITY)]
    await rig.accept(dev, dev.frame())
    assert await rig.stored() == []
    assert [q.quarantine_reason for q in await rig.quarantined()] == [REASON_FOREIGN_IDENTITY]


async def test_bad_frames_spread_over_time_do_not_quarantine(rig: Rig) -> None:
    dev = rig.device()
    for _ in range(4):
        await send_bad(rig, dev, 5)
        rig.monotonic.advance(61)  # beyond the 60 s window
    assert rig.status.calls == []
    await rig.accept(dev, dev.frame())
    assert len(await rig.stored()) == 1


async def test_quota_refusals_do_not_count(make_rig: RigFactory) -> None:
    rig = await make_rig(TelemetryConfig(device_rate=Rate(per_second=1, burst=1)))
    dev = rig.device()
    await rig.accept(dev, dev.frame())
    for _ in range(30):  # a store-and-forward backlog draining too fast is not an attack
        assert (await rig.send(dev, dev.frame())).status is Status.QUOTA_EXCEEDED
    assert rig.status.calls == []


async def test_a_failing_status_port_still_keeps_data_apart(rig: Rig) -> None:
    rig.status.failing = True
    dev = rig.device()
    await send_bad(rig, dev, 10)
    assert rig.status.calls == []

    await rig.accept(dev, dev.frame())  # quarantined locally all the same
    assert await rig.stored() == []
    assert len(await rig.quarantined()) == 1

    rig.status.failing = False
    rig.monotonic.advance(1)
    await rig.accept(dev, dev.frame())  # reported on the device's next frame
    assert rig.status.calls == [(dev.session.device_id, REASON_REPEATED)]
    await rig.accept(dev, dev.frame())
    assert len(rig.status.calls) == 1  # and only once


async def test_a_hanging_status_port_does_not_hold_replies(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quarantine, "STATUS_PORT_TIMEOUT_S", 0.05)
    rig.status.hanging = True
    dev = rig.device()
    async with asyncio.timeout(5):
        await send_bad(rig, dev, 10)
        await rig.accept(dev, dev.frame())
    assert await rig.stored() == []  # kept apart while the report is retried


async def test_devices_already_quarantined_stay_apart_after_restart(
    make_rig: RigFactory,
) -> None:
    # The composition root seeds the policy from the devices' status flags.
    probe = await make_rig()
    dev, other = probe.device(), probe.device()
    rig = await make_rig(already_quarantined=[dev.session.device_id])

    await rig.accept(dev, dev.frame())
    await rig.accept(other, other.frame())

    assert [r.device_id for r in await rig.stored()] == [other.session.device_id]
    assert [q.device_id for q in await rig.quarantined()] == [dev.session.device_id]
    assert rig.status.calls == []  # already flagged by the devices capability


async def test_release_lets_data_through_again(rig: Rig) -> None:
    dev = rig.device()
    await send_bad(rig, dev, 10)
    rig.pipeline.stages.quarantine.release(dev.session.device_id)
    await rig.accept(dev, dev.frame())
    assert len(await rig.stored()) == 1
    assert await rig.quarantined() == []


async def test_replays_from_a_quarantined_device_are_not_stored(rig: Rig) -> None:
    dev = rig.device()
    await send_bad(rig, dev, 10)
    frame = dev.frame()
    await rig.accept(dev, frame)
    assert (await rig.send(dev, frame)).status is Status.STALE_COUNTER
    assert (await rig.send(dev, dev.frame(offset=timedelta(hours=1)))).status is (
        Status.CLOCK_DRIFT
    )
    assert len(await rig.quarantined()) == 1


async def test_refused_frames_of_a_quarantined_device_do_not_spend_its_quota(rig: Rig) -> None:
    # Threat: a compromised TCU probes whether it was noticed. Refused frames never spend an
    # unquarantined device's quota; when a quarantined device's did, a burst of junk then a
    # valid frame came back quota-exceeded instead of accepted: an oracle for the quarantine.
    dev = rig.device()
    await send_bad(rig, dev, 10)
    assert rig.pipeline.stages.quarantine.reason(dev.session.device_id) == REASON_REPEATED
    await send_bad(rig, dev, 6)  # beyond the test burst of 4: still the usual refusal
    await rig.accept(dev, dev.frame())
    kept = [q.verdict for q in await rig.quarantined()]
    # Refused frames are still kept for investigation, but never more than the device's rate.
    assert kept.count("accepted") == 1 and 1 <= kept.count("unknown-signal") <= 4


async def test_a_quarantined_devices_retransmission_is_answered_duplicate(rig: Rig) -> None:
    # Threat: the same oracle through the duplicate check. An unquarantined device's
    # retransmission of a stored sequence is answered duplicate; a quarantined one's was
    # answered accepted (and kept again), which told the TCU it had been noticed.
    dev = rig.device()
    await rig.accept(dev, dev.frame())
    stored_before = dev.sequence
    await send_bad(rig, dev, 10)
    assert (await rig.send(dev, dev.frame(sequence=stored_before))).status is Status.DUPLICATE
    await rig.accept(dev, dev.frame())
    kept_once = dev.sequence
    assert (await rig.send(dev, dev.frame(sequence=kept_once))).status is Status.DUPLICATE
    assert [q.sequence for q in await rig.quarantined()] == [kept_once]


async def test_a_device_quarantined_before_any_message_also_gets_duplicates(rig: Rig) -> None:
    dev = rig.device()
    reply = await rig.send(dev, dev.frame(payload(vehicle_id=rig.other_vehicle_id)))
    assert reply.status is Status.FOREIGN_IDENTITY  # quarantined at once, nothing stored
    await rig.accept(dev, dev.frame())
    assert (await rig.send(dev, dev.frame(sequence=dev.sequence))).status is Status.DUPLICATE
