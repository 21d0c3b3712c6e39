"""The seam where commands reach a simulated vehicle.

The vehicle protocol carries no command frames yet (a session carries telemetry up and
replies down; ``docs/telemetry-format.md``). The commands issue adds the transport: decode and
authenticate a command frame on the device session, hand the decoded command to a
:class:`CommandReceiver`, and send its :class:`CommandOutcome` back. That transport part is
deliberately absent here; what exists is the interface and the simulated vehicle's side of
it (:class:`SimCommandExecutor`), which changes the vehicle's state so that the effect shows
in its next telemetry (a lock shows as ``IsLocked``).

Command families are the ``vehicle:*`` permission values, as in ``CommandJob.command``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Protocol

from fleetward.authz.permissions import Permission
from fleetward.sim.vehicle import SimVehicle

ParameterValue = float | int | bool | str
CABIN_TARGET_RANGE = (16.0, 30.0)


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

        match command.family:
            case Permission.VEHICLE_LOCK:
                vehicle.set_locked(True)
                return done()
            case Permission.VEHICLE_UNLOCK:
                if vehicle.state.speed_kmh > 0:
                    return refused("moving")
                vehicle.set_locked(False)
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
            case _:
                return refused("unsupported")
