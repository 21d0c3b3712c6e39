"""Service appointments: a vehicle's keeper books a slot with a dealer, may cancel it while it
is open, and the dealer confirms it. Once its time has come it no longer changes.

Authorization is the caller's (the route asks the PDP for ``vehicle:book_service`` on the
vehicle, or ``dealer:manage_case`` on the dealer's own tenant); this service holds the rules
of the thing itself: the dealer is a dealer, the date is ahead and not too far, the note is
short and printable, and only open appointments whose time is still ahead change state.
Every refusal changes nothing; every change is audited in the same transaction.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import select, update
from sqlalchemy.orm.exc import StaleDataError

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import Conflict, InvalidInput
from fleetward.core.ids import is_id, new_id
from fleetward.core.text import is_printable_text
from fleetward.identity.models import Tenant, TenantKind
from fleetward.services import ServiceContext
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.records import AppointmentStatus, ServiceAppointment

MAX_AHEAD: Final = timedelta(days=180)
MAX_NOTE: Final = 500
OPEN_STATUSES: Final = frozenset({AppointmentStatus.REQUESTED, AppointmentStatus.CONFIRMED})
_TARGET: Final = "service_appointment"
# Line breaks and tabs are text; every other control character is refused.
_TEXT_CONTROLS: Final = frozenset("\n\r\t")


class AppointmentRefused(InvalidInput):
    code = "appointment-refused"
    title = "Appointment refused"


class AppointmentStateConflict(Conflict):
    code = "appointment-state"
    title = "Appointment cannot change"


def check_note(note: str) -> None:
    if len(note) > MAX_NOTE:
        raise AppointmentRefused(f"the note may hold at most {MAX_NOTE} characters", reason="note")
    if not is_printable_text(note, also=_TEXT_CONTROLS):
        raise AppointmentRefused("the note holds control characters", reason="note")


def check_schedule(scheduled_for: datetime, now: datetime) -> None:
    if scheduled_for.tzinfo is None:
        raise AppointmentRefused("the time must carry a time zone", reason="naive")
    if scheduled_for <= now:
        raise AppointmentRefused("the appointment must be in the future", reason="past")
    if scheduled_for > now + MAX_AHEAD:
        raise AppointmentRefused(
            f"the appointment may be at most {MAX_AHEAD.days} days ahead", reason="too-far"
        )


class AppointmentService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def dealer(self, dealer_id: str) -> Tenant:
        """The dealer tenant named by ``dealer_id``. An unknown id, another kind of tenant and
        a disabled dealer answer the same, so the body cannot probe the tenant directory."""
        tenant = await self._ctx.session.get(Tenant, dealer_id) if is_id(dealer_id, "ten") else None
        if tenant is None or tenant.kind is not TenantKind.DEALER or tenant.disabled_at:
            raise AppointmentRefused("dealer_id does not name a dealer", reason="dealer")
        return tenant

    async def book(
        self,
        vehicle: Vehicle,
        *,
        dealer_id: str,
        scheduled_for: datetime,
        note: str,
        booked_by: str,
        actor: Actor,
    ) -> ServiceAppointment:
        now = self._ctx.clock.now()
        check_note(note)
        check_schedule(scheduled_for, now)
        dealer = await self.dealer(dealer_id)
        appointment = ServiceAppointment(
            id=new_id("apt"),
            vehicle_id=vehicle.id,
            dealer_tenant_id=dealer.id,
            booked_by_user_id=booked_by,
            scheduled_for=scheduled_for,
            status=AppointmentStatus.REQUESTED,
            note=note,
            created_at=now,
            updated_at=now,
        )
        self._ctx.session.add(appointment)
        self._record(EventName.APPOINTMENT_BOOKED, appointment, vehicle.tenant_id, actor)
        await self._ctx.session.flush()
        return appointment

    async def cancel(
        self, appointment: ServiceAppointment, *, tenant_id: str, actor: Actor
    ) -> ServiceAppointment:
        """Cancel a requested or confirmed appointment still ahead (409 for any other)."""
        if appointment.status not in OPEN_STATUSES:
            raise AppointmentStateConflict(
                "only a requested or confirmed appointment can be cancelled", reason="status"
            )
        self._refuse_past(appointment)
        return await self._move(
            appointment,
            AppointmentStatus.CANCELLED,
            EventName.APPOINTMENT_CANCELLED,
            tenant_id,
            actor,
        )

    async def confirm(self, appointment: ServiceAppointment, *, actor: Actor) -> ServiceAppointment:
        """The dealer confirms a requested appointment still ahead (409 for any other)."""
        if appointment.status is not AppointmentStatus.REQUESTED:
            raise AppointmentStateConflict(
                "only a requested appointment can be confirmed", reason="status"
            )
        self._refuse_past(appointment)
        return await self._move(
            appointment,
            AppointmentStatus.CONFIRMED,
            EventName.APPOINTMENT_CONFIRMED,
            appointment.dealer_tenant_id,
            actor,
        )

    async def cancel_open(self, vehicle: Vehicle, *, actor: Actor, reason: str) -> int:
        """Cancel every open appointment of ``vehicle`` (its keeper changed): each was booked
        in the former keeper's name, and nobody who may act on the car could see or cancel
        it any more. One conditional UPDATE (a move racing it finds the status changed);
        each cancel is audited as the booker's own would be."""
        now = self._ctx.clock.now()
        session = self._ctx.session
        cancelled = await session.execute(
            update(ServiceAppointment)
            .where(
                ServiceAppointment.vehicle_id == vehicle.id,
                ServiceAppointment.status.in_(OPEN_STATUSES),
            )
            .values(status=AppointmentStatus.CANCELLED, updated_at=now)
            .returning(
                ServiceAppointment.id,
                ServiceAppointment.dealer_tenant_id,
                ServiceAppointment.status,
            )
            .execution_options(synchronize_session=False)
        )
        rows = cancelled.all()
        for appointment_id, dealer_id, status in rows:
            self._ctx.audit.record(
                session,
                EventName.APPOINTMENT_CANCELLED,
                actor=actor,
                target=Target(_TARGET, appointment_id, vehicle.tenant_id),
                reason=reason,
                details={"vehicle": vehicle.id, "dealer": dealer_id, "status": status.value},
            )
        return len(rows)

    async def with_dealer(self, appointment_id: str, dealer_id: str) -> ServiceAppointment | None:
        """The appointment, only when it is booked with ``dealer_id`` (else as if missing)."""
        found: ServiceAppointment | None = await self._ctx.session.scalar(
            select(ServiceAppointment).where(
                ServiceAppointment.id == appointment_id,
                ServiceAppointment.dealer_tenant_id == dealer_id,
            )
        )
        return found

    def _refuse_past(self, appointment: ServiceAppointment) -> None:
        """Once its time has come, an appointment is what it was then: the visit happened or
        did not. Confirming it would promise a slot that is gone, cancelling it would record
        a missed visit as cancelled (409 ``past``, nothing changed)."""
        if appointment.scheduled_for <= self._ctx.clock.now():
            raise AppointmentStateConflict(
                "the appointment's time has passed; it can no longer change", reason="past"
            )

    async def _move(
        self,
        appointment: ServiceAppointment,
        status: AppointmentStatus,
        event: EventName,
        tenant_id: str,
        actor: Actor,
    ) -> ServiceAppointment:
        previous = appointment.status
        appointment.status = status
        appointment.updated_at = self._ctx.clock.now()
        self._record(event, appointment, tenant_id, actor, previous=previous)
        try:
            await self._ctx.session.flush()
        except StaleDataError:
            raise AppointmentStateConflict(
                "the appointment changed meanwhile; ask again", reason="changed"
            ) from None
        return appointment

    def _record(
        self,
        event: EventName,
        appointment: ServiceAppointment,
        tenant_id: str,
        actor: Actor,
        *,
        previous: AppointmentStatus | None = None,
    ) -> None:
        details: dict[str, str | None] = {
            "vehicle": appointment.vehicle_id,
            "dealer": appointment.dealer_tenant_id,
            "status": appointment.status.value,
        }
        if previous is not None:
            details["previous"] = previous.value
        self._ctx.audit.record(
            self._ctx.session,
            event,
            actor=actor,
            target=Target(_TARGET, appointment.id, tenant_id),
            details=details,
        )


__all__ = [
    "MAX_AHEAD",
    "MAX_NOTE",
    "OPEN_STATUSES",
    "AppointmentRefused",
    "AppointmentService",
    "AppointmentStateConflict",
    "check_note",
    "check_schedule",
]
