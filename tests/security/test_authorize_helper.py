"""The route helper's bookkeeping: a refusal after an allow in the same request neither waits
for the route's own transaction (SQLite's single writer) nor loses the allow's record; an
allow carrying an obligation the route does not declare is refused on every path."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from sqlalchemy import select
from starlette.requests import Request

from fleetward.api.auth import Caller
from fleetward.api.authorize import NotPermitted, ObjectNotFound, authorize, decide_many
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.authz.decision import AuthzRequest, Decision, Obligation, Reason, ResourceRef
from fleetward.authz.entities import Relations, SessionRelations, StoreRelations
from fleetward.authz.pdp import CedarPdp
from fleetward.authz.permissions import Permission
from fleetward.core.surfaces import Surface
from fleetward.store.busy import StoreBusy
from support.api import Api, obliged


def _request(api: Api) -> Request:
    app = api.client._transport.app  # type: ignore[attr-defined]
    return Request({"type": "http", "app": app, "headers": [], "method": "GET", "path": "/"})


async def _caller(api: Api, who: str) -> Caller:
    token = api.token(who, Surface.MOBILE)
    claims = await api.platform.identity.validator.validate(token, surface=Surface.MOBILE)
    return Caller(claims=claims, surface=Surface.MOBILE, dpop_jkt=None)


async def test_a_refusal_after_an_allow_records_both_at_once(api: Api) -> None:
    request = _request(api)
    caller = await _caller(api, "alice")
    mine = ResourceRef.vehicle(api.vehicle_id("ALICE-1"))
    theirs = ResourceRef.vehicle(api.vehicle_id("MALLORY-1"))
    async with api.platform.services() as (_, ctx):
        await authorize(request, caller, Permission.VEHICLE_READ_STATUS, mine, ctx=ctx)
        await ctx.session.flush()  # the route has written: its transaction holds the lock
        with pytest.raises(ObjectNotFound):
            # Bounded: a wait on the route's own write lock would hit SQLite's busy timeout.
            await asyncio.wait_for(
                authorize(request, caller, Permission.VEHICLE_READ_STATUS, theirs, ctx=ctx),
                timeout=30,
            )
    async with api.platform.services() as (_, ctx):
        rows = list(
            await ctx.session.scalars(
                select(AuditRecord).where(
                    AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value,
                    AuditRecord.object_id.in_([mine.id, theirs.id]),
                )
            )
        )
    assert sorted((r.object_id, r.decision.value) for r in rows) == sorted(
        [(mine.id, "allowed"), (theirs.id, "denied")]
    )


async def test_a_decision_cut_off_by_its_deadline_is_store_busy_on_both_paths(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Bound to the route's transaction or reading in its own sessions, a decision the PDP
    # could not make in time is no denial: the caller is told to retry (503), not that the
    # object does not exist, and no decision is recorded.
    request = _request(api)
    caller = await _caller(api, "alice")
    mine = ResourceRef.vehicle(api.vehicle_id("ALICE-1"))

    async def cut_off(*_args: object) -> Relations:
        raise TimeoutError  # what the PDP's deadline raises inside the relations' read

    monkeypatch.setattr(SessionRelations, "relations", cut_off)
    monkeypatch.setattr(StoreRelations, "relations", cut_off)
    async with api.platform.services() as (_, ctx):
        with pytest.raises(StoreBusy):
            await authorize(request, caller, Permission.VEHICLE_READ_STATUS, mine, ctx=ctx)
    with pytest.raises(StoreBusy):
        await authorize(request, caller, Permission.VEHICLE_READ_STATUS, mine)
    async with api.platform.services() as (_, ctx):
        recorded = await ctx.session.scalar(
            select(AuditRecord.id).where(
                AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value,
                AuditRecord.object_id == mine.id,
            )
        )
    assert recorded is None


async def test_an_obligation_the_route_does_not_declare_is_refused_on_every_path(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # authorize (in the route's transaction or not) and decide_many hand back only what the
    # route applies: an allow carrying another obligation is the route's usual refusal (404
    # on an object, 403 on a function) or a deny in the list; declared, it is the allow.
    request = _request(api)
    caller = await _caller(api, "alice")
    mine = ResourceRef.vehicle(api.vehicle_id("ALICE-1"))
    status = Permission.VEHICLE_READ_STATUS
    obliged(monkeypatch, Obligation.MINIMISE_FIELDS)
    decide = CedarPdp.decide

    async def with_obligation(self: CedarPdp, ask: AuthzRequest) -> Decision:
        decision = await decide(self, ask)
        return replace(decision, obligations=frozenset({Obligation.MINIMISE_FIELDS}))

    monkeypatch.setattr(CedarPdp, "decide", with_obligation)
    async with api.platform.services() as (_, ctx):
        with pytest.raises(ObjectNotFound):
            await authorize(request, caller, status, mine, ctx=ctx)
        with pytest.raises(NotPermitted):
            await authorize(request, caller, status, mine, object_route=False, ctx=ctx)
        (listed,) = await decide_many(request, caller, status, [mine], ctx=ctx)
        assert (listed.allowed, listed.reason) == (False, Reason.OBLIGATION_NOT_APPLIED)
        applies = frozenset({Obligation.MINIMISE_FIELDS})
        kept = await authorize(request, caller, status, mine, ctx=ctx, applies=applies)
        assert kept.obligations == applies
        (listed,) = await decide_many(request, caller, status, [mine], ctx=ctx, applies=applies)
        assert listed.allowed
    with pytest.raises(ObjectNotFound):
        await authorize(request, caller, status, mine)
    kept = await authorize(request, caller, status, mine, applies=applies)
    assert kept.obligations == applies
