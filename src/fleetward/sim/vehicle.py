"""One simulated vehicle: where it is, how it moves, and the VSS signals it reports.

The state machine is driven by simulated seconds (``step``), not by the wall clock, so a run
is reproducible from its seed and a test can advance it as fast as acks come back::

    DRIVING --(stop reached)--> PARKED --(rest over)--> DRIVING
    DRIVING --(state of charge low, at a stop)--> CHARGING --(charged)--> DRIVING
    any --(sleep)--> ASLEEP --(wake)--> PARKED

A vehicle falls asleep when its driver says so (``sleep``: it stops where it is, parked and
locked) and stays asleep, whatever time passes, until woken (``wake``); then it is parked and
departs after the usual rest.

An immobilized vehicle never departs (it stays parked, or parks when its charge is done) until
the immobilizer is released. A remote start keeps the cabin conditioned while the vehicle
stands; it ends when the vehicle departs, sleeps or is immobilized.

Every value it reports is inside the range the signal catalogue accepts
(``fleetward.telemetry.signals``); the faults that break that rule live in ``faults``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from fleetward.telemetry.signals import SignalValue

# A loop around a city centre (lat, lon). Each vehicle starts at its own point of it.
DEFAULT_ROUTE: Final[tuple[tuple[float, float], ...]] = (
    (48.1374, 11.5755),
    (48.1520, 11.5920),
    (48.1650, 11.6050),
    (48.1580, 11.6300),
    (48.1390, 11.6200),
    (48.1250, 11.6000),
    (48.1210, 11.5700),
)
_EARTH_RADIUS_KM: Final = 6371.0
BATTERY_KWH: Final = 75.0
CONSUMPTION_KWH_PER_KM: Final = 0.18
CHARGER_KW: Final = 50.0
LOW_SOC: Final = 20.0
FULL_SOC: Final = 90.0
STOP_EVERY_KM: Final = 4.0
PARK_SECONDS: Final = 60.0


class Mode(StrEnum):
    DRIVING = "driving"
    PARKED = "parked"
    CHARGING = "charging"
    ASLEEP = "asleep"


@dataclass(slots=True)
class VehicleState:
    """Everything a simulated vehicle knows about itself; mutated only by its methods."""

    latitude: float
    longitude: float
    heading: float
    speed_kmh: float
    odometer_km: float
    soc: float
    mode: Mode
    locked: bool
    door_open: bool
    cabin_c: float
    cabin_target_c: float
    exterior_c: float
    software_version: str
    leg: int = 0  # index of the waypoint the vehicle heads to
    since_stop_km: float = 0.0
    parked_s: float = 0.0
    # The charging cable is connected (at home); a vehicle charging at a stop is plugged in too.
    plugged_in: bool = False
    immobilized: bool = False
    remote_started: bool = False
    # What the commands without a lasting effect did, so a test can see that they acted.
    horn_lights_count: int = 0
    diagnostics_runs: int = 0

    @property
    def charging(self) -> bool:
        return self.mode is Mode.CHARGING


def _distance_km(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Equirectangular approximation: good to well under 1% over a city."""
    lat = math.radians((a[0] + b[0]) / 2)
    dx = math.radians(b[1] - a[1]) * math.cos(lat)
    dy = math.radians(b[0] - a[0])
    return math.hypot(dx, dy) * _EARTH_RADIUS_KM


def _bearing(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat = math.radians((a[0] + b[0]) / 2)
    dx = (b[1] - a[1]) * math.cos(lat)
    dy = b[0] - a[0]
    return math.degrees(math.atan2(dx, dy)) % 360.0


class SimVehicle:
    """A vehicle on a looping route. Not thread-safe: one driver task owns it."""

    def __init__(
        self,
        *,
        seed: int,
        software_version: str = "tcu-4.2.0",
        route: Sequence[tuple[float, float]] = DEFAULT_ROUTE,
        garaged: bool = False,
    ) -> None:
        """``garaged``: the vehicle starts parked, locked and plugged in at home, and stays
        there (the one an owner commands in the demo: unlock, climate, charging)."""
        if len(route) < 2:
            raise ValueError("a route needs at least two waypoints")
        self._garaged = garaged
        self._rng = random.Random(seed)  # noqa: S311 - a simulation, not a secret
        self._route = tuple(route)
        start = self._rng.randrange(len(self._route))
        here = self._route[start]
        self.state = VehicleState(
            latitude=here[0],
            longitude=here[1],
            heading=0.0,
            speed_kmh=0.0,
            odometer_km=round(self._rng.uniform(1_000, 80_000), 1),
            soc=round(self._rng.uniform(35, 95), 1),
            mode=Mode.DRIVING,
            locked=False,
            door_open=False,
            cabin_c=21.0,
            cabin_target_c=21.0,
            exterior_c=round(self._rng.uniform(-5, 28), 1),
            software_version=software_version,
            leg=(start + 1) % len(self._route),
        )
        if garaged:
            self._stop()
            self.state.mode = Mode.PARKED
            self.state.plugged_in = True

    def step(self, seconds: float) -> None:
        """Advance the simulation by ``seconds`` of vehicle time."""
        if seconds <= 0:
            raise ValueError("a step moves time forward")
        state = self.state
        if state.mode is Mode.DRIVING:
            self._drive(seconds)
        elif state.mode is Mode.CHARGING:
            state.speed_kmh = 0.0
            state.soc = min(100.0, state.soc + CHARGER_KW * seconds / 3600 / BATTERY_KWH * 100)
            if state.soc >= FULL_SOC:
                self._depart()
        elif state.mode is Mode.ASLEEP:
            state.speed_kmh = 0.0  # time passes; nothing else happens until woken
        else:
            state.speed_kmh = 0.0
            state.parked_s += seconds
            if state.parked_s >= PARK_SECONDS and not self._garaged:
                self._depart()
        # The cabin drifts toward its target while driving, charging or remotely started,
        # toward the outside air otherwise.
        resting = state.mode in (Mode.PARKED, Mode.ASLEEP) and not state.remote_started
        goal = state.exterior_c if resting else state.cabin_target_c
        state.cabin_c += (goal - state.cabin_c) * min(1.0, seconds / 300)

    def _drive(self, seconds: float) -> None:
        state = self.state
        target = self._rng.uniform(30, 110)
        state.speed_kmh = max(5.0, min(130.0, state.speed_kmh + (target - state.speed_kmh) * 0.3))
        travel = state.speed_kmh * seconds / 3600
        while travel > 0:
            here = (state.latitude, state.longitude)
            goal = self._route[state.leg]
            remaining = _distance_km(here, goal)
            state.heading = _bearing(here, goal)
            if remaining <= travel:
                state.latitude, state.longitude = goal
                state.leg = (state.leg + 1) % len(self._route)
                moved = remaining
            else:
                share = travel / remaining
                state.latitude += (goal[0] - here[0]) * share
                state.longitude += (goal[1] - here[1]) * share
                moved = travel
            travel -= moved
            if moved == 0:
                break  # two equal waypoints: go on with the next leg next step
            self._account(moved)
        if state.since_stop_km >= STOP_EVERY_KM:
            self._stop()

    def _account(self, km: float) -> None:
        state = self.state
        state.odometer_km += km
        state.since_stop_km += km
        state.soc = max(0.0, state.soc - km * CONSUMPTION_KWH_PER_KM / BATTERY_KWH * 100)

    def _stop(self) -> None:
        state = self.state
        state.speed_kmh = 0.0
        state.since_stop_km = 0.0
        state.parked_s = 0.0
        state.locked = True
        state.door_open = False
        state.mode = Mode.CHARGING if state.soc < LOW_SOC else Mode.PARKED

    def _depart(self) -> None:
        state = self.state
        state.parked_s = 0.0
        if state.immobilized or self._garaged:
            state.mode = Mode.PARKED  # stays where it is (a charge that is done ends)
            return
        state.mode = Mode.DRIVING
        state.locked = False
        state.remote_started = False  # the driver took over

    @property
    def asleep(self) -> bool:
        return self.state.mode is Mode.ASLEEP

    def sleep(self) -> None:
        """Stop where it is and fall asleep: parked, locked, doors shut."""
        self._stop()
        self.state.mode = Mode.ASLEEP
        self.state.remote_started = False

    def wake(self) -> None:
        """Wake up parked (a vehicle asleep only); it departs after the usual rest."""
        if self.state.mode is not Mode.ASLEEP:
            raise ValueError("only a sleeping vehicle wakes")
        self.state.mode = Mode.PARKED
        self.state.parked_s = 0.0

    # -- what the commands seam acts on (see ``commands``) --

    def set_locked(self, locked: bool) -> None:
        self.state.locked = locked

    def set_charging(self, charging: bool) -> bool:
        """Start or stop charging; only a stopped vehicle can. Returns whether it changed."""
        state = self.state
        if state.mode is Mode.DRIVING:
            return False
        state.mode = Mode.CHARGING if charging else Mode.PARKED
        state.parked_s = 0.0
        return True

    def set_cabin_target(self, celsius: float) -> None:
        self.state.cabin_target_c = celsius

    def set_immobilized(self, immobilized: bool) -> None:
        """Engage or release the immobilizer. Engaging stops the vehicle where it is (the
        commands seam allows it only at walking speed or below)."""
        state = self.state
        state.immobilized = immobilized
        if immobilized:
            state.remote_started = False
            if state.mode is Mode.DRIVING:
                state.mode = Mode.PARKED
                state.parked_s = 0.0
            state.speed_kmh = 0.0

    def start_remotely(self) -> None:
        """Remote start of a standing vehicle: climate runs toward the cabin target."""
        self.state.remote_started = True

    def flash_horn_and_lights(self) -> None:
        self.state.horn_lights_count += 1

    def run_diagnostics(self) -> None:
        self.state.diagnostics_runs += 1

    # -- telemetry --

    def signals(self) -> dict[str, SignalValue]:
        """The VSS signals of the current state, every one inside its catalogued range."""
        state = self.state
        moving = state.mode is Mode.DRIVING
        range_m = int(state.soc / 100 * BATTERY_KWH / CONSUMPTION_KWH_PER_KM * 1000)
        return {
            "Vehicle.Speed": round(state.speed_kmh, 1),
            "Vehicle.TraveledDistance": round(state.odometer_km, 2),
            "Vehicle.CurrentLocation.Latitude": round(state.latitude, 6),
            "Vehicle.CurrentLocation.Longitude": round(state.longitude, 6),
            "Vehicle.CurrentLocation.Heading": round(state.heading, 1) % 360.0,
            "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": round(state.soc, 2),
            "Vehicle.Powertrain.TractionBattery.Charging.IsCharging": state.charging,
            "Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected": (
                state.plugged_in or state.charging
            ),
            "Vehicle.Powertrain.Range": range_m,
            "Vehicle.Powertrain.Transmission.CurrentGear": 1 if moving else 0,
            "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": state.locked,
            "Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": state.door_open,
            "Vehicle.Cabin.HVAC.AmbientAirTemperature": round(state.cabin_c, 1),
            "Vehicle.Exterior.AirTemperature": state.exterior_c,
            "Vehicle.LowVoltageBattery.CurrentVoltage": 14.2 if moving else 12.6,
            "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure": 240,
        }
