"""The command seam on the simulated vehicle: a command changes its state (and so its next
telemetry), or is rejected by the vehicle with a reason; nothing is half done."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from fleetward.authz.permissions import Permission
from fleetward.sim.commands import (
    CommandReceiver,
    SimCommandExecutor,
    VehicleCommand,
    Verdict,
)
from fleetward.sim.vehicle import Mode, SimVehicle

LOCKED = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"


def parked() -> SimVehicle:
    vehicle = SimVehicle(seed=9)
    vehicle.state.mode = Mode.PARKED
    vehicle.state.speed_kmh = 0.0
    return vehicle


def command(family: Permission, **parameters: float | bool | str) -> VehicleCommand:
    return VehicleCommand("cmd_1", family, MappingProxyType(parameters))


async def test_lock_and_unlock_show_in_the_next_telemetry() -> None:
    vehicle = parked()
    executor: CommandReceiver = SimCommandExecutor(vehicle)
    outcome = await executor.receive(command(Permission.VEHICLE_LOCK))
    assert (outcome.command_id, outcome.verdict) == ("cmd_1", Verdict.EXECUTED)
    assert vehicle.signals()[LOCKED] is True
    assert (await executor.receive(command(Permission.VEHICLE_UNLOCK))).verdict is Verdict.EXECUTED
    assert vehicle.signals()[LOCKED] is False


@pytest.mark.parametrize(
    ("cmd", "reason", "why"),
    [
        (command(Permission.VEHICLE_UNLOCK), "moving", "never unlock a moving vehicle"),
        (command(Permission.VEHICLE_CHARGING_CONTROL, charging=True), "moving", "no plug"),
        (command(Permission.VEHICLE_CHARGING_CONTROL, charging="yes"), "parameter-charging", ""),
        (command(Permission.VEHICLE_CLIMATE, cabin_celsius=45.0), "out-of-range", "too hot"),
        (command(Permission.VEHICLE_CLIMATE, cabin_celsius=True), "parameter-cabin_celsius", ""),
        (command(Permission.VEHICLE_TRANSFER), "unsupported", "not a vehicle command"),
        (command(Permission.VEHICLE_REMOTE_START), "moving", "never start a moving vehicle"),
        (command(Permission.VEHICLE_IMMOBILIZE), "moving", "never immobilize at speed"),
        (command(Permission.VEHICLE_IMMOBILIZE, immobilized="yes"), "parameter-immobilized", ""),
        (
            command(Permission.VEHICLE_LOCK, force=True),
            "parameter-unknown",
            "a parameter the vehicle would ignore may be one authorization relied on",
        ),
        (
            command(Permission.VEHICLE_CLIMATE, cabin_celsius=20.0, seat_heat=3),
            "parameter-unknown",
            "",
        ),
    ],
)
def test_refused_commands_change_nothing(cmd: VehicleCommand, reason: str, why: str) -> None:
    vehicle = SimVehicle(seed=9)
    vehicle.step(5)  # driving
    before = vehicle.signals()
    outcome = SimCommandExecutor(vehicle).execute(cmd)
    assert (outcome.verdict, outcome.reason) == (Verdict.REJECTED_BY_VEHICLE, reason), why
    assert vehicle.signals() == before


def test_charging_and_climate_on_a_parked_vehicle() -> None:
    vehicle = parked()
    executor = SimCommandExecutor(vehicle)
    charge = executor.execute(command(Permission.VEHICLE_CHARGING_CONTROL, charging=True))
    assert charge.verdict is Verdict.EXECUTED
    assert vehicle.state.mode is Mode.CHARGING
    climate = executor.execute(command(Permission.VEHICLE_CLIMATE, cabin_celsius=19.5))
    assert climate.verdict is Verdict.EXECUTED
    assert vehicle.state.cabin_target_c == 19.5


def test_remote_start_conditions_the_standing_cabin() -> None:
    vehicle = parked()
    vehicle.state.cabin_c = vehicle.state.exterior_c = -5.0
    outcome = SimCommandExecutor(vehicle).execute(command(Permission.VEHICLE_REMOTE_START))
    assert (outcome.verdict, outcome.reason) == (Verdict.EXECUTED, "ok")
    assert vehicle.state.remote_started is True
    vehicle.step(30)
    assert vehicle.state.cabin_c > -5.0  # toward the 21 degree target, not the outside air
    assert vehicle.state.mode is Mode.PARKED  # started, not driving away


def test_remote_start_is_refused_while_immobilized() -> None:
    vehicle = parked()
    executor = SimCommandExecutor(vehicle)
    assert executor.execute(command(Permission.VEHICLE_IMMOBILIZE)).verdict is Verdict.EXECUTED
    refused = executor.execute(command(Permission.VEHICLE_REMOTE_START))
    assert (refused.verdict, refused.reason) == (Verdict.REJECTED_BY_VEHICLE, "immobilized")
    assert vehicle.state.remote_started is False


def test_horn_lights_and_diagnostics_act_without_lasting_state() -> None:
    vehicle = parked()
    executor = SimCommandExecutor(vehicle)
    before = vehicle.signals()
    for family in (Permission.VEHICLE_HORN_LIGHTS, Permission.VEHICLE_DIAGNOSTICS_RUN) * 2:
        outcome = executor.execute(command(family))
        assert (outcome.verdict, outcome.reason) == (Verdict.EXECUTED, "ok")
    assert (vehicle.state.horn_lights_count, vehicle.state.diagnostics_runs) == (2, 2)
    assert vehicle.signals() == before


@pytest.mark.parametrize(
    ("speed", "verdict", "why"),
    [
        (0.0, Verdict.EXECUTED, "parked"),
        (6.0, Verdict.EXECUTED, "walking speed is the limit"),
        (6.1, Verdict.REJECTED_BY_VEHICLE, "above walking speed: never cut a moving vehicle"),
    ],
)
def test_immobilize_only_at_walking_speed(speed: float, verdict: Verdict, why: str) -> None:
    vehicle = SimVehicle(seed=9)
    vehicle.state.speed_kmh = speed
    outcome = SimCommandExecutor(vehicle).execute(command(Permission.VEHICLE_IMMOBILIZE))
    assert outcome.verdict is verdict, why
    assert vehicle.state.immobilized is (verdict is Verdict.EXECUTED)
    if verdict is Verdict.EXECUTED:
        assert vehicle.state.speed_kmh == 0.0 and vehicle.state.mode is Mode.PARKED


def test_an_immobilized_vehicle_never_departs_until_released() -> None:
    vehicle = parked()
    vehicle.state.remote_started = True
    executor = SimCommandExecutor(vehicle)
    assert executor.execute(command(Permission.VEHICLE_IMMOBILIZE)).verdict is Verdict.EXECUTED
    assert vehicle.state.remote_started is False  # immobilizing ends a remote start
    odometer = vehicle.state.odometer_km
    for _ in range(10):
        vehicle.step(60)  # well past the usual rest
    assert vehicle.state.mode is Mode.PARKED and vehicle.state.odometer_km == odometer
    # A charge that completes does not drive it away either.
    assert executor.execute(
        command(Permission.VEHICLE_CHARGING_CONTROL, charging=True)
    ).verdict is (Verdict.EXECUTED)
    vehicle.state.soc = 89.9
    vehicle.step(600)
    assert vehicle.state.mode is Mode.PARKED and vehicle.state.odometer_km == odometer
    released = executor.execute(command(Permission.VEHICLE_IMMOBILIZE, immobilized=False))
    assert released.verdict is Verdict.EXECUTED and vehicle.state.immobilized is False
    for _ in range(3):
        vehicle.step(60)
    assert vehicle.state.odometer_km > odometer
