"""The route helper's bookkeeping: a refusal after an allow in the same request neither waits
for the route's own transaction (SQLite's single writer) nor loses the allow's record."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from starlette.requests import Request

from fleetward.api.auth import Caller
from fleetward.api.authorize import ObjectNotFound, authorize
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.authz.decision import ResourceRef
from fleetward.authz.entities import Relations, SessionRelations, StoreRelations
from fleetward.authz.permissions import Permission
from fleetward.core.surfaces import Surface
from fleetward.store.busy import StoreBusy
from support.api import Api


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
