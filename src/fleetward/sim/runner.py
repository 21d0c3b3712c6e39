"""The fleet runner: N simulated vehicles as asyncio tasks, each over its own device sessions
(through one transport: WebSocket or MQTT).

Bounded on every axis: handshakes in flight (``connect_concurrency``), messages per vehicle
(``DriveConfig.messages``) and wall-clock duration (``duration_s``); the run stops by itself
when the first bound is reached and every session is closed cleanly. The report is built
from the server's authenticated replies only.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fleetward.gateway.device_client import DeviceCredentials
from fleetward.sim.driver import DriveConfig, VehicleDriver
from fleetward.sim.faults import STRANGER_VEHICLE_ID, Fault
from fleetward.sim.tally import Tally
from fleetward.sim.transport import SimTransport
from fleetward.sim.vehicle import SimVehicle


@dataclass(frozen=True, slots=True)
class FleetMember:
    label: str
    credentials: DeviceCredentials
    fault: Fault | None = None
    # Parked at home and staying there (the demo's commandable car).
    garaged: bool = False


@dataclass(frozen=True, slots=True)
class VehicleResult:
    label: str
    device_id: str
    vehicle_id: str
    fault: Fault | None
    tally: Tally


@dataclass(frozen=True, slots=True)
class FleetReport:
    vehicles: tuple[VehicleResult, ...]
    total: Tally
    elapsed_s: float

    def summary(self) -> dict[str, Any]:
        return {"vehicles": len(self.vehicles), **self.total.summary(self.elapsed_s)}


class FleetRunner:
    def __init__(
        self,
        members: Sequence[FleetMember],
        transport: SimTransport,
        config: DriveConfig,
        *,
        clock: Callable[[], datetime],
        duration_s: float | None = None,
        connect_concurrency: int = 64,
        seed: int = 0,
    ) -> None:
        if not members:
            raise ValueError("a fleet has at least one vehicle")
        if duration_s is not None and duration_s <= 0:
            raise ValueError("duration must be positive")
        if config.messages is None and duration_s is None:
            raise ValueError("bound the run: give a message count or a duration")
        if connect_concurrency < 1:
            raise ValueError("connect_concurrency must be positive")
        if not transport.concurrent_sessions and any(m.fault is Fault.CLONE for m in members):
            raise ValueError(f"the clone fault needs two live sessions: not over {transport.kind}")
        self._members = tuple(members)
        self._transport = transport
        self._config = config
        self._clock = clock
        self._duration = duration_s
        self._gate_size = connect_concurrency
        self._seed = seed
        self._drivers: list[VehicleDriver] = []

    def live_total(self) -> Tally:
        """The fleet's counts so far (while it runs, for progress lines)."""
        total = Tally()
        for driver in self._drivers:
            total.merge(driver.tally)
        return total

    async def run(self, stop: asyncio.Event | None = None) -> FleetReport:
        """Drive the fleet until its bounds (or ``stop``); cancelling also closes sessions."""
        stop = stop or asyncio.Event()
        gate = asyncio.Semaphore(self._gate_size)
        drivers = [self._driver(n, member, gate) for n, member in enumerate(self._members)]
        self._drivers = drivers
        started = time.perf_counter()
        timer = asyncio.create_task(self._timer(stop)) if self._duration else None
        try:
            outcomes = await asyncio.gather(
                *(driver.run(stop) for driver in drivers), return_exceptions=True
            )
        finally:
            stop.set()
            if timer is not None:
                timer.cancel()
        elapsed = time.perf_counter() - started
        total = Tally()
        results: list[VehicleResult] = []
        for member, driver, outcome in zip(self._members, drivers, outcomes, strict=True):
            tally = driver.tally
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancellation and exits are not a vehicle's outcome
                tally.ends[f"error:{type(outcome).__name__}"] += 1
            total.merge(tally)
            results.append(
                VehicleResult(
                    member.label,
                    member.credentials.device_id,
                    member.credentials.vehicle_id,
                    member.fault,
                    tally,
                )
            )
        return FleetReport(tuple(results), total, elapsed)

    def _driver(self, n: int, member: FleetMember, gate: asyncio.Semaphore) -> VehicleDriver:
        # The foreign fault names the next vehicle of the fleet: a real, other vehicle.
        other = self._members[(n + 1) % len(self._members)]
        return VehicleDriver(
            SimVehicle(seed=self._seed * 1_000_003 + n, garaged=member.garaged),
            member.credentials,
            self._transport,
            self._config,
            clock=self._clock,
            fault=member.fault,
            foreign_vehicle_id=(
                other.credentials.vehicle_id if other is not member else STRANGER_VEHICLE_ID
            ),
            connect_gate=gate,
        )

    async def _timer(self, stop: asyncio.Event) -> None:
        if self._duration is not None:
            await asyncio.sleep(self._duration)
        stop.set()
