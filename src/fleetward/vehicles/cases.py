"""Dealer service cases (with assigned technicians) and support cases (with an agent)."""

from __future__ import annotations

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.ids import new_id
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.services import ServiceContext
from fleetward.store.races import written_if
from fleetward.vehicles.errors import CaseNotOpen, RelationshipRefused
from fleetward.vehicles.models import CaseStatus, CaseTechnician, DealerCase, SupportCase, Vehicle


class CaseService:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def open_dealer_case(
        self, dealer: Tenant, vehicle: Vehicle, summary: str, *, actor: Actor
    ) -> DealerCase:
        if dealer.kind is not TenantKind.DEALER:
            raise RelationshipRefused("only dealers open service cases", reason="tenant")
        case = DealerCase(
            id=new_id("dcs"),
            dealer_tenant_id=dealer.id,
            vehicle_id=vehicle.id,
            status=CaseStatus.OPEN,
            summary=summary,
            opened_at=self._ctx.clock.now(),
            closed_at=None,
        )
        self._ctx.session.add(case)
        self._ctx.audit.record(
            self._ctx.session,
            EventName.DEALER_CASE_OPENED,
            actor=actor,
            target=Target("dealer_case", case.id, dealer.id),
            details={"vehicle": vehicle.id},
        )
        await self._ctx.session.flush()
        return case

    async def assign_technician(
        self, case: DealerCase, technician: User, *, actor: Actor
    ) -> CaseTechnician:
        if case.status is not CaseStatus.OPEN:
            raise CaseNotOpen("technicians are assigned to open cases only")
        directory = Directory(self._ctx)
        dealer = await directory.tenant_by_id(case.dealer_tenant_id)
        if Role.DEALER_TECHNICIAN not in await directory.active_roles(technician, dealer):
            raise RelationshipRefused("not a technician of this dealer", reason="role")
        link = CaseTechnician(
            id=new_id("dct"),
            case_id=case.id,
            user_id=technician.id,
            valid_from=self._ctx.clock.now(),
            valid_until=None,
        )
        self._ctx.session.add(link)
        self._ctx.audit.record(
            self._ctx.session,
            EventName.DEALER_TECHNICIAN_ASSIGNED,
            actor=actor,
            target=Target("dealer_case", case.id, dealer.id),
            details={"technician": technician.id},
        )
        await self._ctx.session.flush()
        return link

    async def close_dealer_case(self, case: DealerCase, *, actor: Actor) -> None:
        """Close an open case (CaseNotOpen otherwise). A conditional UPDATE: a close that
        committed after this request read the case open is kept as it was (its time), and
        this one is refused, so a case is closed, and audited as closed, once."""
        if case.status is not CaseStatus.OPEN:
            raise CaseNotOpen("the case is already closed")
        if not await written_if(
            self._ctx.session,
            case,
            DealerCase.status == CaseStatus.OPEN,
            status=CaseStatus.CLOSED,
            closed_at=self._ctx.clock.now(),
        ):
            raise CaseNotOpen("the case is already closed")
        self._ctx.audit.record(
            self._ctx.session,
            EventName.DEALER_CASE_CLOSED,
            actor=actor,
            target=Target("dealer_case", case.id, case.dealer_tenant_id),
        )
        await self._ctx.session.flush()

    async def open_support_case(
        self,
        agent: User,
        subject: User,
        summary: str,
        *,
        actor: Actor,
        vehicle: Vehicle | None = None,
    ) -> SupportCase:
        directory = Directory(self._ctx)
        home = await directory.tenant_by_id(agent.home_tenant_id)
        if (
            home.kind is not TenantKind.OPERATOR
            or Role.SUPPORT_AGENT not in await directory.active_roles(agent, home)
        ):
            raise RelationshipRefused("only support agents are assigned cases", reason="role")
        case = SupportCase(
            id=new_id("scs"),
            agent_user_id=agent.id,
            subject_user_id=subject.id,
            vehicle_id=vehicle.id if vehicle else None,
            status=CaseStatus.OPEN,
            summary=summary,
            opened_at=self._ctx.clock.now(),
            closed_at=None,
        )
        self._ctx.session.add(case)
        self._ctx.audit.record(
            self._ctx.session,
            EventName.SUPPORT_CASE_OPENED,
            actor=actor,
            target=Target("support_case", case.id, home.id),
            details={"agent": agent.id, "subject": subject.id},
        )
        await self._ctx.session.flush()
        return case

    async def close_support_case(self, case: SupportCase, *, actor: Actor) -> None:
        """Close an open case (CaseNotOpen otherwise), by a conditional UPDATE as for a
        dealer case: a close racing another is refused, and the case is audited closed once."""
        if case.status is not CaseStatus.OPEN:
            raise CaseNotOpen("the case is already closed")
        if not await written_if(
            self._ctx.session,
            case,
            SupportCase.status == CaseStatus.OPEN,
            status=CaseStatus.CLOSED,
            closed_at=self._ctx.clock.now(),
        ):
            raise CaseNotOpen("the case is already closed")
        self._ctx.audit.record(
            self._ctx.session,
            EventName.SUPPORT_CASE_CLOSED,
            actor=actor,
            target=Target("support_case", case.id),
        )
        await self._ctx.session.flush()
