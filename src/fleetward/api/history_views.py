"""What the history routes show (fleetward.api.history): one view per audience.

Field sets are fixed per view, never computed from the decision, so a policy change can never
widen what an audience receives: partners get minimised views, engineers pseudonymised ones,
and trip coordinates are set only when the caller may read the location (the routes serialise
with ``exclude_unset``, so an unset coordinate is absent, not ``null``).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime
from typing import Any, Final

from pydantic import BaseModel

from fleetward.commands.chain import Link
from fleetward.commands.models import CommandJob, JobTransition
from fleetward.core.datakey import DataKey
from fleetward.vehicles.records import ChargingSession, DiagnosticReport, Trip

# HKDF purpose of the key that pseudonymises vehicle ids for engineers; changing it changes
# every pseudonym (a deliberate break of linkability, e.g. per data-retention period).
PSEUDONYM_PURPOSE: Final = "fleetward:diagnostics-pseudonym:v1"
_PSEUDONYM_PREFIX: Final = "psv_"
# What a bulk job's chain shows of its approver to everyone but the approver: the job view
# never says who else acted (the stored chain and the audit keep the user id).
APPROVER_SHOWN: Final = "second fleet admin"


class TripView(BaseModel):
    id: str
    started_at: datetime
    ended_at: datetime
    distance_km: float
    energy_kwh: float | None
    # Location history: present only with vehicle:read_location as well.
    start_latitude: float | None = None
    start_longitude: float | None = None
    end_latitude: float | None = None
    end_longitude: float | None = None


class PartnerTripView(BaseModel):
    id: str
    started_at: datetime
    ended_at: datetime
    distance_km: float


class ChargingView(BaseModel):
    id: str
    started_at: datetime
    ended_at: datetime | None
    energy_kwh: float
    start_soc_percent: float
    end_soc_percent: float | None
    charger_kind: str


class PartnerChargingView(BaseModel):
    id: str
    started_at: datetime
    ended_at: datetime | None
    energy_kwh: float
    charger_kind: str


class DiagnosticView(BaseModel):
    id: str
    created_at: datetime
    source: str
    software_version: str
    trouble_codes: list[str]
    summary: str


class PseudonymousDiagnosticView(BaseModel):
    """No vehicle id, VIN, label, owner or free text: a keyed pseudonym and technical facts."""

    vehicle: str
    model: str
    software_version: str
    trouble_codes: list[str]
    created_at: datetime


class TransitionView(BaseModel):
    from_state: str | None
    to_state: str
    at: datetime
    reason: str


class JobView(BaseModel):
    id: str
    command: str
    state: str
    parameters: dict[str, Any]
    created_at: datetime
    expires_at: datetime
    updated_at: datetime
    # Whether the caller asked for it: never who else did.
    requested_by_me: bool
    # The link of the authorization chain that rejected the job, if one did.
    rejected_link: str | None = None


class ChainLinkView(BaseModel):
    link: str
    ok: bool
    detail: str


class JobDetail(JobView):
    transitions: list[TransitionView]
    chain: list[ChainLinkView] = []
    delivered_at: datetime | None = None
    # The vehicle's own word (signed): "ok", or why it refused or failed.
    result_reason: str | None = None
    finished_at: datetime | None = None


def trip_view(trip: Trip, with_places: bool) -> TripView:
    view = TripView(
        id=trip.id,
        started_at=trip.started_at,
        ended_at=trip.ended_at,
        distance_km=trip.distance_km,
        energy_kwh=trip.energy_kwh,
    )
    if with_places:
        view = TripView(
            **view.model_dump(exclude_unset=True),
            start_latitude=trip.start_latitude,
            start_longitude=trip.start_longitude,
            end_latitude=trip.end_latitude,
            end_longitude=trip.end_longitude,
        )
    return view


def partner_trip_view(trip: Trip) -> PartnerTripView:
    return PartnerTripView(
        id=trip.id, started_at=trip.started_at, ended_at=trip.ended_at, distance_km=trip.distance_km
    )


def charging_view(charge: ChargingSession) -> ChargingView:
    return ChargingView(
        id=charge.id,
        started_at=charge.started_at,
        ended_at=charge.ended_at,
        energy_kwh=charge.energy_kwh,
        start_soc_percent=charge.start_soc_percent,
        end_soc_percent=charge.end_soc_percent,
        charger_kind=charge.charger_kind.value,
    )


def partner_charging_view(charge: ChargingSession) -> PartnerChargingView:
    return PartnerChargingView(
        id=charge.id,
        started_at=charge.started_at,
        ended_at=charge.ended_at,
        energy_kwh=charge.energy_kwh,
        charger_kind=charge.charger_kind.value,
    )


def diagnostic_view(report: DiagnosticReport) -> DiagnosticView:
    return DiagnosticView(
        id=report.id,
        created_at=report.created_at,
        source=report.source.value,
        software_version=report.software_version,
        trouble_codes=list(report.trouble_codes),
        summary=report.summary,
    )


def pseudonym_key(data_key: DataKey) -> bytes:
    return data_key.derive(PSEUDONYM_PURPOSE)


def pseudonym(key: bytes, vehicle_id: str) -> str:
    """A stable keyed pseudonym (HMAC-SHA256, 128 bits shown): the same vehicle always maps to
    the same value, and without the platform data key it cannot be reversed or recomputed."""
    digest = hmac.new(key, vehicle_id.encode("utf-8"), hashlib.sha256).hexdigest()
    return _PSEUDONYM_PREFIX + digest[:32]


def pseudonymous_view(
    key: bytes, report: DiagnosticReport, model: str
) -> PseudonymousDiagnosticView:
    return PseudonymousDiagnosticView(
        vehicle=pseudonym(key, report.vehicle_id),
        model=model,
        software_version=report.software_version,
        trouble_codes=list(report.trouble_codes),
        created_at=report.created_at,
    )


def transition_view(transition: JobTransition) -> TransitionView:
    return TransitionView(
        from_state=transition.from_state.value if transition.from_state is not None else None,
        to_state=transition.to_state.value,
        at=transition.at,
        reason=transition.reason,
    )


def job_view(job: CommandJob, caller_sub: str) -> JobView:
    return JobView(
        id=job.id,
        command=job.command,
        state=job.state.value,
        parameters=dict(job.parameters),
        created_at=job.created_at,
        expires_at=job.expires_at,
        updated_at=job.updated_at,
        requested_by_me=job.requested_by == caller_sub,
        rejected_link=job.rejected_link,
    )


def job_detail(job: CommandJob, caller_sub: str, transitions: list[JobTransition]) -> JobDetail:
    return JobDetail(
        **job_view(job, caller_sub).model_dump(),
        transitions=[transition_view(t) for t in transitions],
        chain=[chain_link_view(c, caller_sub) for c in job.chain or []],
        delivered_at=job.delivered_at,
        result_reason=job.result_reason,
        finished_at=job.finished_at,
    )


def chain_link_view(link: dict[str, Any], caller_sub: str) -> ChainLinkView:
    """One stored link as ``caller_sub`` sees it. The approval link's detail is the approving
    person's user id (``commands.bulk.prejudged``): shown only to that person."""
    detail = str(link["detail"])
    if link["link"] == Link.APPROVAL.value and detail != caller_sub:
        detail = APPROVER_SHOWN
    return ChainLinkView(link=str(link["link"]), ok=bool(link["ok"]), detail=detail)
