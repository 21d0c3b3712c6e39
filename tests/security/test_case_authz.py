"""Dealer and support case routes over the seeded demo world, through HTTP with real tokens.

Each row asks one question both ways and names the threat it covers. The cast: grace has an
open case on ALICE-1, harry a closed one on DAVE-1 (both at downtown-motors), "tom" is a
technician of the same dealer on no case, heidi has an open support case on alice's account,
ivan has none; alice, judy and ken have no business here at all. Not-found and
not-authorized answer the same 404; a refused write changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from sqlalchemy import select

from fleetward.api.objects import encode_cursor
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.authz.decision import Obligation
from fleetward.core.clock import FrozenClock
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.models import Membership, Role, TenantKind
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.models import CaseStatus, CaseTechnician, DealerCase, SupportCase
from fleetward.vehicles.ownership import OwnershipService
from support.api import UNKNOWN_VEHICLE, Api, obliged
from support.factories import WorldFactory, accepted_message
from support.snapshot import snapshot

D, S, M = Surface.DEALER, Surface.SUPPORT, Surface.MOBILE
UNKNOWN_CASE = "dcs_aaaaaaaaaaaaaaaaaaaaaaaaaa"
SEED = Actor.system("case-authz-test")
LOCATION = "Vehicle.CurrentLocation."


@dataclass(frozen=True)
class Extra:
    """What the tests add to the demo world: ids by name."""

    ids: dict[str, str]


async def _seed(api: Api) -> Extra:
    """tom (same dealer, no case), another dealer's case on MALLORY-1 (with a forged link of
    grace's to it), heidi's second case on mallory's account, and telemetry with a location
    on ALICE-1 (so a leak would show)."""
    world = api.world
    async with api.platform.services() as (uow, ctx):
        factory = WorldFactory(ctx)
        dealer = world.tenants["downtown-motors"]
        tom = await factory.user(dealer, Role.DEALER_TECHNICIAN)
        other = await factory.tenant(TenantKind.DEALER, slug="uptown-motors")
        uma = await factory.user(other, Role.DEALER_TECHNICIAN)
        cases = CaseService(ctx)
        foreign = await cases.open_dealer_case(
            other, world.vehicles["MALLORY-1"], "other dealer", actor=SEED
        )
        await cases.assign_technician(foreign, uma, actor=SEED)
        # A link no service would write (grace is not uptown's technician): the dealer
        # tenant filter must hold on its own.
        ctx.session.add(
            CaseTechnician(
                id=new_id("dct"),
                case_id=foreign.id,
                user_id=world.users["grace"].id,
                valid_from=ctx.clock.now(),
                valid_until=None,
            )
        )
        second = await cases.open_support_case(
            world.users["heidi"], world.users["mallory"], "second case", actor=SEED
        )
        signals = {"Vehicle.Speed": 0, f"{LOCATION}Latitude": 48.1, f"{LOCATION}Longitude": 11.5}
        ctx.session.add(accepted_message(world.vehicles["ALICE-1"], ctx.clock.now(), signals))
        await uow.commit()
    world.users["tom"] = tom
    world.tenants["uptown-motors"] = other
    return Extra(
        {
            "grace-case": world.dealer_cases["ALICE-1"].id,
            "harry-case": world.dealer_cases["DAVE-1"].id,
            "foreign-case": foreign.id,
            "heidi-case": world.support_cases["heidi"].id,
            "heidi-mallory-case": second.id,
            "unknown-case": UNKNOWN_CASE,
            **{label: v.id for label, v in world.vehicles.items()},
            "unknown": UNKNOWN_VEHICLE,
        }
    )


def _token(who: str) -> dict[str, Any]:
    return {"tenant": "downtown-motors"} if who == "tom" else {}


async def _ask(api: Api, who: str, surface: Surface, method: str, path: str) -> httpx.Response:
    if method == "POST":
        return await api.post(who, surface, path, {}, **_token(who))
    return await api.get(who, surface, path, **_token(who))


def _fill(extra: Extra, template: str) -> str:
    return template.format(**{k.replace("-", "_"): v for k, v in extra.ids.items()})


# (who, surface, method, path, expected status, why)
G, A = "GET", "POST"
DEALER_TABLE = [
    ("grace", D, G, "/cases/{grace_case}", 200, "technician reads her open assigned case"),
    ("grace", D, G, "/cases/{grace_case}/vehicle", 200, "technician reads her case's vehicle"),
    ("grace", D, G, "/vehicles/{ALICE_1}", 200, "control: the vehicle route agrees"),
    ("harry", D, G, "/cases/{harry_case}", 404, "case closed: the technician keeps nothing"),
    ("harry", D, G, "/cases/{harry_case}/vehicle", 404, "closed case: no vehicle either"),
    ("harry", D, G, "/cases/{grace_case}", 404, "BOLA: same dealer, another's case"),
    ("harry", D, G, "/cases/{grace_case}/vehicle", 404, "BOLA: vehicle via another's case"),
    ("tom", D, G, "/cases/{grace_case}", 404, "same dealer, never assigned"),
    ("tom", D, G, "/cases/{grace_case}/vehicle", 404, "same dealer, never assigned: vehicle"),
    ("grace", D, G, "/cases/{harry_case}", 404, "a colleague's closed case"),
    ("grace", D, G, "/cases/{foreign_case}", 404, "another dealer's case, forged link"),
    ("grace", D, G, "/cases/{foreign_case}/vehicle", 404, "cross-dealer: vehicle of its case"),
    ("grace", D, G, "/cases/{heidi_case}", 404, "a support case id on the dealer surface"),
    ("grace", D, G, "/cases/{unknown_case}", 404, "unknown case"),
    ("grace", D, G, "/cases/{unknown_case}/vehicle", 404, "unknown case: vehicle"),
    ("alice", D, G, "/cases/{grace_case}", 404, "consumer holding a dealer token"),
    ("alice", D, G, "/cases/{grace_case}/vehicle", 404, "owner is not a technician here"),
    ("heidi", D, G, "/cases/{grace_case}", 404, "support agent on the dealer surface"),
    ("ivan", D, G, "/cases/{grace_case}/vehicle", 404, "support agent without a case"),
    ("judy", D, G, "/cases/{grace_case}", 404, "platform admin: no case data (SoD)"),
    ("ken", D, G, "/cases/{grace_case}/vehicle", 404, "engineer: no vehicle status"),
    ("harry", D, A, "/cases/{grace_case}/close", 404, "BFLA/BOLA: closing another's case"),
    ("tom", D, A, "/cases/{grace_case}/close", 404, "closing a case one is not on"),
    ("grace", D, A, "/cases/{foreign_case}/close", 404, "closing another dealer's case"),
    ("grace", D, A, "/cases/{harry_case}/close", 404, "re-closing a closed case"),
    ("alice", D, A, "/cases/{grace_case}/close", 404, "the owner cannot close the case"),
]

SUPPORT_TABLE = [
    ("heidi", S, G, "/cases/{heidi_case}", 200, "agent reads her open case"),
    ("heidi", S, G, "/cases/{heidi_case}/account", 200, "agent reads the case's account"),
    ("heidi", S, G, "/cases/{heidi_case}/vehicles", 200, "agent lists the account's vehicles"),
    ("heidi", S, G, "/cases/{heidi_case}/vehicles/{ALICE_1}/status", 200, "covered vehicle"),
    ("heidi", S, G, "/cases/{heidi_case}/vehicles/{MALLORY_1}/status", 404, "wrong parent"),
    ("heidi", S, G, "/cases/{heidi_mallory_case}/vehicles/{ALICE_1}/status", 404, "swapped"),
    ("heidi", S, G, "/cases/{heidi_case}/vehicles/{DAVE_1}/status", 404, "outside any case"),
    ("heidi", S, G, "/cases/{heidi_case}/vehicles/{unknown}/status", 404, "unknown vehicle"),
    ("heidi", S, G, "/cases/{grace_case}", 404, "a dealer case id on the support surface"),
    ("heidi", S, G, "/cases/{unknown_case}/account", 404, "unknown case"),
    ("ivan", S, G, "/cases/{heidi_case}", 404, "BOLA: another agent's case"),
    ("ivan", S, G, "/cases/{heidi_case}/account", 404, "BOLA: account via another's case"),
    ("ivan", S, G, "/cases/{heidi_case}/vehicles", 404, "BOLA: vehicles via another's case"),
    ("ivan", S, G, "/cases/{heidi_case}/vehicles/{ALICE_1}/status", 404, "BOLA: status"),
    ("ivan", S, A, "/cases/{heidi_case}/close", 404, "closing another agent's case"),
    ("judy", S, G, "/cases/{heidi_case}/account", 404, "platform admin is no support agent"),
    ("ken", S, G, "/cases/{heidi_case}/vehicles", 404, "engineer is no support agent"),
    ("alice", S, G, "/cases/{heidi_case}", 404, "the customer holding a support token"),
    ("grace", S, G, "/cases/{heidi_case}/account", 404, "technician on the support surface"),
    ("harry", S, G, "/cases/{heidi_case}/vehicles", 404, "technician on the support surface"),
    ("heidi", M, G, "/vehicles/{ALICE_1}/location", 404, "support never sees location"),
]


async def _run(api: Api, extra: Extra, table: list[tuple[Any, ...]]) -> list[str]:
    wrong = []
    for who, surface, method, template, status, why in table:
        response = await _ask(api, who, surface, method, _fill(extra, template))
        if response.status_code != status:
            wrong.append(
                f"{who} {method} {surface.value} {template}: {response.status_code} ({why})"
            )
    return wrong


async def test_policy_table(api: Api) -> None:
    extra = await _seed(api)
    async with api.platform.services() as (_, ctx):
        before = await snapshot(ctx.session)
    wrong = await _run(api, extra, DEALER_TABLE) + await _run(api, extra, SUPPORT_TABLE)
    assert not wrong, "\n".join(wrong)
    async with api.platform.services() as (_, ctx):
        after = await snapshot(ctx.session)
    # Reads and refused closes leave everything but the decisions' audit trail as it was.
    changed = sorted(t for t in before if before[t] != after[t] and t != "audit_events")
    assert not changed


async def test_an_agent_walking_vehicle_ids_under_their_case_is_on_the_record(api: Api) -> None:
    # An agent trying vehicle ids under their own open case (a customer's car bought
    # elsewhere, an unknown id) was refused by the case's coverage alone, before the PDP was
    # asked: 404 with no decision recorded, so the walk never reached the audit trail the
    # vehicle-walk detection (vin-enumeration) reads. Each refusal is a recorded denial on
    # the vehicle now; the answer is the same 404.
    extra = await _seed(api)
    walked = {"DAVE-1": "no-relationship", "unknown": "unknown-resource"}
    case = extra.ids["heidi-case"]
    for label in walked:
        path = f"/cases/{case}/vehicles/{extra.ids[label]}/status"
        assert (await api.get("heidi", S, path)).status_code == 404, label
    async with api.platform.services() as (_, ctx):
        rows = await ctx.session.scalars(
            select(AuditRecord).where(
                AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value,
                AuditRecord.actor_id == api.world.users["heidi"].id,
                AuditRecord.object_type == "vehicle",
                AuditRecord.object_id.in_([extra.ids[label] for label in walked]),
            )
        )
        recorded = {(r.object_id, r.decision.value, r.reason) for r in rows}
    assert recorded == {(extra.ids[label], "denied", why) for label, why in walked.items()}


async def test_an_agent_walking_case_ids_is_on_the_record(api: Api) -> None:
    # An agent trying case ids (another agent's case, an unknown id, a dealer case's id) was
    # refused by the case query alone, before the PDP was asked: the one 404 with no
    # decision recorded, so a walk over cases never reached the audit trail detection reads.
    # Each is a recorded denial on the case now, with the same 404; the agent's own case is a
    # recorded allow.
    extra = await _seed(api)
    walked = {
        "heidi-case": "no-relationship",
        "unknown-case": "unknown-resource",
        "grace-case": "unknown-resource",
    }
    suffixes = ("", "/account", "/vehicles", f"/vehicles/{extra.ids['ALICE-1']}/status")
    for label in walked:
        for suffix in suffixes:
            path = f"/cases/{extra.ids[label]}{suffix}"
            assert (await api.get("ivan", S, path)).status_code == 404, path
    own = await api.get("heidi", S, f"/cases/{extra.ids['heidi-case']}")
    assert own.status_code == 200
    async with api.platform.services() as (_, ctx):
        rows = list(
            await ctx.session.scalars(
                select(AuditRecord).where(
                    AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value,
                    AuditRecord.object_type == "support_case",
                )
            )
        )
    users = api.world.users
    recorded = sorted((r.actor_id, r.object_id, r.decision.value, r.reason) for r in rows)
    assert recorded == sorted(
        [
            (users["ivan"].id, extra.ids[label], "denied", why)
            for label, why in walked.items()
            for _ in suffixes
        ]
        + [(users["heidi"].id, extra.ids["heidi-case"], "allowed", "support-case")]
    )


async def test_lists_are_the_callers_open_cases(api: Api) -> None:
    extra = await _seed(api)
    expected = {
        ("grace", D): {extra.ids["grace-case"]},  # not harry's, not the forged foreign link
        ("harry", D): set(),  # his only case is closed
        ("tom", D): set(),
        ("alice", D): set(),
        ("heidi", D): set(),
        ("heidi", S): {extra.ids["heidi-case"], extra.ids["heidi-mallory-case"]},
        ("ivan", S): set(),
        ("judy", S): set(),
        ("ken", S): set(),
        ("grace", S): set(),
    }
    for (who, surface), ids in expected.items():
        response = await api.get(who, surface, "/cases", **_token(who))
        assert response.status_code == 200, (who, surface)
        assert {c["id"] for c in response.json()["items"]} == ids, (who, surface)


async def test_lists_are_paginated(api: Api) -> None:
    extra = await _seed(api)
    first = await api.get("heidi", S, "/cases?limit=1")
    assert first.status_code == 200
    page = first.json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    second = await api.get("heidi", S, f"/cases?limit=1&cursor={page['next_cursor']}")
    rest = second.json()
    assert rest["next_cursor"] is None
    seen = {page["items"][0]["id"], rest["items"][0]["id"]}
    assert seen == {extra.ids["heidi-case"], extra.ids["heidi-mallory-case"]}
    # A forged cursor is a problem, not a guess.
    forged = await api.get("grace", D, "/cases?cursor=%%%")
    assert forged.status_code == 422


async def test_views_carry_no_location_and_no_secrets(api: Api) -> None:
    extra = await _seed(api)
    dealer = await api.get("grace", D, _fill(extra, "/cases/{grace_case}/vehicle"))
    status = await api.get(
        "heidi", S, _fill(extra, "/cases/{heidi_case}/vehicles/{ALICE_1}/status")
    )
    for response in (dealer, status):
        assert response.status_code == 200
        body = response.json()
        assert body["id"] == extra.ids["ALICE-1"]
        assert body["state"]["signals"] == {"Vehicle.Speed": 0}
        assert "location" not in body and "latitude" not in response.text.lower()
    account = await api.get("heidi", S, _fill(extra, "/cases/{heidi_case}/account"))
    assert account.status_code == 200
    alice = api.world.users["alice"]
    assert account.json() == {
        "id": alice.id,
        "display_name": alice.display_name,
        "tenant_id": alice.home_tenant_id,
        "mfa_enrolled": False,
        "vehicles_owned": 1,
    }
    vehicles = await api.get("heidi", S, _fill(extra, "/cases/{heidi_case}/vehicles"))
    assert [v["id"] for v in vehicles.json()["items"]] == [extra.ids["ALICE-1"]]


async def test_closing_a_dealer_case_ends_the_technicians_access(api: Api) -> None:
    extra = await _seed(api)
    case = extra.ids["grace-case"]
    closed = await api.post("grace", D, f"/cases/{case}/close", {})
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed"
    for path in (
        f"/cases/{case}",
        f"/cases/{case}/vehicle",
        f"/vehicles/{extra.ids['ALICE-1']}",
    ):
        response = await api.get("grace", D, path)
        assert response.status_code == 404, path  # stale access after the case closes
    assert (await api.get("grace", D, "/cases")).json()["items"] == []
    again = await api.post("grace", D, f"/cases/{case}/close", {})
    assert again.status_code == 404  # no second close, no oracle
    async with api.platform.services() as (_, ctx):
        stored = await ctx.session.get(DealerCase, case)
        assert stored is not None and stored.status is CaseStatus.CLOSED
        events = list(
            await ctx.session.scalars(
                select(AuditRecord).where(
                    AuditRecord.name == EventName.DEALER_CASE_CLOSED.value,
                    AuditRecord.object_id == case,
                )
            )
        )
    assert [e.actor_id for e in events] == [api.world.users["grace"].id]


async def test_closing_a_support_case_ends_the_agents_access(api: Api) -> None:
    extra = await _seed(api)
    case = extra.ids["heidi-case"]
    closed = await api.post("heidi", S, f"/cases/{case}/close", {})
    assert closed.status_code == 200
    assert closed.json()["status"] == "closed"
    for path in (
        f"/cases/{case}",
        f"/cases/{case}/account",
        f"/cases/{case}/vehicles",
        f"/cases/{case}/vehicles/{extra.ids['ALICE-1']}/status",
    ):
        response = await api.get("heidi", S, path)
        assert response.status_code == 404, path  # stale access after the case closes
    listed = (await api.get("heidi", S, "/cases")).json()["items"]
    assert [c["id"] for c in listed] == [extra.ids["heidi-mallory-case"]]
    async with api.platform.services() as (_, ctx):
        stored = await ctx.session.get(SupportCase, case)
        assert stored is not None and stored.status is CaseStatus.CLOSED
        events = list(
            await ctx.session.scalars(
                select(AuditRecord).where(
                    AuditRecord.name == EventName.SUPPORT_CASE_CLOSED.value,
                    AuditRecord.object_id == case,
                )
            )
        )
    assert [e.actor_id for e in events] == [api.world.users["heidi"].id]


async def test_access_ends_when_the_assignment_ends(api: Api, clock: FrozenClock) -> None:
    # An unassigned technician loses the case even while it stays open.
    extra = await _seed(api)
    case = extra.ids["grace-case"]
    async with api.platform.services() as (uow, ctx):
        link = await ctx.session.scalar(
            select(CaseTechnician).where(
                CaseTechnician.case_id == case,
                CaseTechnician.user_id == api.world.users["grace"].id,
            )
        )
        assert link is not None
        link.valid_until = ctx.clock.now() + timedelta(minutes=1)
        await uow.commit()
    assert (await api.get("grace", D, f"/cases/{case}")).status_code == 200
    clock.advance(timedelta(minutes=2))
    assert (await api.get("grace", D, f"/cases/{case}")).status_code == 404
    assert (await api.get("grace", D, f"/cases/{case}/vehicle")).status_code == 404
    assert (await api.get("grace", D, "/cases")).json()["items"] == []


async def test_a_technician_who_left_the_dealer_lists_no_cases(api: Api) -> None:
    # The list query finds the cases a person is assigned to; the PDP decides each row. A
    # technician whose membership of the dealer ended (the case not yet reassigned) still
    # holds the case link, but no role there: the list shows nothing, as the case does.
    extra = await _seed(api)
    case = extra.ids["grace-case"]
    assert {c["id"] for c in (await api.get("grace", D, "/cases")).json()["items"]} == {case}
    async with api.platform.services() as (uow, ctx):
        membership = await ctx.session.scalar(
            select(Membership).where(
                Membership.user_id == api.world.users["grace"].id,
                Membership.tenant_id == api.world.tenants["downtown-motors"].id,
            )
        )
        assert membership is not None
        membership.valid_until = ctx.clock.now()
        membership.ended_reason = "left"
        await uow.commit()
    assert (await api.get("grace", D, f"/cases/{case}")).status_code == 404
    listed = await api.get("grace", D, "/cases")
    assert listed.status_code == 200
    assert listed.json()["items"] == []


# (who, surface, path, raw body, why)
HOSTILE_BODIES = [
    ("grace", D, "/cases/{grace_case}/close", b'{"status": "open"}', "server-owned status"),
    ("grace", D, "/cases/{grace_case}/close", b'{"closed_at": "2000-01-01T00:00:00Z"}', "date"),
    ("grace", D, "/cases/{grace_case}/close", b'{"technician": "x"}', "unknown field"),
    ("grace", D, "/cases/{grace_case}/close", b"[]", "not an object"),
    ("grace", D, "/cases/{grace_case}/close", b"null", "null body"),
    ("heidi", S, "/cases/{heidi_case}/close", b'{"agent_user_id": "usr_x"}', "reassignment"),
    ("heidi", S, "/cases/{heidi_case}/close", b'{"status": "closed"}', "server-owned status"),
    ("heidi", S, "/cases/{heidi_case}/close", b'"closed"', "a bare string"),
]


async def test_unknown_fields_in_bodies_are_refused(api: Api) -> None:
    extra = await _seed(api)
    async with api.platform.services() as (_, ctx):
        before = await snapshot(ctx.session)
    for who, surface, template, raw, why in HOSTILE_BODIES:
        response = await api.client.post(
            f"/{surface.value}/v1{_fill(extra, template)}",
            content=raw,
            headers={**api.headers(who, surface), "content-type": "application/json"},
        )
        assert response.status_code == 422, why
        assert response.headers["content-type"] == "application/problem+json", why
    async with api.platform.services() as (_, ctx):
        after = await snapshot(ctx.session)
    assert before == after  # nothing changed, not even a case's status


async def test_support_tokens_need_mfa(api: Api) -> None:
    extra = await _seed(api)
    paths = [
        "/cases",
        "/cases/{heidi_case}",
        "/cases/{heidi_case}/account",
        "/cases/{heidi_case}/vehicles",
        "/cases/{heidi_case}/vehicles/{ALICE_1}/status",
    ]
    for template in paths:
        path = _fill(extra, template)
        weak = await api.get("heidi", S, path, acr=Acr.PASSWORD)
        assert weak.status_code == 401, path  # a stolen password alone opens no account
        assert "insufficient_user_authentication" in weak.headers["www-authenticate"]
        stale = await api.get("heidi", S, path, auth_age=timedelta(hours=13))
        assert stale.status_code == 401, path  # older than any operator session may live
        strong = await api.get("heidi", S, path)
        assert strong.status_code == 200, path
    close = _fill(extra, "/cases/{heidi_case}/close")
    weak_close = await api.post("heidi", S, close, {}, acr=Acr.PASSWORD)
    assert weak_close.status_code == 401
    async with api.platform.services() as (_, ctx):
        stored = await ctx.session.get(SupportCase, extra.ids["heidi-case"])
        assert stored is not None and stored.status is CaseStatus.OPEN


async def test_not_found_and_not_authorized_are_identical(api: Api) -> None:
    # Enumeration: another agent's case and an unknown id answer the same bytes.
    extra = await _seed(api)
    for who, surface, real, unknown in (
        ("ivan", S, "/cases/{heidi_case}/account", "/cases/{unknown_case}/account"),
        ("harry", D, "/cases/{grace_case}", "/cases/{unknown_case}"),
        ("grace", D, "/cases/{foreign_case}/vehicle", "/cases/{unknown_case}/vehicle"),
    ):
        a = await api.get(who, surface, _fill(extra, real))
        b = await api.get(who, surface, _fill(extra, unknown))
        assert a.status_code == b.status_code == 404
        strip = {"instance"}
        assert {k: v for k, v in a.json().items() if k not in strip} == {
            k: v for k, v in b.json().items() if k not in strip
        }


def test_support_has_no_search(api: Api) -> None:
    # An agent reaches customer data only through a case: no route of the support surface
    # takes an account or a vehicle except under /cases/{case_id}, and nothing takes a
    # query beyond paging.
    app = api.client._transport.app  # type: ignore[attr-defined]
    prefix = "/support/v1"
    checked = 0
    for context in iter_route_contexts(app.router.routes):
        path = context.path or ""
        if not path.startswith(prefix) or path in {prefix, f"{prefix}/me"}:
            continue
        # The one exception: the agent's own case list.
        assert path == f"{prefix}/cases" or path.startswith(f"{prefix}/cases/{{case_id}}"), path
        route = context.original_route
        queries = {p.name for p in route.dependant.query_params}  # type: ignore[attr-defined]
        assert queries <= {"limit", "cursor"}, path
        checked += 1
    assert checked >= 5


async def test_a_support_case_on_a_vehicle_ends_with_the_sale_of_that_vehicle(api: Api) -> None:
    # Former owners lose everything, and the agent helping one with them: a case opened on
    # alice's account naming ALICE-1 covers the car while alice owns it, never the buyer's
    # car after the sale (status, list and the PDP alike). The account itself stays open.
    world = api.world
    async with api.platform.services() as (uow, ctx):
        case = await CaseService(ctx).open_support_case(
            world.users["ivan"],
            world.users["alice"],
            "app shows the wrong car",
            vehicle=world.vehicles["ALICE-1"],
            actor=SEED,
        )
        await uow.commit()
    car = world.vehicles["ALICE-1"].id
    status = f"/cases/{case.id}/vehicles/{car}/status"
    assert (await api.get("ivan", S, status)).status_code == 200
    listed = (await api.get("ivan", S, f"/cases/{case.id}/vehicles")).json()["items"]
    assert [v["id"] for v in listed] == [car]
    async with api.platform.services() as (uow, ctx):
        await OwnershipService(ctx).transfer(
            world.vehicles["ALICE-1"], world.users["alice"], world.users["carol"], actor=SEED
        )
        await uow.commit()
    assert (await api.get("ivan", S, status)).status_code == 404  # the buyer's car now
    assert (await api.get("ivan", S, f"/cases/{case.id}/vehicles")).json()["items"] == []
    assert (await api.get("ivan", S, f"/cases/{case.id}/account")).status_code == 200


async def test_a_dealer_case_on_a_vehicle_ends_with_the_sale_of_that_vehicle(api: Api) -> None:
    # The technician servicing the car for its seller never reaches the buyer's car: the
    # sale closes the car's open case (audited, reason transferred), so the case, the car's
    # status and the buyer's diagnostics answer 404 and no diagnostics run can be sent.
    world = api.world
    case = world.dealer_cases["ALICE-1"].id
    car = world.vehicles["ALICE-1"].id
    assert (await api.get("grace", D, f"/cases/{case}")).status_code == 200
    async with api.platform.services() as (uow, ctx):
        await OwnershipService(ctx).transfer(
            world.vehicles["ALICE-1"], world.users["alice"], world.users["carol"], actor=SEED
        )
        await uow.commit()
    for path in (
        f"/cases/{case}",
        f"/cases/{case}/vehicle",
        f"/vehicles/{car}",
        f"/vehicles/{car}/diagnostics",
    ):
        assert (await api.get("grace", D, path)).status_code == 404, path  # the buyer's car
    assert (await api.get("grace", D, "/cases")).json()["items"] == []
    run = await api.client.post(
        f"/dealer/v1/vehicles/{car}/commands/diagnostics_run",
        json={},
        headers={**api.headers("grace", D), "idempotency-key": "after-the-sale"},
    )
    assert run.status_code == 404, run.text
    async with api.platform.services() as (_, ctx):
        stored = await ctx.session.get(DealerCase, case)
        assert stored is not None and stored.status is CaseStatus.CLOSED
        reasons = list(
            await ctx.session.scalars(
                select(AuditRecord.reason).where(
                    AuditRecord.name == EventName.DEALER_CASE_CLOSED.value,
                    AuditRecord.object_id == case,
                )
            )
        )
    assert reasons == ["transferred"]


async def test_an_agent_who_left_support_lists_no_vehicle_of_the_case(api: Api) -> None:
    # The list of a case's vehicles is decided like every other route under the case: an
    # agent whose support role ended (the case not yet reassigned) holds the case link but
    # may no longer use it. The route answered 200 with no items, where its siblings answer
    # 404, and the next page's cursor (the last row's id, base64) named the customer's car
    # the PDP had just refused.
    world = api.world
    async with api.platform.services() as (uow, ctx):
        second = await WorldFactory(ctx).owned_vehicle(world.users["alice"])
        await uow.commit()
    case = world.support_cases["heidi"].id
    path = f"/cases/{case}/vehicles?limit=1"
    first = await api.get("heidi", S, path)
    assert first.status_code == 200 and first.json()["next_cursor"], first.text
    async with api.platform.services() as (uow, ctx):
        membership = await ctx.session.scalar(
            select(Membership).where(
                Membership.user_id == world.users["heidi"].id,
                Membership.role == Role.SUPPORT_AGENT,
            )
        )
        assert membership is not None
        membership.valid_until = ctx.clock.now()
        membership.ended_reason = "left"
        await uow.commit()
    unknown = await api.get("heidi", S, "/cases/scs_aaaaaaaaaaaaaaaaaaaaaaaaaa/vehicles?limit=1")
    refused = await api.get("heidi", S, path)
    assert (await api.get("heidi", S, f"/cases/{case}")).status_code == 404
    assert refused.status_code == unknown.status_code == 404, refused.text
    strip = {"instance"}
    assert {k: v for k, v in refused.json().items() if k not in strip} == {
        k: v for k, v in unknown.json().items() if k not in strip
    }
    for car in (world.vehicles["ALICE-1"].id, second.id):
        assert encode_cursor(car) not in refused.text and car not in refused.text


async def test_the_case_vehicle_route_decides_and_audits_the_case(api: Api) -> None:
    # Every case route asks the PDP about the case itself (dealer:manage_case), not only
    # about its vehicle: the decision on the case is in the audit trail, allowed for the
    # assigned technician and denied for one who is not on it (who gets the same 404).
    extra = await _seed(api)
    case = extra.ids["grace-case"]
    assert (await api.get("grace", D, f"/cases/{case}/vehicle")).status_code == 200
    assert (await api.get("harry", D, f"/cases/{case}/vehicle")).status_code == 404
    async with api.platform.services() as (_, ctx):
        rows = list(
            await ctx.session.scalars(
                select(AuditRecord).where(
                    AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value,
                    AuditRecord.object_id == case,
                )
            )
        )
    decided = sorted((r.actor_id, r.action, r.decision.value, r.endpoint) for r in rows)
    assert decided == sorted(
        [
            (api.world.users["grace"].id, "dealer:manage_case", "allowed", "dealer:cases:vehicle"),
            (api.world.users["harry"].id, "dealer:manage_case", "denied", "dealer:cases:vehicle"),
        ]
    )


async def test_an_obligation_the_status_route_cannot_apply_is_a_denial(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The status a support agent or a technician reads is neither minimised nor
    # pseudonymised: an allow that asks for either (a policy change) must be refused, as
    # every history route refuses it (docs/authorization.md). vehicle_status ignored the
    # decision's obligations and answered 200 with the full registry fields.
    extra = await _seed(api)
    paths = [
        ("heidi", S, _fill(extra, "/cases/{heidi_case}/vehicles/{ALICE_1}/status")),
        ("grace", D, _fill(extra, "/vehicles/{ALICE_1}")),
    ]
    for who, surface, path in paths:
        assert (await api.get(who, surface, path)).status_code == 200, (who, path)
    obliged(monkeypatch, Obligation.MINIMISE_FIELDS)
    for who, surface, path in paths:
        response = await api.get(who, surface, path)
        assert response.status_code == 404, (who, path, response.text)
