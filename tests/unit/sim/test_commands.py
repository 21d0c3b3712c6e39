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
