"""Fault generation: each frame-level fault, judged by the server's own stages in pipeline
order (size -> tag -> freshness -> schema), gets exactly its documented status, and a clean
frame from the same vehicle passes; the fault plan assigns one fault per vehicle."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleetward.gateway.handshake import MessageType
from fleetward.gateway.session import DeviceSession, Transport
from fleetward.sim.faults import (
    EXPECTED,
    GARBAGE_PAYLOAD,
    STRANGER_VEHICLE_ID,
    Fault,
    FaultAssignment,
)
from fleetward.sim.frames import FRAME_FAULTS, encode_payload, faulty_frame
from fleetward.sim.vehicle import SimVehicle
from fleetward.telemetry.envelope import SessionMacs, seal
from fleetward.telemetry.errors import Rejected, Status
from fleetward.telemetry.freshness import FreshnessGuard
from fleetward.telemetry.limits import SizeLimit
from fleetward.telemetry.signals import validate_payload

KEY = bytes(range(32))
NOW_MS = 1_795_683_600_000
SESSION = DeviceSession(
    session_id="ses_" + "a" * 26,
    device_id="dev_" + "b" * 26,
    vehicle_id="veh_" + "c" * 26,
    tenant_id="ten_" + "d" * 26,
    certificate_serial="01",
    session_key=KEY,
    transport=Transport.WEBSOCKET,
    peer="127.0.0.1",
    software_version="tcu-4.2.0",
    vehicle_config="cfg-sim-2026a",
    established_at=datetime(2026, 11, 26, 9, tzinfo=UTC),
)


class Judge:
    """The server's frame stages, in the pipeline's order, for one session."""

    def __init__(self) -> None:
        self._macs = SessionMacs(KEY)
        self._size = SizeLimit()
        self._freshness = FreshnessGuard(on_drift=lambda _report: None)

    def status(self, frame: bytes) -> Status:
        try:
            verified = self._macs.open(self._size.check(frame))
            self._freshness.check(SESSION, verified, NOW_MS)
            validate_payload(verified.payload, SESSION)
        except Rejected as rejection:
            return rejection.status
        return Status.ACCEPTED


@pytest.mark.parametrize("fault", sorted(FRAME_FAULTS))
def test_each_frame_fault_gets_its_documented_status(fault: Fault) -> None:
    signals = SimVehicle(seed=4).signals()
    judge = Judge()
    first = seal(KEY, encode_payload(signals), counter=1, sequence=1, device_time_ms=NOW_MS)
    assert judge.status(first) is Status.ACCEPTED  # the vehicle's clean message before
    frame = faulty_frame(
        fault,
        KEY,
        signals,
        counter=2,
        sequence=2,
        now_ms=NOW_MS,
        previous=first,
        foreign_vehicle_id=STRANGER_VEHICLE_ID,
        drift_ms=90_000,
    )
    assert judge.status(frame) is EXPECTED[fault]


@pytest.mark.parametrize(
    ("fault", "stage"),
    [
        # Authentic and fresh: the tag verifies, so only the payload stage can refuse it.
        (Fault.GARBAGE, "payload"),
        # Refused before the tag is even looked at: not a telemetry frame.
        (Fault.WRONG_FRAME, "envelope"),
    ],
)
def test_garbage_is_refused_by_its_stage(fault: Fault, stage: str) -> None:
    frame = faulty_frame(
        fault, KEY, SimVehicle(seed=4).signals(), counter=1, sequence=1, now_ms=NOW_MS
    )
    macs = SessionMacs(KEY)
    if stage == "payload":
        verified = macs.open(frame)  # raises if the tag did not verify
        assert verified.payload == GARBAGE_PAYLOAD
        with pytest.raises(Rejected) as refused:
            validate_payload(verified.payload, SESSION)
    else:
        assert frame[0] == MessageType.RESPONSE
        with pytest.raises(Rejected) as refused:
            macs.open(frame)
    assert refused.value.status is EXPECTED[fault]


def test_every_fault_has_a_documented_answer() -> None:
    assert set(EXPECTED) == set(Fault)
    # Behaviours of sessions and rates are not frames.
    assert set(Fault) - FRAME_FAULTS == {Fault.OFFLINE, Fault.CLONE, Fault.SLEEP, Fault.FLOOD}


@pytest.mark.parametrize(
    ("drift_ms", "expected", "why"),
    [
        (30_000, Status.ACCEPTED, "at the skew: tolerated"),
        (30_001, Status.CLOCK_DRIFT, "beyond the skew ahead"),
        (-30_001, Status.CLOCK_DRIFT, "beyond the skew behind, for a live message"),
    ],
)
def test_drift_is_judged_against_the_skew(drift_ms: int, expected: Status, why: str) -> None:
    frame = faulty_frame(
        Fault.CLOCK_DRIFT,
        KEY,
        SimVehicle(seed=5).signals(),
        counter=1,
        sequence=1,
        now_ms=NOW_MS,
        drift_ms=drift_ms,
    )
    assert Judge().status(frame) is expected, why


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        (Fault.REPLAY, "replay needs"),  # nothing sent before: nothing to replay
        (Fault.FOREIGN, "names another vehicle"),  # no other vehicle given
        (Fault.OFFLINE, "not a frame fault"),
        (Fault.CLONE, "not a frame fault"),
        (Fault.SLEEP, "not a frame fault"),
        (Fault.FLOOD, "not a frame fault"),
    ],
)
def test_faults_that_cannot_be_a_frame_are_refused(fault: Fault, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        faulty_frame(fault, KEY, {}, counter=1, sequence=1, now_ms=NOW_MS)


def test_the_plan_puts_faulty_vehicles_last() -> None:
    assignment = FaultAssignment.parse("tamper=2, replay")
    assert assignment.total == 3
    assert assignment.plan(5) == [None, None, Fault.TAMPER, Fault.TAMPER, Fault.REPLAY]
    assert FaultAssignment.parse("").plan(2) == [None, None]
    assert FaultAssignment.each().plan(len(Fault)) == list(Fault)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("teleport", "unknown fault"),
        ("tamper=0", "positive count"),
        ("tamper,tamper", "once"),
        ("replay=-1", "positive count"),
    ],
)
def test_a_bad_fault_spec_is_refused(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FaultAssignment.parse(spec)


def test_more_faulty_vehicles_than_the_fleet_is_refused() -> None:
    with pytest.raises(ValueError, match="fleet of 2"):
        FaultAssignment.parse("tamper=3").plan(2)
