"""Message bytes as a simulated vehicle sends them: clean payloads, and the frames of each
frame-level fault (``faults``). Sealing is the protocol's reference (``telemetry.envelope``)."""

from __future__ import annotations

import json
from collections.abc import Mapping

from fleetward.gateway.handshake import MessageType
from fleetward.sim.faults import GARBAGE_PAYLOAD, IMPOSSIBLE_SPEED, OVERSIZE_BYTES, Fault
from fleetward.telemetry.envelope import HEADER, seal
from fleetward.telemetry.signals import SignalValue

# Faults that are a property of one frame; offline, sleep and clone are sessions, flood is a
# rate: none of those is a frame.
FRAME_FAULTS = frozenset(
    {
        Fault.CLOCK_DRIFT,
        Fault.REPLAY,
        Fault.TAMPER,
        Fault.OUT_OF_RANGE,
        Fault.FOREIGN,
        Fault.OVERSIZE,
        Fault.GARBAGE,
        Fault.WRONG_FRAME,
    }
)


def encode_payload(signals: Mapping[str, SignalValue], *, vehicle_id: str | None = None) -> bytes:
    body: dict[str, object] = {"signals": dict(signals)}
    if vehicle_id is not None:
        body["vehicle_id"] = vehicle_id
    return json.dumps(body, separators=(",", ":")).encode()


def faulty_frame(
    fault: Fault,
    key: bytes,
    signals: Mapping[str, SignalValue],
    *,
    counter: int,
    sequence: int,
    now_ms: int,
    previous: bytes | None = None,
    foreign_vehicle_id: str = "",
    drift_ms: int = 0,
) -> bytes:
    """The frame a vehicle committing ``fault`` sends instead of its clean message."""
    if fault not in FRAME_FAULTS:
        raise ValueError(f"{fault.value} is not a frame fault")
    if fault is Fault.REPLAY:
        if previous is None:
            raise ValueError("a replay needs a frame sent before")
        return previous  # the exact bytes already sent (and acked) in this session
    device_time_ms = now_ms + drift_ms if fault is Fault.CLOCK_DRIFT else now_ms
    payload = encode_payload(signals)
    if fault is Fault.OUT_OF_RANGE:
        payload = encode_payload({**signals, "Vehicle.Speed": IMPOSSIBLE_SPEED})
    elif fault is Fault.FOREIGN:
        if not foreign_vehicle_id:
            raise ValueError("the foreign fault names another vehicle")
        payload = encode_payload(signals, vehicle_id=foreign_vehicle_id)
    elif fault is Fault.OVERSIZE:
        payload = payload.ljust(OVERSIZE_BYTES, b" ")  # JSON allows trailing whitespace
    elif fault is Fault.GARBAGE:
        payload = GARBAGE_PAYLOAD  # authentic and fresh: only the payload stage refuses it
    frame = seal(key, payload, counter=counter, sequence=sequence, device_time_ms=device_time_ms)
    if fault is Fault.TAMPER:
        tampered = bytearray(frame)
        tampered[HEADER.size] ^= 0x01  # one bit of the payload, after the tag was computed
        return bytes(tampered)
    if fault is Fault.WRONG_FRAME:
        # Another kind of message where a telemetry frame belongs: a handshake RESPONSE's
        # type byte in place of the telemetry version (the length is a frame's).
        return bytes([MessageType.RESPONSE]) + frame[1:]
    return frame
