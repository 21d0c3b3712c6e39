"""Cloned-credential detection: one device identity in two places at once.

Two rules, both judged when a new session of a device is admitted:

* concurrent session: another session of the same device is live (it was heard from within
  the liveness window). A genuine TCU holds one session; one that lost its link waits out the
  liveness window after its last frame before reconnecting (``docs/vehicle-protocol.md``).
* peer changed: the new session comes from another network identity than the device's last
  one, and the device was heard from on the old one within the liveness window.

A session that has been silent for longer than the window is not evidence of a clone: it is
presumed dead and superseded by the new one. Presumed only: a parked car may stay quiet for
up to its idle timeout (120 s). So the superseded session is kept open under watch until its
idle deadline, and a message on it before then is a third finding, judged later:

* superseded session heard: the superseded session's TCU was alive, so the new session was
  opened by another holder of the key (recorded as a concurrent session, ``finding``
  ``superseded-session-heard``; :meth:`CloneRules.superseded_heard`). That session is then
  closed (4004: the newer one holds its place); the others go on as below.

The rules never look at anything the device says about itself. On a finding, the incident is
recorded (``device_incidents`` and the audit log) and the device is quarantined, in the
transaction that admits the session (for the third, in its own transaction). Quarantine
does not disconnect: the sessions go on, the pipeline sets their frames apart and keeps them
for investigation, and neither copy is told. An operator then decides: resume (a false
positive), or revoke and re-enrol (the key was copied). A device already quarantined gets
one more incident per finding, as evidence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import JsonValue
from fleetward.core.ids import new_id
from fleetward.devices.lifecycle import QUARANTINABLE, DeviceLifecycle
from fleetward.devices.models import Device, DeviceIncident, IncidentKind
from fleetward.devices.provisioning import on_vehicle
from fleetward.services import ServiceContext

DEFAULT_LIVENESS_WINDOW: Final = timedelta(seconds=30)
DETECTOR: Final = Actor.system("gateway:clone-detector")


@dataclass(frozen=True, slots=True)
class OtherSession:
    """A session of the same device already known to the gateway."""

    session_id: str
    peer: str
    last_activity: datetime


@dataclass(frozen=True, slots=True)
class Suspicion:
    kind: IncidentKind
    previous_peer: str | None
    other_sessions: tuple[str, ...]
    # Which rule found it, when the kind alone does not say (recorded in the details).
    finding: str | None = None

    @property
    def reason(self) -> str:
        """The quarantine's reason code, e.g. ``clone-concurrent-session``."""
        return "clone-" + self.kind.value.replace("_", "-")


@dataclass(frozen=True, slots=True)
class CloneRules:
    liveness_window: timedelta = DEFAULT_LIVENESS_WINDOW

    def live(self, other: OtherSession, now: datetime) -> bool:
        return now - other.last_activity < self.liveness_window

    def assess(
        self,
        *,
        peer: str,
        now: datetime,
        live_sessions: Sequence[OtherSession],
        last_peer: str | None,
        last_seen_at: datetime | None,
    ) -> Suspicion | None:
        if live_sessions:
            return Suspicion(
                IncidentKind.CONCURRENT_SESSION,
                live_sessions[0].peer,
                tuple(s.session_id for s in live_sessions),
            )
        if (
            last_peer is not None
            and last_seen_at is not None
            and last_peer != peer
            and now - last_seen_at < self.liveness_window
        ):
            return Suspicion(IncidentKind.PEER_CHANGED, last_peer, ())
        return None

    @staticmethod
    def superseded_heard(superseded_by: OtherSession) -> Suspicion:
        """A session superseded as silent was heard from again, after ``superseded_by`` took
        its place: two holders of the key were connected at once."""
        return Suspicion(
            IncidentKind.CONCURRENT_SESSION,
            superseded_by.peer,
            (superseded_by.session_id,),
            SUPERSEDED_SESSION_HEARD,
        )


SUPERSEDED_SESSION_HEARD: Final = "superseded-session-heard"


class CloneResponse:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def quarantine(
        self,
        device: Device,
        suspicion: Suspicion,
        *,
        peer: str,
        certificate_serial: str,
        session_id: str,
        tenant_id: str,
    ) -> DeviceIncident:
        other: list[JsonValue] = list(suspicion.other_sessions)
        details: dict[str, JsonValue] = {"session": session_id, "other_sessions": other}
        if suspicion.finding is not None:
            details["finding"] = suspicion.finding
        incident = DeviceIncident(
            id=new_id("din"),
            device_id=device.id,
            kind=suspicion.kind,
            detected_at=self._ctx.clock.now(),
            certificate_serial=certificate_serial,
            peer=peer,
            previous_peer=suspicion.previous_peer,
            details=details,
        )
        self._ctx.session.add(incident)
        record = self._ctx.audit.record(
            self._ctx.session,
            EventName.DEVICE_CLONE_DETECTED,
            actor=DETECTOR,
            target=Target("device", device.id, tenant_id),
            reason=suspicion.kind.value,
            details={
                "incident": incident.id,
                "peer": peer,
                "previous_peer": suspicion.previous_peer,
                "serial": certificate_serial,
                **details,
            },
        )
        on_vehicle(record, device.vehicle_id)
        if device.status in QUARANTINABLE:
            await DeviceLifecycle(self._ctx).quarantine(
                device,
                reason=suspicion.reason,
                actor=DETECTOR,
                details={"incident": incident.id},
            )
        await self._ctx.session.flush()
        return incident
