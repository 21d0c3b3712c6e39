"""One simulated vehicle driven against the server's own frame stages (``fake_gateway``): sleep
and wake, flood, garbage and wrong frames, each answered as documented and counted; what the
gateway stored is exactly what was acked."""

from __future__ import annotations

import asyncio
import json

import pytest

from fleetward.sim.driver import DriveConfig, VehicleDriver
from fleetward.sim.faults import EXPECTED, Fault
from fleetward.sim.tally import Tally
from fleetward.sim.transport import TransportKind
from fleetward.sim.vehicle import Mode, SimVehicle
from fleetward.telemetry.errors import Status
from fleetward.telemetry.quotas import Rate
from unit.sim.fake_gateway import FakeGateway, clock, credentials

SPEED = "Vehicle.Speed"
LOCKED = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"


async def drive(
    gateway: FakeGateway, config: DriveConfig, fault: Fault | None
) -> tuple[VehicleDriver, Tally]:
    driver = VehicleDriver(
        SimVehicle(seed=3), credentials(), gateway, config, clock=clock, fault=fault
    )
    tally = await driver.run(asyncio.Event())
    return driver, tally


async def test_a_sleeping_vehicle_reports_parked_goes_quiet_then_wakes_in_a_new_session() -> None:
    """Ticks: 1, 2 clean; 3 falls asleep (one parked message, session closed); 4, 5 quiet;
    6 wakes (new session, live message); 7, 8 clean; 9 falls asleep again."""
    gateway = FakeGateway()
    config = DriveConfig(messages=9, interval_s=0, fault_every=3, sleep_ticks=2)
    driver, tally = await drive(gateway, config, Fault.SLEEP)
    assert tally.replies == {"accepted": 7}
    assert (tally.sleeps, tally.quiet_ticks, tally.sessions_opened) == (2, 2, 2)
    assert tally.faults == {Fault.SLEEP: [1, 0]}  # the wake, answered as documented
    assert not tally.ends
    # Both sessions ended by the vehicle; the second one when it fell asleep again.
    first, second = gateway.opened
    assert gateway.closed == [first, second]
    assert driver.vehicle.state.mode is Mode.ASLEEP
    # What was stored: 3 messages of the first session, 4 of the second, all live, the
    # sequence rising across the sleep; the good-night message shows the parked state.
    assert [s.session_id for s in gateway.stored] == [first] * 3 + [second] * 4
    assert not any(s.store_and_forward for s in gateway.stored)
    sequences = [s.sequence for s in gateway.stored]
    assert sequences == sorted(sequences)
    good_night = json.loads(gateway.stored[2].payload)["signals"]
    assert (good_night[SPEED], good_night[LOCKED]) == (0.0, True)


async def test_a_flood_is_refused_for_quota_and_only_what_was_admitted_is_stored() -> None:
    """A burst of 5 and no refill: ticks 1 and 2 take 2 tokens, the flood on tick 3 gets
    the last 3, then quota-exceeded; the frames already in flight are answered too."""
    gateway = FakeGateway(device_rate=Rate(per_second=1, burst=5))
    config = DriveConfig(messages=3, interval_s=0, fault_every=3, flood_window=4, flood_max=50)
    _driver, tally = await drive(gateway, config, Fault.FLOOD)
    assert tally.faults == {Fault.FLOOD: [1, 0]}
    # 4 sent ahead; each accepted reply lets one more go; the first refusal stops it.
    assert tally.flooded == 7
    assert tally.replies == {"accepted": 5, "quota-exceeded": 4}
    assert len(gateway.stored) == 5  # nothing of a refused message


async def test_a_flood_the_platform_lets_through_is_not_as_documented() -> None:
    gateway = FakeGateway(device_rate=Rate(per_second=1, burst=1000))
    config = DriveConfig(messages=2, interval_s=0, fault_every=2, flood_max=30)
    _driver, tally = await drive(gateway, config, Fault.FLOOD)
    assert tally.flooded == 30
    assert tally.faults == {Fault.FLOOD: [0, 1]}
    assert tally.undocumented == 1


async def test_after_a_flood_a_clean_message_is_kept_and_retried_not_lost() -> None:
    """The clean message after the flood meets the empty bucket: quota-exceeded, kept and
    retried (5 attempts), then counted as a clean message refused. Never stored twice."""
    # The refill rate only sets retry_after_ms (1 ms): the held clock never refills.
    gateway = FakeGateway(device_rate=Rate(per_second=1000, burst=3))
    config = DriveConfig(messages=3, interval_s=0, fault_every=2, flood_window=1)
    _driver, tally = await drive(gateway, config, Fault.FLOOD)
    assert tally.faults == {Fault.FLOOD: [1, 0]}
    assert tally.ends == {"clean-refused:quota-exceeded": 1}
    assert len(gateway.stored) == 3


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        (Fault.GARBAGE, "a payload that is not JSON: the payload stage refuses it"),
        (Fault.WRONG_FRAME, "a handshake type byte where the telemetry version belongs"),
        (Fault.TAMPER, "the same path for a fault that was there before"),
    ],
)
async def test_garbage_is_refused_as_documented_and_nothing_of_it_stored(
    fault: Fault, why: str
) -> None:
    gateway = FakeGateway()
    config = DriveConfig(messages=6, interval_s=0, fault_every=3)
    _driver, tally = await drive(gateway, config, fault)
    assert tally.faults == {fault: [2, 0]}, why
    assert tally.replies == {"accepted": 4, EXPECTED[fault].slug: 2}
    assert len(gateway.stored) == 4
    assert not tally.ends  # the session survives: the vehicle goes on sending clean data


async def test_garbage_statuses_are_the_documented_ones() -> None:
    assert EXPECTED[Fault.GARBAGE] is Status.MALFORMED_PAYLOAD
    assert EXPECTED[Fault.WRONG_FRAME] is Status.MALFORMED_FRAME
    assert EXPECTED[Fault.FLOOD] is Status.QUOTA_EXCEEDED
    assert EXPECTED[Fault.SLEEP] is Status.ACCEPTED


def test_a_transport_without_concurrent_sessions_cannot_carry_a_clone() -> None:
    gateway = FakeGateway(concurrent_sessions=False, kind=TransportKind.MQTT)
    with pytest.raises(ValueError, match="not over mqtt"):
        VehicleDriver(
            SimVehicle(seed=1),
            credentials(),
            gateway,
            DriveConfig(),
            clock=clock,
            fault=Fault.CLONE,
        )


@pytest.mark.parametrize("field", [{"sleep_ticks": 0}, {"flood_max": 0}, {"flood_window": 0}])
def test_sleep_and_flood_settings_must_be_positive(field: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="positive"):
        DriveConfig(**field)  # type: ignore[arg-type]


async def test_the_first_pause_sets_the_vehicles_phase_then_the_interval_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A fleet connecting together spreads its reports with it (bench commands).
    pauses: list[float] = []

    async def pause(_stop: asyncio.Event, seconds: float, _wake: asyncio.Event) -> None:
        pauses.append(seconds)

    monkeypatch.setattr("fleetward.sim.driver._pause", pause)
    for first in (None, 0.3):
        config = DriveConfig(messages=3, interval_s=0.01, fault_every=99, first_pause_s=first)
        _, tally = await drive(FakeGateway(), config, None)
        assert tally.replies == {"accepted": 3}
    assert pauses == [0.01, 0.01, 0.01, 0.3, 0.01, 0.01]


def test_a_negative_first_pause_is_refused() -> None:
    with pytest.raises(ValueError, match="first pause"):
        DriveConfig(first_pause_s=-1)
