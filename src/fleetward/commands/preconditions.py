"""Vehicle-state preconditions, judged on the latest trusted telemetry and never assumed.

Only accepted telemetry counts (quarantined data lives in another table). When the latest
state is older than ``max_age`` (or there is none), the platform does not guess: the job is
queued with the check deferred to the vehicle, which applies the same rule to its own current
state when the envelope arrives (``docs/vehicle-protocol.md`` 6) and refuses if it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.commands.families import CABLE, SPEED, WALKING_SPEED_KMH, Needs
from fleetward.telemetry.models import TelemetryMessage


class Outcome(StrEnum):
    MET = "met"
    NOT_MET = "not-met"
    DEFERRED = "deferred-to-vehicle"


@dataclass(frozen=True, slots=True)
class StateCheck:
    outcome: Outcome
    detail: str


async def latest_state(
    session: AsyncSession, vehicle_id: str
) -> tuple[datetime, dict[str, Any]] | None:
    row = (
        await session.execute(
            select(TelemetryMessage.device_time, TelemetryMessage.signals)
            .where(TelemetryMessage.vehicle_id == vehicle_id)
            .order_by(TelemetryMessage.device_time.desc(), TelemetryMessage.sequence.desc())
            .limit(1)
        )
    ).first()
    return None if row is None else (row[0], dict(row[1]))


def judge(
    needs: Needs, state: tuple[datetime, dict[str, Any]] | None, now: datetime, max_age: timedelta
) -> StateCheck:
    if state is None:
        return StateCheck(Outcome.DEFERRED, "no reported state")
    at, signals = state
    if now - at > max_age:
        return StateCheck(Outcome.DEFERRED, "state-stale")
    if needs is Needs.PLUGGED_IN:
        cable = signals.get(CABLE)
        if cable is None:
            return StateCheck(Outcome.DEFERRED, "cable state not reported")
        return StateCheck(Outcome.MET, "plugged-in") if cable is True else _no("not-plugged-in")
    speed = signals.get(SPEED)
    if not isinstance(speed, int | float) or isinstance(speed, bool):
        return StateCheck(Outcome.DEFERRED, "speed not reported")
    if needs is Needs.WALKING_SPEED:
        return (
            StateCheck(Outcome.MET, "at or below walking speed")
            if speed <= WALKING_SPEED_KMH
            else _no("above-walking-speed")
        )
    return StateCheck(Outcome.MET, "stationary") if speed == 0 else _no("moving")


def _no(reason: str) -> StateCheck:
    return StateCheck(Outcome.NOT_MET, reason)
