"""The seam where commands reach a simulated vehicle.

:class:`fleetward.sim.command_guard.CommandGuard` authenticates each COMMAND frame of the
device session (signature, vehicle, counter, time; ``docs/vehicle-protocol.md`` section 6),
hands the decoded command to a :class:`CommandReceiver` and signs its :class:`CommandOutcome`
into a RESULT frame. :class:`SimCommandExecutor` is the simulated vehicle's receiver: it
changes the vehicle's state so that the effect shows in its next telemetry (a lock shows as
``IsLocked``), or refuses with a reason and changes nothing.

Command families are the ``vehicle:*`` permission values, as in ``CommandJob.command``. Each
family accepts exactly the parameters in :data:`PARAMETERS`; any other parameter refuses the
command (``parameter-unknown``): a parameter the vehicle would ignore might be one the
platform's authorization relied on.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from fleetward.authz.permissions import Permission
from fleetward.sim.vehicle import Mode, SimVehicle

ParameterValue = float | int | bool | str
CABIN_TARGET_RANGE = (16.0, 30.0)
WALKING_SPEED_KMH = 6.0  # the fastest a vehicle may be going when it is immobilized

PARAMETERS: Mapping[Permission, frozenset[str]] = MappingProxyType(
    {
        Permission.VEHICLE_LOCK: frozenset(),
        Permission.VEHICLE_UNLOCK: frozenset(),
        Permission.VEHICLE_REMOTE_START: frozenset(),
        Permission.VEHICLE_CLIMATE: frozenset({"cabin_celsius"}),
        Permission.VEHICLE_HORN_LIGHTS: frozenset(),
        Permission.VEHICLE_CHARGING_CONTROL: frozenset({"charging"}),
        Permission.VEHICLE_DIAGNOSTICS_RUN: frozenset(),
        Permission.VEHICLE_IMMOBILIZE: frozenset({"immobilized"}),
    }
)


@dataclass(frozen=True, slots=True)
class VehicleCommand:
    """A command as the vehicle receives it, after its frame was authenticated."""

    command_id: str
    family: Permission
    parameters: Mapping[str, ParameterValue] = field(default_factory=lambda: MappingProxyType({}))


class Verdict(StrEnum):
    EXECUTED = "executed"
    REJECTED_BY_VEHICLE = "rejected_by_vehicle"


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    command_id: str
    verdict: Verdict
    reason: str


class CommandReceiver(Protocol):
    """Where the session transport hands each received command. Called from the vehicle's
    driver task, one command at a time, in the order received; must not raise for a command
    it cannot execute (it answers ``rejected_by_vehicle`` with a reason). Not idempotent: the
    transport must drop a command id it has already delivered."""

    async def receive(self, command: VehicleCommand) -> CommandOutcome: ...


class SimCommandExecutor:
    """A :class:`CommandReceiver` that acts on one simulated vehicle's state."""

    def __init__(self, vehicle: SimVehicle) -> None:
        self._vehicle = vehicle

    async def receive(self, command: VehicleCommand) -> CommandOutcome:
        return self.execute(command)

    def execute(self, command: VehicleCommand) -> CommandOutcome:
        vehicle = self._vehicle

        def done(reason: str = "ok") -> CommandOutcome:
            return CommandOutcome(command.command_id, Verdict.EXECUTED, reason)

        def refused(reason: str) -> CommandOutcome:
            return CommandOutcome(command.command_id, Verdict.REJECTED_BY_VEHICLE, reason)

        accepted = PARAMETERS.get(command.family)
        if accepted is None:
            return refused("unsupported")
        if not command.parameters.keys() <= accepted:
            return refused("parameter-unknown")
        state = vehicle.state
        match command.family:
            case Permission.VEHICLE_LOCK:
                vehicle.set_locked(True)
                return done()
            case Permission.VEHICLE_UNLOCK:
                if state.speed_kmh > 0:
                    return refused("moving")
                vehicle.set_locked(False)
                return done()
            case Permission.VEHICLE_REMOTE_START:
                if state.speed_kmh > 0 or state.mode is Mode.DRIVING:
                    return refused("moving")
                if state.immobilized:
                    return refused("immobilized")
                vehicle.start_remotely()
                return done()
            case Permission.VEHICLE_HORN_LIGHTS:
                vehicle.flash_horn_and_lights()
                return done()
            case Permission.VEHICLE_DIAGNOSTICS_RUN:
                vehicle.run_diagnostics()
                return done()
            case Permission.VEHICLE_IMMOBILIZE:
                engage = command.parameters.get("immobilized", True)
                if not isinstance(engage, bool):
                    return refused("parameter-immobilized")
                if engage and state.speed_kmh > WALKING_SPEED_KMH:
                    return refused("moving")
                vehicle.set_immobilized(engage)
                return done()
            case Permission.VEHICLE_CHARGING_CONTROL:
                wanted = command.parameters.get("charging")
                if not isinstance(wanted, bool):
                    return refused("parameter-charging")
                return done() if vehicle.set_charging(wanted) else refused("moving")
            case Permission.VEHICLE_CLIMATE:
                target = command.parameters.get("cabin_celsius")
                low, high = CABIN_TARGET_RANGE
                if isinstance(target, bool) or not isinstance(target, int | float):
                    return refused("parameter-cabin_celsius")
                if not low <= target <= high:
                    return refused("out-of-range")
                vehicle.set_cabin_target(float(target))
                return done()
            case _:  # fail closed: a family listed in PARAMETERS but not handled here
                return refused("unsupported")
