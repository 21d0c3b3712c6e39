"""A small, deterministic vehicle history for the demo world: trips, charging sessions and
diagnostic reports (coordinates made up).

Every relationship of the demo world starts when the world is seeded, so the history is laid
out around that instant to show the rule that history belongs to whoever had the vehicle at
the time: records dated BEFORE the seed (for DAVE-1, carol's trips before she sold it) are
visible to no owner, driver, fleet or partner; records dated AT the seed (a report on
registration, a charging session under way) are visible to the vehicle's current keeper,
and to insureco for ALICE-1's charging. Engineers see every report, pseudonymised.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from fleetward.core.ids import new_id
from fleetward.services import ServiceContext
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.records import (
    ChargerKind,
    ChargingSession,
    DiagnosticReport,
    DiagnosticSource,
    Trip,
)

# label -> (a made-up home latitude, longitude). Only these vehicles get a history.
HOMES: Final[dict[str, tuple[float, float]]] = {
    "ALICE-1": (42.3314, -83.0458),
    "DAVE-1": (41.8781, -87.6298),
    "ACME-N1": (44.9778, -93.2650),
    "ACME-S1": (29.7604, -95.3698),
    "GLOBEX-1": (52.5200, 13.4050),
}
# (days before the seed, minutes long, km, kWh); all before the seed: pre-sale for DAVE-1.
PAST_TRIPS: Final = ((9, 35, 24.5, 4.1), (2, 18, 11.2, 2.0))
OLD_SOFTWARE: Final = "2026.10.2"
SOFTWARE: Final = "2026.11.1"


def _trips(vehicle: Vehicle, now: datetime, home: tuple[float, float]) -> list[Trip]:
    trips = []
    for n, (days, minutes, km, kwh) in enumerate(PAST_TRIPS, start=1):
        started = now - timedelta(days=days, hours=n)
        trips.append(
            Trip(
                id=new_id("trp"),
                vehicle_id=vehicle.id,
                started_at=started,
                ended_at=started + timedelta(minutes=minutes),
                distance_km=km,
                energy_kwh=kwh,
                start_latitude=home[0],
                start_longitude=home[1],
                end_latitude=round(home[0] + 0.05 * n, 4),
                end_longitude=round(home[1] - 0.07 * n, 4),
            )
        )
    return trips


def _charging(vehicle: Vehicle, now: datetime) -> list[ChargingSession]:
    started = now - timedelta(days=3, hours=7)
    return [
        ChargingSession(
            id=new_id("chg"),
            vehicle_id=vehicle.id,
            started_at=started,
            ended_at=started + timedelta(hours=6),
            energy_kwh=38.5,
            start_soc_percent=22.0,
            end_soc_percent=80.0,
            charger_kind=ChargerKind.AC,
        ),
        # Under way when the world is seeded: the current keeper's.
        ChargingSession(
            id=new_id("chg"),
            vehicle_id=vehicle.id,
            started_at=now,
            ended_at=None,
            energy_kwh=0.0,
            start_soc_percent=41.0,
            end_soc_percent=None,
            charger_kind=ChargerKind.DC,
        ),
    ]


def _diagnostics(vehicle: Vehicle, now: datetime) -> list[DiagnosticReport]:
    return [
        DiagnosticReport(
            id=new_id("dgr"),
            vehicle_id=vehicle.id,
            created_at=now - timedelta(days=20),
            source=DiagnosticSource.VEHICLE,
            software_version=OLD_SOFTWARE,
            trouble_codes=["P0420"],
            summary="catalyst efficiency below threshold (bank 1)",
        ),
        # The report the vehicle sent on registration.
        DiagnosticReport(
            id=new_id("dgr"),
            vehicle_id=vehicle.id,
            created_at=now,
            source=DiagnosticSource.VEHICLE,
            software_version=SOFTWARE,
            trouble_codes=["U0100"] if vehicle.label == "ALICE-1" else [],
            summary="lost communication with the engine control module"
            if vehicle.label == "ALICE-1"
            else "no fault",
        ),
    ]


async def seed_history(ctx: ServiceContext, vehicles: dict[str, Vehicle]) -> None:
    """Add the demo history of the vehicles in :data:`HOMES` (in the seed's transaction)."""
    now = ctx.clock.now()
    for label, home in HOMES.items():
        vehicle = vehicles[label]
        ctx.session.add_all(_trips(vehicle, now, home))
        ctx.session.add_all(_charging(vehicle, now))
        ctx.session.add_all(_diagnostics(vehicle, now))
    await ctx.session.flush()


__all__ = ["HOMES", "seed_history"]
