"""Every decision can become an audit event: ids and codes only. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from fleetward.audit.events import ActorType
from fleetward.audit.events import Decision as AuditVerdict
from fleetward.audit.models import AuditRecord
from fleetward.authz.decision import (
    AUTHZ_DECISION_MADE,
    Decision,
    Obligation,
    PrincipalKind,
    PrincipalRef,
    Reason,
    audit_decision,
)
from fleetward.authz.permissions import Permission
from fleetward.services import ServiceContext
from unit.authz.fakes import ALICE, request

VERSION = "a" * 64


async def test_decisions_are_recorded(ctx: ServiceContext) -> None:
    allowed = Decision(True, Reason.OWNER, VERSION, ("owner",))
    denied = Decision.deny(Reason.STEP_UP_REQUIRED, VERSION, ("step-up-required",))
    partner = PrincipalRef(PrincipalKind.PARTNER, "insureco-app")
    partner_allowed = Decision(
        True,
        Reason.PARTNER_CONSENT,
        VERSION,
        ("partner-consent",),
        frozenset({Obligation.MINIMISE_FIELDS}),
    )
    audit_decision(ctx.audit, ctx.session, request(ALICE, Permission.VEHICLE_LOCK), allowed)
    audit_decision(ctx.audit, ctx.session, request(ALICE, Permission.VEHICLE_UNLOCK), denied)
    audit_decision(
        ctx.audit, ctx.session, request(partner, Permission.VEHICLE_READ_STATUS), partner_allowed
    )
    await ctx.session.flush()

    rows = (
        await ctx.session.scalars(
            select(AuditRecord)
            .where(AuditRecord.name == AUTHZ_DECISION_MADE.value)
            .order_by(AuditRecord.seq)
        )
    ).all()
    assert [(r.actor_type, r.actor_id, r.decision, r.reason) for r in rows] == [
        (ActorType.USER, ALICE.id, AuditVerdict.ALLOWED, "owner"),
        (ActorType.USER, ALICE.id, AuditVerdict.DENIED, "step-up-required"),
        (ActorType.PARTNER, "insureco-app", AuditVerdict.ALLOWED, "partner-consent"),
    ]
    assert AUTHZ_DECISION_MADE.value == "authz:decision:made"
    assert rows[0].object_type == "vehicle"
    assert rows[0].object_id == "veh_car"
    assert rows[1].details == {
        "permission": "vehicle:unlock",
        "policy_version": VERSION,
        "policy_ids": ["step-up-required"],
        "obligations": [],
    }
    assert rows[2].details["obligations"] == ["minimise-fields"]
