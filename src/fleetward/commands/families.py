"""What each command is: its permission, lifetime, parameters, the vehicle state it needs,
whether it is security-relevant, and the telemetry that confirms it.

One table (:data:`COMMANDS`), keyed by the name used in URLs (``unlock``); the job stores the
permission value (``vehicle:unlock``). Nothing else in the code lists commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from fleetward.authz.permissions import Permission

ParameterValue = bool | int | float | str

SPEED: Final = "Vehicle.Speed"
LOCKED: Final = "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked"
CHARGING: Final = "Vehicle.Powertrain.TractionBattery.Charging.IsCharging"
CABLE: Final = "Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected"
# Walking speed: the most an immobilizer may be armed at (km/h).
WALKING_SPEED_KMH: Final = 6.0


class Kind(StrEnum):
    BOOLEAN = "boolean"
    NUMBER = "number"


@dataclass(frozen=True, slots=True)
class ParameterSpec:
    kind: Kind
    minimum: float = 0.0
    maximum: float = 0.0
    default: ParameterValue | None = None  # None: required


class Needs(StrEnum):
    """A precondition on the vehicle's reported state (``preconditions`` checks it)."""

    PARKED = "parked"  # speed 0
    NOT_MOVING = "not-moving"  # speed 0 (remote start)
    WALKING_SPEED = "walking-speed"  # speed <= WALKING_SPEED_KMH
    PLUGGED_IN = "plugged-in"  # the charging cable is connected (to start charging)


@dataclass(frozen=True, slots=True)
class Effect:
    """The signal value that shows the command took effect; ``from_parameter``: the value is
    the named parameter's (charging on/off), else ``value``."""

    signal: str
    value: bool = True
    from_parameter: str | None = None


@dataclass(frozen=True, slots=True)
class CommandSpec:
    name: str
    permission: Permission
    lifetime: timedelta
    # Security-relevant: at most one in flight per vehicle (lock/unlock/start/immobilize).
    exclusive: bool
    parameters: Mapping[str, ParameterSpec] = field(default_factory=dict)
    needs: Needs | None = None
    # Needs applies only when this parameter is true (charging: only to start it).
    needs_when: str | None = None
    effect: Effect | None = None

    def expected(self, parameters: Mapping[str, ParameterValue]) -> tuple[str, bool] | None:
        """(signal, value) that confirms this job, or None when nothing reported shows it."""
        if self.effect is None:
            return None
        if self.effect.from_parameter is not None:
            value = parameters.get(self.effect.from_parameter)
            return (self.effect.signal, value) if isinstance(value, bool) else None
        return self.effect.signal, self.effect.value

    def needs_for(self, parameters: Mapping[str, ParameterValue]) -> Needs | None:
        if self.needs_when is not None and parameters.get(self.needs_when) is not True:
            return None
        return self.needs


def _spec(*specs: CommandSpec) -> Mapping[str, CommandSpec]:
    return MappingProxyType({s.name: s for s in specs})


P = Permission
_S = timedelta(seconds=1)

COMMANDS: Final[Mapping[str, CommandSpec]] = _spec(
    CommandSpec("lock", P.VEHICLE_LOCK, 60 * _S, True, effect=Effect(LOCKED, True)),
    CommandSpec(
        "unlock",
        P.VEHICLE_UNLOCK,
        30 * _S,
        True,
        needs=Needs.PARKED,
        effect=Effect(LOCKED, False),
    ),
    CommandSpec("remote_start", P.VEHICLE_REMOTE_START, 60 * _S, True, needs=Needs.NOT_MOVING),
    CommandSpec(
        "climate",
        P.VEHICLE_CLIMATE,
        300 * _S,
        False,
        parameters={"cabin_celsius": ParameterSpec(Kind.NUMBER, 16.0, 30.0)},
    ),
    CommandSpec("horn_lights", P.VEHICLE_HORN_LIGHTS, 30 * _S, False),
    CommandSpec(
        "charging_control",
        P.VEHICLE_CHARGING_CONTROL,
        3600 * _S,
        False,
        parameters={"charging": ParameterSpec(Kind.BOOLEAN)},
        needs=Needs.PLUGGED_IN,
        needs_when="charging",
        effect=Effect(CHARGING, from_parameter="charging"),
    ),
    CommandSpec("diagnostics_run", P.VEHICLE_DIAGNOSTICS_RUN, 600 * _S, False),
    CommandSpec(
        "immobilize",
        P.VEHICLE_IMMOBILIZE,
        3600 * _S,
        True,
        parameters={"immobilized": ParameterSpec(Kind.BOOLEAN, default=True)},
        needs=Needs.WALKING_SPEED,
    ),
)
BY_PERMISSION: Final[Mapping[str, CommandSpec]] = MappingProxyType(
    {s.permission.value: s for s in COMMANDS.values()}
)


class BadParameters(ValueError):
    """The parameters do not fit the command; ``field`` names the first bad one."""

    def __init__(self, field_name: str, problem: str) -> None:
        super().__init__(f"{field_name}: {problem}")
        self.field = field_name
        self.problem = problem


def validate_parameters(
    spec: CommandSpec, given: Mapping[str, object]
) -> dict[str, ParameterValue]:
    """The parameters with defaults filled in; unknown, missing, mistyped or out-of-range
    values raise :class:`BadParameters` (the caller answers 422 and nothing is created)."""
    for name in given:
        if name not in spec.parameters:
            raise BadParameters(name, "unknown parameter")
    result: dict[str, ParameterValue] = {}
    for name, param in spec.parameters.items():
        value = given.get(name, param.default)
        if value is None:
            raise BadParameters(name, "required")
        if param.kind is Kind.BOOLEAN:
            if not isinstance(value, bool):
                raise BadParameters(name, "must be true or false")
            result[name] = value
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadParameters(name, "must be a number")
        if not param.minimum <= value <= param.maximum:
            raise BadParameters(name, f"must be within {param.minimum}..{param.maximum}")
        result[name] = float(value)
    return result
