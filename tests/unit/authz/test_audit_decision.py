"""Every decision can become an audit event: ids and codes only. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from fleetward.audit.events import ActorType
from fleetward.audit.events import Decision as AuditVerdict
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import pending
from fleetward.authz import audited
from fleetward.authz.audited import decide_audited
from fleetward.authz.decision import (
    AUTHZ_DECISION_MADE,
    Decision,
    Obligation,
    PrincipalKind,
    PrincipalRef,
    Reason,
    audit_decision,
)
from fleetward.authz.pdp import CedarPdp, PdpConfig
from fleetward.authz.permissions import Permission
from fleetward.services import ServiceContext
from fleetward.store.busy import StoreBusy
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


async def test_a_decision_cut_off_by_its_deadline_is_a_retryable_refusal(
    ctx: ServiceContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under overload the relations' read can outlast the PDP's budget and is cut off in the
    # middle of a statement: the transaction can neither act nor record, so the request is
    # refused with a retryable 503 (store-busy) and nothing is written, never a deny that the
    # route would then try to commit (a 500).
    class Hanging:
        def __init__(self, _session: object) -> None:
            pass

        async def relations(self, *_args: object) -> None:
            await asyncio.Event().wait()

    monkeypatch.setattr(audited, "SessionRelations", Hanging)
    pdp = CedarPdp(Hanging(None), config=PdpConfig(timeout=timedelta(milliseconds=20)))
    with pytest.raises(StoreBusy):
        await decide_audited(pdp, ctx.session, ctx.audit, [request(ALICE, Permission.VEHICLE_LOCK)])
    assert not pending(ctx.session)
