"""Every way a frame is refused, each with the threat it covers. The reply is authenticated,
carries the stable status, and the whole store reads back unchanged: nothing from a refused
frame is persisted. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta

import pytest

from fleetward.telemetry.errors import Status
from support.snapshot import snapshot
from unit.telemetry.kit import Device, Rig, payload, raw_frame

Build = Callable[[Rig, Device], Awaitable[object]]
SPEED = "Vehicle.Speed"
LOCKED = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"


def frame_with(body: bytes) -> Build:
    async def build(_rig: Rig, dev: Device) -> object:
        return dev.frame(body)

    return build


def signals(values: dict[str, object]) -> Build:
    return frame_with(payload(values))


async def oversized(_rig: Rig, dev: Device) -> object:
    return dev.frame(payload({SPEED: 1.0}, padding="x" * 9000))


async def garbage(_rig: Rig, _dev: Device) -> object:
    return bytes(range(256)) * 2


async def empty(_rig: Rig, _dev: Device) -> object:
    return b""


async def text_frame(_rig: Rig, dev: Device) -> object:
    return dev.frame().decode("latin-1")


async def mutable_buffer(_rig: Rig, dev: Device) -> object:
    return bytearray(dev.frame())


async def shorter_than_header(_rig: Rig, dev: Device) -> object:
    return dev.frame()[:40]


async def unknown_version(_rig: Rig, dev: Device) -> object:
    return dev.frame(version=2)


async def wrong_key(_rig: Rig, dev: Device) -> object:
    return dev.frame(key=b"k" * 32)


async def other_sessions_frame(rig: Rig, dev: Device) -> object:
    other = rig.device()
    return other.frame()


async def tampered_payload(_rig: Rig, dev: Device) -> object:
    frame = bytearray(dev.frame(payload({SPEED: 42.5})))
    at = frame.index(b"42.5")
    frame[at] = ord("9")
    return bytes(frame)


async def tampered_flag(_rig: Rig, dev: Device) -> object:
    frame = bytearray(dev.frame())
    frame[1] ^= 0x01  # claim store-and-forward after the fact
    return bytes(frame)


async def truncated_tag(_rig: Rig, dev: Device) -> object:
    return dev.frame()[:-1]


async def reflected_reply(rig: Rig, dev: Device) -> object:
    # A server reply sent back as a frame: the two MAC labels keep it from ever verifying.
    return await rig.pipeline.handle(dev.session, dev.frame())


async def replayed(rig: Rig, dev: Device) -> object:
    frame = dev.frame()
    await rig.accept(dev, frame)
    return frame


async def counter_reused(rig: Rig, dev: Device) -> object:
    await rig.accept(dev, dev.frame(counter=5))
    return dev.frame(payload({SPEED: 99.0}), counter=5)


async def counter_backwards(rig: Rig, dev: Device) -> object:
    await rig.accept(dev, dev.frame(counter=9))
    return dev.frame(counter=8)


async def counter_zero(_rig: Rig, dev: Device) -> object:
    return dev.frame(counter=0)


async def sequence_zero(_rig: Rig, dev: Device) -> object:
    return dev.frame(sequence=0)


async def sequence_overflow(_rig: Rig, dev: Device) -> object:
    return dev.frame(sequence=2**63)


async def unknown_flags(_rig: Rig, dev: Device) -> object:
    return dev.frame(flags=0x80)


def at(offset: timedelta, *, store_and_forward: bool = False) -> Build:
    async def build(_rig: Rig, dev: Device) -> object:
        return dev.frame(offset=offset, store_and_forward=store_and_forward)

    return build


def at_ms(device_time_ms: int, *, store_and_forward: bool = False) -> Build:
    async def build(_rig: Rig, dev: Device) -> object:
        dev.counter += 1
        dev.sequence += 1
        dev.last = (dev.counter, dev.sequence)
        return raw_frame(
            dev.key,
            payload(),
            counter=dev.counter,
            sequence=dev.sequence,
            device_time_ms=device_time_ms,
            flags=1 if store_and_forward else 0,
        )

    return build


async def names_other_vehicle(rig: Rig, dev: Device) -> object:
    return dev.frame(payload(vehicle_id=rig.other_vehicle_id))


async def names_other_device(rig: Rig, dev: Device) -> object:
    return dev.frame(payload(device_id=rig.device().session.device_id))


async def names_itself_and_another(rig: Rig, dev: Device) -> object:
    return dev.frame(payload(device_id=dev.session.device_id, vehicle_id=rig.other_vehicle_id))


def _repeated(key: str, first: str, last: str) -> bytes:
    # A key given twice: a decoder keeps the last, a reader of the raw payload (the
    # quarantine table keeps it) may well take the first.
    return (f'{{"{key}": "{first}", "{key}": "{last}", "signals": {{"{SPEED}": 10.0}}}}').encode()


async def names_another_vehicle_then_itself(rig: Rig, dev: Device) -> object:
    return dev.frame(_repeated("vehicle_id", rig.other_vehicle_id, dev.session.vehicle_id))


async def names_another_device_then_itself(rig: Rig, dev: Device) -> object:
    other = rig.device().session.device_id
    return dev.frame(_repeated("device_id", other, dev.session.device_id))


async def names_itself_escaped_then_another(rig: Rig, dev: Device) -> object:
    # The same key written with an escape: one key once decoded.
    own, other = dev.session.vehicle_id, rig.other_vehicle_id
    body = f'{{"vehicle_id": "{other}", "vehicle\\u005fid": "{own}", "signals": {{"{SPEED}": 1}}}}'
    return dev.frame(body.encode())


async def names_another_vehicle_then_null(rig: Rig, dev: Device) -> object:
    # A null last: the decoder keeps None, as if the field were absent, and the first
    # occurrence (another vehicle) was never looked at.
    other = rig.other_vehicle_id
    body = f'{{"vehicle_id": "{other}", "vehicle_id": null, "signals": {{"{SPEED}": 1}}}}'
    return dev.frame(body.encode())


async def names_another_device_then_null(rig: Rig, dev: Device) -> object:
    other = rig.device().session.device_id
    body = f'{{"device_id": "{other}", "device_id": null, "signals": {{"{SPEED}": 1}}}}'
    return dev.frame(body.encode())


async def names_another_vehicle_among_unknown_keys(rig: Rig, dev: Device) -> object:
    # Any other malformation beside the name (here a key the payload does not have) must not
    # turn the impersonation into a mere malformed payload, which no one looks at.
    return dev.frame(payload(vehicle_id=rig.other_vehicle_id, note="mine now"))


async def names_another_device_with_bad_signals(rig: Rig, dev: Device) -> object:
    other = rig.device().session.device_id
    return dev.frame(json.dumps({"device_id": other, "signals": [SPEED, 1]}).encode())


async def device_quota(rig: Rig, dev: Device) -> object:
    for _ in range(4):  # the test burst
        await rig.accept(dev, dev.frame())
    return dev.frame()


async def fleet_quota(rig: Rig, dev: Device) -> object:
    # The fleet's burst is 6, each device's 4: two neighbours empty the fleet's bucket while
    # this device still has tokens of its own.
    await rig.accept(dev, dev.frame())
    first, second = rig.device(vehicle_id=rig.other_vehicle_id), rig.device()
    for _ in range(4):
        await rig.accept(first, first.frame())
    await rig.accept(second, second.frame())
    return dev.frame()


CASES: list[tuple[str, Build, Status]] = [
    # Size: bounded before a byte is hashed or parsed.
    ("oversized", oversized, Status.TOO_LARGE),
    # Framing: garbage, truncation and types a transport should never hand over.
    ("garbage-bytes", garbage, Status.MALFORMED_FRAME),
    ("empty-frame", empty, Status.MALFORMED_FRAME),
    ("text-not-bytes", text_frame, Status.MALFORMED_FRAME),
    ("mutable-buffer", mutable_buffer, Status.MALFORMED_FRAME),
    ("shorter-than-header", shorter_than_header, Status.MALFORMED_FRAME),
    ("unknown-version", unknown_version, Status.MALFORMED_FRAME),
    # Integrity: forged, tampered or foreign frames never verify.
    ("wrong-key", wrong_key, Status.BAD_MAC),
    ("other-sessions-frame", other_sessions_frame, Status.BAD_MAC),
    ("tampered-payload", tampered_payload, Status.BAD_MAC),
    ("tampered-store-and-forward-flag", tampered_flag, Status.BAD_MAC),
    ("truncated-tag", truncated_tag, Status.BAD_MAC),
    ("reflected-reply", reflected_reply, Status.BAD_MAC),
    # Authentic but malformed header fields.
    ("counter-zero", counter_zero, Status.MALFORMED_FRAME),
    ("sequence-zero", sequence_zero, Status.MALFORMED_FRAME),
    ("sequence-beyond-int64", sequence_overflow, Status.MALFORMED_FRAME),
    ("unknown-flags", unknown_flags, Status.MALFORMED_FRAME),
    # Freshness: replay and counter reuse within a session.
    ("replayed-frame", replayed, Status.STALE_COUNTER),
    ("counter-reused-new-content", counter_reused, Status.STALE_COUNTER),
    ("counter-backwards", counter_backwards, Status.STALE_COUNTER),
    # Time: the server's clock decides; drift beyond the skew is refused (and reported).
    ("clock-ahead", at(timedelta(minutes=5)), Status.CLOCK_DRIFT),
    ("clock-behind", at(timedelta(minutes=-5)), Status.CLOCK_DRIFT),
    ("live-but-delayed-past-skew", at(timedelta(seconds=-31)), Status.CLOCK_DRIFT),
    (
        "store-and-forward-from-the-future",
        at(timedelta(minutes=5), store_and_forward=True),
        Status.CLOCK_DRIFT,
    ),
    (
        "store-and-forward-too-old",
        at(timedelta(days=-8), store_and_forward=True),
        Status.OUT_OF_WINDOW,
    ),
    ("time-beyond-any-clock", at_ms(2**64 - 1), Status.CLOCK_DRIFT),
    ("epoch-zero-live", at_ms(0), Status.CLOCK_DRIFT),
    ("epoch-zero-store-and-forward", at_ms(0, store_and_forward=True), Status.OUT_OF_WINDOW),
    # Payload shape: hostile JSON, and no field beyond the three defined.
    ("json-null", frame_with(b"null"), Status.MALFORMED_PAYLOAD),
    ("json-array", frame_with(b"[]"), Status.MALFORMED_PAYLOAD),
    ("json-string", frame_with(b'"Vehicle.Speed"'), Status.MALFORMED_PAYLOAD),
    ("json-number", frame_with(b"42"), Status.MALFORMED_PAYLOAD),
    ("no-signals-field", frame_with(b"{}"), Status.MALFORMED_PAYLOAD),
    ("signals-null", frame_with(b'{"signals": null}'), Status.MALFORMED_PAYLOAD),
    ("signals-empty", frame_with(b'{"signals": {}}'), Status.MALFORMED_PAYLOAD),
    ("not-json", frame_with(b"{signals: 1}"), Status.MALFORMED_PAYLOAD),
    ("invalid-utf8", frame_with(b'{"signals": {"\xff": 1}}'), Status.MALFORMED_PAYLOAD),
    ("trailing-garbage", frame_with(payload() + b"x"), Status.MALFORMED_PAYLOAD),
    ("infinity", frame_with(b'{"signals": {"Vehicle.Speed": 1e400}}'), Status.MALFORMED_PAYLOAD),
    ("nan-literal", frame_with(b'{"signals": {"Vehicle.Speed": NaN}}'), Status.MALFORMED_PAYLOAD),
    (
        "deeply-nested-value",
        frame_with(b'{"signals": {"Vehicle.Speed": ' + b"[" * 3000 + b"]" * 3000 + b"}}"),
        Status.MALFORMED_PAYLOAD,
    ),
    (
        "duplicate-key-bad-then-good",
        frame_with(b'{"signals": {"Vehicle.Speed": 900, "Vehicle.Speed": 10}}'),
        Status.MALFORMED_PAYLOAD,
    ),
    (
        "duplicate-key-smuggling",
        frame_with(b'{"signals": {"Vehicle.Speed": 10, "Vehicle.Speed": 900}}'),
        Status.OUT_OF_RANGE,
    ),
    # Telemetry never carries commands: no field can smuggle one in.
    (
        "command-field",
        frame_with(payload(command={"name": "unlock", "vehicle": "any"})),
        Status.MALFORMED_PAYLOAD,
    ),
    # Identity comes from the session only.
    ("names-other-vehicle", names_other_vehicle, Status.FOREIGN_IDENTITY),
    ("names-other-device", names_other_device, Status.FOREIGN_IDENTITY),
    ("names-itself-and-another-vehicle", names_itself_and_another, Status.FOREIGN_IDENTITY),
    # A repeated identity key names another vehicle or device even when the last says itself.
    (
        "names-another-vehicle-then-itself",
        names_another_vehicle_then_itself,
        Status.FOREIGN_IDENTITY,
    ),
    ("names-another-device-then-itself", names_another_device_then_itself, Status.FOREIGN_IDENTITY),
    (
        "names-another-vehicle-then-itself-escaped",
        names_itself_escaped_then_another,
        Status.FOREIGN_IDENTITY,
    ),
    # ... and a trailing null does not hide the occurrence naming another.
    ("names-another-vehicle-then-null", names_another_vehicle_then_null, Status.FOREIGN_IDENTITY),
    ("names-another-device-then-null", names_another_device_then_null, Status.FOREIGN_IDENTITY),
    # ... nor does any other malformation of the payload.
    (
        "names-another-vehicle-among-unknown-keys",
        names_another_vehicle_among_unknown_keys,
        Status.FOREIGN_IDENTITY,
    ),
    (
        "names-another-device-with-bad-signals",
        names_another_device_with_bad_signals,
        Status.FOREIGN_IDENTITY,
    ),
    # A null names no one, so it is not the session's own: refused like any other name.
    (
        "names-null-vehicle",
        frame_with(b'{"vehicle_id": null, "signals": {"Vehicle.Speed": 1}}'),
        Status.FOREIGN_IDENTITY,
    ),
    # Schema: only catalogued VSS paths, with their types and ranges.
    ("unknown-signal", signals({"Vehicle.Speeed": 10.0}), Status.UNKNOWN_SIGNAL),
    (
        "vin-signal-not-accepted",
        signals({"Vehicle.VehicleIdentification.VIN": "X"}),
        Status.UNKNOWN_SIGNAL,
    ),
    ("path-wrong-case", signals({"vehicle.speed": 10.0}), Status.UNKNOWN_SIGNAL),
    ("path-look-alike", signals({"Vehicle.Sp\u0435ed": 10.0}), Status.UNKNOWN_SIGNAL),
    ("one-bad-among-good", signals({SPEED: 10.0, "Vehicle.Warp": 9}), Status.UNKNOWN_SIGNAL),
    ("speed-too-high", signals({SPEED: 351}), Status.OUT_OF_RANGE),
    ("speed-negative", signals({SPEED: -0.1}), Status.OUT_OF_RANGE),
    (
        "latitude-beyond-pole",
        signals({"Vehicle.CurrentLocation.Latitude": 90.0001}),
        Status.OUT_OF_RANGE,
    ),
    ("huge-integer", signals({"Vehicle.Powertrain.Range": 10**30}), Status.OUT_OF_RANGE),
    ("huge-integer-as-float", signals({SPEED: 10**400}), Status.OUT_OF_RANGE),
    (
        "gear-beyond-range",
        signals({"Vehicle.Powertrain.Transmission.CurrentGear": 16}),
        Status.OUT_OF_RANGE,
    ),
    ("speed-as-string", signals({SPEED: "50"}), Status.WRONG_TYPE),
    ("speed-as-boolean", signals({SPEED: True}), Status.WRONG_TYPE),
    ("speed-null", signals({SPEED: None}), Status.WRONG_TYPE),
    ("speed-as-list", signals({SPEED: [1]}), Status.WRONG_TYPE),
    ("speed-as-object", signals({SPEED: {"value": 1}}), Status.WRONG_TYPE),
    ("lock-as-integer", signals({LOCKED: 1}), Status.WRONG_TYPE),
    ("lock-as-string", signals({LOCKED: "true"}), Status.WRONG_TYPE),
    ("integer-signal-as-float", signals({"Vehicle.Powertrain.Range": 12.5}), Status.WRONG_TYPE),
    # Quotas: one device, and one fleet, cannot take more than their share.
    ("device-quota", device_quota, Status.QUOTA_EXCEEDED),
    ("fleet-quota", fleet_quota, Status.QUOTA_EXCEEDED),
]

# Refused before the tag verified: nothing of the frame is echoed in the reply.
UNAUTHENTICATED = {Status.TOO_LARGE, Status.MALFORMED_FRAME, Status.BAD_MAC}


@pytest.mark.parametrize(("case", "build", "status"), CASES, ids=[c[0] for c in CASES])
async def test_refused_and_store_unchanged(
    rig: Rig, case: str, build: Build, status: Status
) -> None:
    dev = rig.device()
    frame = await build(rig, dev)
    async with rig.platform.unit_of_work() as uow:
        before = await snapshot(uow.session)

    reply = await rig.send(dev, frame)

    assert reply.status is status
    assert not reply.status.stored
    assert reply.server_time_ms == int(rig.clock.now().timestamp() * 1000)
    if status in UNAUTHENTICATED:
        assert (reply.counter, reply.sequence) == (0, 0)
    else:
        assert (reply.counter, reply.sequence) == dev.last
    assert (reply.retry_after_ms > 0) is status.retryable
    async with rig.platform.unit_of_work() as uow:
        assert await snapshot(uow.session) == before


def test_every_refusal_status_has_a_case() -> None:
    # A status nothing can produce would be a dead branch that looks like a check.
    produced = {status for _name, _build, status in CASES}
    never_refused = {Status.ACCEPTED, Status.DUPLICATE, Status.STORE_UNAVAILABLE}
    assert produced == set(Status) - never_refused


def test_cases_are_distinct() -> None:
    assert len({name for name, _b, _s in CASES}) == len(CASES)
    assert json.loads(payload()) == {"signals": {SPEED: 42.5}}
