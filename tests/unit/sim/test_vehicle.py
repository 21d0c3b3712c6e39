"""The simulated vehicle's state machine and its signals: it moves along its route, spends
and recharges its battery, parks locked, and never reports a value the catalogue refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fleetward.gateway.session import DeviceSession, Transport
from fleetward.sim.frames import encode_payload
from fleetward.sim.vehicle import FULL_SOC, LOW_SOC, PARK_SECONDS, STOP_EVERY_KM, Mode, SimVehicle
from fleetward.telemetry.signals import CATALOGUE, validate_payload

LOCKED = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"

SESSION = DeviceSession(
    session_id="ses_" + "a" * 26,
    device_id="dev_" + "b" * 26,
    vehicle_id="veh_" + "c" * 26,
    tenant_id="ten_" + "d" * 26,
    certificate_serial="01",
    session_key=bytes(32),
    transport=Transport.WEBSOCKET,
    peer="127.0.0.1",
    software_version="tcu-4.2.0",
    vehicle_config="cfg-sim-2026a",
    established_at=datetime(2026, 11, 26, 9, tzinfo=UTC),
)


def test_driving_moves_along_the_route_and_spends_charge() -> None:
    vehicle = SimVehicle(seed=1)
    start = vehicle.state
    place, odometer, soc = (start.latitude, start.longitude), start.odometer_km, start.soc
    vehicle.step(10)
    state = vehicle.state
    assert state.mode is Mode.DRIVING
    assert state.speed_kmh > 0
    assert (state.latitude, state.longitude) != place
    assert state.odometer_km > odometer
    assert state.soc < soc
    assert not state.locked


def test_a_stop_parks_locked_then_departs() -> None:
    vehicle = SimVehicle(seed=2)
    vehicle.state.soc = 80.0
    while vehicle.state.mode is Mode.DRIVING:
        vehicle.step(30)
    state = vehicle.state
    assert state.mode is Mode.PARKED
    assert (state.speed_kmh, state.locked, state.since_stop_km) == (0.0, True, 0.0)
    vehicle.step(PARK_SECONDS)
    assert vehicle.state.mode is Mode.DRIVING
    assert not vehicle.state.locked


def test_low_charge_stops_to_charge_until_full() -> None:
    vehicle = SimVehicle(seed=3)
    vehicle.state.soc = LOW_SOC - 1
    vehicle.state.since_stop_km = STOP_EVERY_KM  # the next step reaches a stop
    vehicle.step(1)
    assert vehicle.state.mode is Mode.CHARGING
    assert vehicle.signals()["Vehicle.Powertrain.TractionBattery.Charging.IsCharging"] is True
    before = vehicle.state.soc
    vehicle.step(60)
    assert vehicle.state.soc > before
    while vehicle.state.mode is Mode.CHARGING:
        vehicle.step(600)
    assert vehicle.state.soc >= FULL_SOC
    assert vehicle.state.mode is Mode.DRIVING


def test_the_same_seed_is_the_same_vehicle() -> None:
    one, two = SimVehicle(seed=7), SimVehicle(seed=7)
    for _ in range(50):
        one.step(5)
        two.step(5)
    assert one.signals() == two.signals()
    assert SimVehicle(seed=8).signals() != SimVehicle(seed=7).signals()


@pytest.mark.parametrize("seed", range(5))
def test_every_reported_signal_is_catalogued_and_accepted(seed: int) -> None:
    vehicle = SimVehicle(seed=seed)
    for _ in range(400):  # long enough to drive, stop, park and charge
        vehicle.step(15)
        signals = vehicle.signals()
        assert set(signals) <= set(CATALOGUE)
        validate_payload(encode_payload(signals), SESSION)  # raises if any value is refused


def test_a_step_must_move_time_forward() -> None:
    with pytest.raises(ValueError, match="forward"):
        SimVehicle(seed=0).step(0)
    with pytest.raises(ValueError, match="two waypoints"):
        SimVehicle(seed=0, route=[(48.0, 11.0)])


def test_a_sleeping_vehicle_stays_parked_until_woken_then_departs() -> None:
    vehicle = SimVehicle(seed=6)
    vehicle.step(30)
    assert vehicle.state.mode is Mode.DRIVING
    vehicle.sleep()
    assert vehicle.asleep
    for _ in range(100):  # far longer than a rest: asleep is not parked
        vehicle.step(60)
        signals = vehicle.signals()
        assert (signals["Vehicle.Speed"], signals[LOCKED]) == (0.0, True)
        validate_payload(encode_payload(signals), SESSION)
    # The cabin cooled or warmed to the outside temperature while asleep.
    assert vehicle.state.cabin_c == pytest.approx(vehicle.state.exterior_c, abs=0.1)
    vehicle.wake()
    assert vehicle.state.mode is Mode.PARKED
    vehicle.step(PARK_SECONDS)
    assert vehicle.state.mode is Mode.DRIVING
    with pytest.raises(ValueError, match="only a sleeping vehicle"):
        vehicle.wake()
