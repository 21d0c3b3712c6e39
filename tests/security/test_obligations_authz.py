"""Obligations over HTTP: an allow carrying an obligation the route does not apply is refused
(docs/authorization.md), by the route helper for every route, not route by route.

``support.api.obliged`` attaches an obligation to every allow, as a policy change adding one
to the permits would. A route that applies none (the default) must refuse it with its usual
answer; a route that declares the obligation still answers, with the obligation applied.
"""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.authz.decision import Obligation
from fleetward.commands.models import CommandJob
from fleetward.core.clock import FrozenClock
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.vehicles.records import (
    ChargerKind,
    ChargingSession,
    DiagnosticReport,
    DiagnosticSource,
)
from support.api import PARTNER_APP, Api, obliged

M, F, S, P, A = Surface.MOBILE, Surface.FLEET, Surface.SUPPORT, Surface.PARTNER, Surface.ADMIN


def _routes(api: Api) -> list[tuple[str, Surface, str, str, int]]:
    """(who, surface, method, path, refusal): routes that apply no obligation, each answering
    200 to its caller under today's policy."""
    case = api.world.support_cases["heidi"].id
    alice_1 = api.vehicle_id("ALICE-1")
    north = api.world.groups[("acme-logistics", "north")].id
    return [
        ("heidi", S, "GET", f"/cases/{case}", 404),  # support: read_case
        ("heidi", S, "GET", f"/cases/{case}/account", 404),  # support: read_account
        ("heidi", S, "GET", f"/cases/{case}/vehicles", 404),  # support: list_case_vehicles
        ("alice", M, "GET", f"/vehicles/{alice_1}/consents", 404),  # consents
        ("ken", A, "GET", "/ota/campaigns", 403),  # OTA: a function of the platform
        ("erin", F, "GET", f"/groups/{north}", 404),  # fleet: one group
        ("erin", F, "GET", "/groups", 403),  # fleet: the fleet's groups
    ]


async def _records(api: Api) -> tuple[str, str]:
    """A charging session and a diagnostic report on ALICE-1, dated after the consent."""
    clock = api.platform.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(hours=1))
    now = clock.now()
    vehicle_id = api.vehicle_id("ALICE-1")
    charge = ChargingSession(
        id=new_id("chg"),
        vehicle_id=vehicle_id,
        started_at=now,
        ended_at=now + timedelta(hours=1),
        energy_kwh=20.0,
        start_soc_percent=30.0,
        end_soc_percent=70.0,
        charger_kind=ChargerKind.DC,
    )
    report = DiagnosticReport(
        id=new_id("dgr"),
        vehicle_id=vehicle_id,
        created_at=now,
        source=DiagnosticSource.VEHICLE,
        software_version="2026.11.1",
        trouble_codes=["P0300"],
        summary="random misfire detected",
    )
    async with api.platform.services() as (uow, ctx):
        ctx.session.add_all([charge, report])
        await uow.commit()
    return charge.id, report.id


async def _allowed_with(api: Api, obligation: Obligation) -> int:
    """How many recorded decisions are allows carrying ``obligation``."""
    async with api.platform.services() as (_, ctx):
        rows = await ctx.session.scalars(
            select(AuditRecord).where(AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value)
        )
        return sum(
            1
            for r in rows
            if r.decision.value == "allowed"
            and obligation.value in (r.details or {}).get("obligations", [])
        )


async def _answers(api: Api, routes: list[tuple[str, Surface, str, str, int]]) -> list[int]:
    codes = []
    for who, surface, method, path, _ in routes:
        response = await api.client.request(
            method, f"/{surface.value}/v1{path}", headers=api.headers(who, surface)
        )
        codes.append(response.status_code)
    return codes


async def test_a_route_that_applies_no_obligation_refuses_an_allow_carrying_one(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Support cases, consents, OTA and fleet groups treated any allow as a plain allow: a
    # policy attaching minimise-fields to their permits would have been answered with the
    # full view (fail open). Each now gives its usual refusal, the PDP's allow still recorded
    # as it was given; the partner's charging history, which declares minimise-fields, still
    # answers with its minimised view, and the owner's, which applies none, refuses.
    charge, _ = await _records(api)
    alice_1 = api.vehicle_id("ALICE-1")
    routes = _routes(api)
    assert await _answers(api, routes) == [200] * len(routes)
    before = await _allowed_with(api, Obligation.MINIMISE_FIELDS)
    obliged(monkeypatch, Obligation.MINIMISE_FIELDS)
    assert await _answers(api, routes) == [refusal for *_, refusal in routes]
    # obliged() adds the obligation after the record is written: what is recorded is the
    # PDP's own answer, an allow without it, for each refusal above.
    assert await _allowed_with(api, Obligation.MINIMISE_FIELDS) == before
    partner = await api.get(PARTNER_APP, P, f"/vehicles/{alice_1}/charging-sessions")
    assert partner.status_code == 200, partner.text
    items = partner.json()["items"]
    assert charge in {i["id"] for i in items}
    for item in items:  # minimised: no state of charge
        assert set(item) == {"id", "started_at", "ended_at", "energy_kwh", "charger_kind"}
    owner = await api.get("alice", M, f"/vehicles/{alice_1}/charging-sessions")
    assert owner.status_code == 404, owner.text


async def test_the_engineer_keeps_pseudonymised_diagnostics_and_loses_the_ota_functions(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The engineer's diagnostics declare pseudonymise: they still answer, pseudonymised.
    # The OTA functions apply nothing: the same engineer is refused them (403).
    _, report = await _records(api)
    alice_1 = api.vehicle_id("ALICE-1")
    obliged(monkeypatch, Obligation.PSEUDONYMISE)
    engineer = await api.get("ken", A, "/diagnostics")
    assert engineer.status_code == 200, engineer.text
    (seen,) = [i for i in engineer.json()["items"] if i["trouble_codes"] == ["P0300"]]
    assert alice_1 not in seen.values() and report not in seen.values()
    ota = await api.get("ken", A, "/ota/campaigns")
    assert ota.status_code == 403, ota.text


async def test_a_command_route_refuses_an_allow_carrying_an_obligation(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A command applies no obligation: its creation is refused as for a vehicle the caller
    # cannot see (404), before any job is written. Without the obligation the same request
    # passes authorization and its job is judged further (this world registers no mobile
    # client: rejected at the client link).
    path = f"/mobile/v1/vehicles/{api.vehicle_id('ALICE-1')}/commands/lock"
    obliged(monkeypatch, Obligation.PSEUDONYMISE)
    headers = {**api.headers("alice", M), "idempotency-key": "obliged-1"}
    refused = await api.client.post(path, json={}, headers=headers)
    assert refused.status_code == 404, refused.text
    async with api.platform.services() as (_, ctx):
        assert await ctx.session.scalar(select(CommandJob.id)) is None
    monkeypatch.undo()
    judged = await api.client.post(path, json={}, headers=headers)
    assert (judged.status_code, judged.json()["link"]) == (403, "client"), judged.text
