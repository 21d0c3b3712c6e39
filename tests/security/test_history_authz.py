"""Vehicle history (trips, charging, diagnostics, command jobs) over the seeded demo world,
through HTTP with real tokens.

Each row of a table names the threat it covers and is asked both ways (allowed callers get
the record, everyone else the same 404 as an unknown id). History is bounded to the caller's
relationship: a buyer never sees the seller's trips, a driver only their window, a partner
only since the consent. The page cap is lowered for this module to exercise pagination.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from fleetward.api.objects import encode_cursor
from fleetward.audit.recorder import Actor
from fleetward.authz.permissions import Permission
from fleetward.commands.models import CommandJob, JobState, JobTransition
from fleetward.core.clock import FrozenClock
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.settings import Settings
from fleetward.vehicles.consents import ConsentService
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.fleets import FleetService
from fleetward.vehicles.models import FleetGroup, GroupVehicle, Ownership, PartnerConsent
from fleetward.vehicles.records import (
    ChargerKind,
    ChargingSession,
    DiagnosticReport,
    DiagnosticSource,
    Trip,
)
from support.api import PARTNER_APP, UNKNOWN_VEHICLE, Api
from support.factories import accepted_message, trip

M, F, D, P, A = Surface.MOBILE, Surface.FLEET, Surface.DEALER, Surface.PARTNER, Surface.ADMIN
PAGE_CAP = 3
COORDINATES = {"start_latitude", "start_longitude", "end_latitude", "end_longitude"}
LABELS = ("ALICE-1", "DAVE-1", "MALLORY-1", "ACME-N1", "ACME-S1", "GLOBEX-1")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # As tests/conftest.py, with a small page cap so that pagination is exercised.
    return Settings(
        data_dir=tmp_path / "var",
        password_hash_memory_kib=19_456,
        password_hash_time_cost=2,
        max_page_size=PAGE_CAP,
    )


@dataclass
class Records:
    """One fresh record of each kind per vehicle, dated after every relationship began."""

    trips: dict[str, str]
    charging: dict[str, str]
    reports: dict[str, str]
    jobs: dict[str, str]  # ALICE-1's jobs by command family (plus "old": before the owner)


def _charge(vehicle_id: str, at: Any) -> ChargingSession:
    return ChargingSession(
        id=new_id("chg"),
        vehicle_id=vehicle_id,
        started_at=at,
        ended_at=at + timedelta(hours=1),
        energy_kwh=20.0,
        start_soc_percent=30.0,
        end_soc_percent=70.0,
        charger_kind=ChargerKind.DC,
    )


def _report(vehicle_id: str, at: Any) -> DiagnosticReport:
    return DiagnosticReport(
        id=new_id("dgr"),
        vehicle_id=vehicle_id,
        created_at=at,
        source=DiagnosticSource.VEHICLE,
        software_version="2026.11.1",
        trouble_codes=["P0300"],
        summary="random misfire detected",
    )


def _job(api: Api, label: str, command: Permission, at: Any, who: str) -> CommandJob:
    vehicle = api.world.vehicles[label]
    return CommandJob(
        id=new_id("job"),
        vehicle_id=vehicle.id,
        tenant_id=vehicle.tenant_id,
        command=command.value,
        parameters={},
        state=JobState.EXECUTED,
        requested_by=api.world.users[who].id,
        client_id="cli_mobile",
        created_at=at,
        expires_at=at + timedelta(minutes=5),
        updated_at=at,
    )


async def _add(api: Api, *rows: Any) -> None:
    async with api.platform.services() as (uow, ctx):
        ctx.session.add_all(rows)
        await uow.commit()


def _clock(api: Api) -> FrozenClock:
    clock = api.platform.clock
    assert isinstance(clock, FrozenClock)
    return clock


@pytest.fixture
async def records(api: Api) -> Records:
    clock = _clock(api)
    old = clock.now() - timedelta(hours=1)  # before every relationship of the demo world
    clock.advance(timedelta(hours=1))
    now = clock.now()
    ids = {label: api.world.vehicles[label].id for label in LABELS}
    trips = {label: trip(vid, now) for label, vid in ids.items()}
    charging = {label: _charge(vid, now) for label, vid in ids.items()}
    reports = {label: _report(vid, now) for label, vid in ids.items()}
    jobs = {
        "lock": _job(api, "ALICE-1", Permission.VEHICLE_LOCK, now, "alice"),
        "unlock": _job(api, "ALICE-1", Permission.VEHICLE_UNLOCK, now, "alice"),
        "climate": _job(api, "ALICE-1", Permission.VEHICLE_CLIMATE, now, "bob"),
        "old": _job(api, "ALICE-1", Permission.VEHICLE_LOCK, old, "alice"),
    }
    transitions = [
        JobTransition(
            id=new_id("jtr"),
            job_id=jobs["lock"].id,
            from_state=state,
            to_state=to,
            at=now + timedelta(seconds=n),
            reason="test",
        )
        for n, (state, to) in enumerate(
            ((None, JobState.REQUESTED), (JobState.REQUESTED, JobState.EXECUTED))
        )
    ]
    await _add(
        api, *trips.values(), *charging.values(), *reports.values(), *jobs.values(), *transitions
    )
    return Records(
        trips={k: v.id for k, v in trips.items()},
        charging={k: v.id for k, v in charging.items()},
        reports={k: v.id for k, v in reports.items()},
        jobs={k: v.id for k, v in jobs.items()},
    )


def _path(api: Api, records: Records, template: str, vehicle: str) -> str:
    vid = api.vehicle_id(vehicle)
    known = vehicle if vehicle in LABELS else "ALICE-1"
    return template.format(
        v=vid,
        trip=records.trips[known],
        charge=records.charging[known],
        report=records.reports[known],
        lock=records.jobs["lock"],
        unlock=records.jobs["unlock"],
    )


T, TR = "/vehicles/{v}/trips", "/vehicles/{v}/trips/{trip}"
C, CR = "/vehicles/{v}/charging-sessions", "/vehicles/{v}/charging-sessions/{charge}"
G, GR = "/vehicles/{v}/diagnostics", "/vehicles/{v}/diagnostics/{report}"
J, JL, JU = (
    "/vehicles/{v}/commands",
    "/vehicles/{v}/commands/{lock}",
    "/vehicles/{v}/commands/{unlock}",
)

# (who, surface, path template, vehicle, expected status, why)
CASES = [
    # trips: location history
    ("alice", M, T, "ALICE-1", 200, "owner lists her trips"),
    ("alice", M, TR, "ALICE-1", 200, "owner reads one trip"),
    ("bob", M, T, "ALICE-1", 404, "driver: trips were not delegated"),
    ("carol", M, T, "DAVE-1", 404, "former owner keeps no history after the sale"),
    ("carol", M, TR, "DAVE-1", 404, "former owner: not even a trip she knows the id of"),
    ("dave", M, T, "DAVE-1", 200, "buyer lists his own trips"),
    ("mallory", M, T, "ALICE-1", 404, "BOLA: another owner's trips"),
    ("mallory", M, TR, "ALICE-1", 404, "BOLA: another owner's trip by id"),
    ("erin", F, T, "ACME-N1", 200, "fleet admin: own fleet"),
    ("erin", F, TR, "ACME-S1", 200, "fleet admin: any group"),
    ("erin", F, T, "GLOBEX-1", 404, "cross-tenant fleet isolation"),
    ("gina", F, TR, "ACME-N1", 404, "cross-tenant: another fleet's trip by id"),
    ("frank", F, T, "ACME-N1", 200, "operator: assigned group"),
    ("frank", F, T, "ACME-S1", 404, "operator: another group of the same fleet"),
    ("grace", M, T, "ALICE-1", 404, "dealer never sees where a vehicle has been"),
    ("heidi", M, T, "ALICE-1", 404, "support: no trips, even with an open case"),
    ("judy", M, T, "ALICE-1", 404, "platform admin: no vehicle data"),
    ("ken", M, T, "ALICE-1", 404, "engineer: no trips"),
    (PARTNER_APP, P, T, "ALICE-1", 404, "partner: trips were not consented"),
    ("alice", M, T, "unknown", 404, "unknown vehicle"),
    # charging sessions
    ("alice", M, C, "ALICE-1", 200, "owner lists charging"),
    ("alice", M, CR, "ALICE-1", 200, "owner reads one session"),
    ("bob", M, C, "ALICE-1", 404, "driver: charging was not delegated"),
    ("carol", M, C, "DAVE-1", 404, "former owner"),
    ("dave", M, CR, "DAVE-1", 200, "buyer reads his session"),
    ("mallory", M, CR, "ALICE-1", 404, "BOLA on a charging session"),
    ("erin", F, C, "ACME-S1", 200, "fleet admin"),
    ("frank", F, CR, "ACME-S1", 404, "operator: another group"),
    ("gina", F, C, "ACME-N1", 404, "cross-tenant"),
    (PARTNER_APP, P, C, "ALICE-1", 200, "partner: charging consented on ALICE-1"),
    (PARTNER_APP, P, C, "MALLORY-1", 404, "partner: no consent on this vehicle"),
    ("judy", M, C, "ALICE-1", 404, "platform admin"),
    # diagnostics
    ("alice", M, G, "ALICE-1", 200, "owner lists reports"),
    ("alice", M, GR, "ALICE-1", 200, "owner reads a report"),
    ("grace", D, G, "ALICE-1", 200, "technician with an open assigned case"),
    ("grace", D, GR, "ALICE-1", 200, "technician reads a report of the case's vehicle"),
    ("grace", D, G, "DAVE-1", 404, "technician: no case on this vehicle"),
    ("harry", D, G, "DAVE-1", 404, "technician after the case closed"),
    ("harry", D, GR, "ALICE-1", 404, "technician not assigned to the open case"),
    ("carol", M, G, "DAVE-1", 404, "former owner"),
    ("erin", F, GR, "ACME-N1", 200, "fleet admin"),
    ("gina", F, G, "ACME-N1", 404, "cross-tenant"),
    ("heidi", M, G, "ALICE-1", 404, "support agent: no diagnostics"),
    ("judy", M, G, "ALICE-1", 404, "platform admin: no diagnostics"),
    ("ken", M, G, "ALICE-1", 404, "engineer: only pseudonymised (obligation not applicable)"),
    ("ken", D, GR, "ALICE-1", 404, "engineer on the dealer surface: same, fail closed"),
    # command jobs
    ("alice", M, J, "ALICE-1", 200, "owner lists jobs"),
    ("alice", M, JU, "ALICE-1", 200, "owner reads an unlock job"),
    ("bob", M, JL, "ALICE-1", 200, "driver reads a lock job (lock delegated)"),
    ("bob", M, JU, "ALICE-1", 404, "driver: unlock not delegated, so unlock jobs are hidden"),
    ("carol", M, J, "DAVE-1", 404, "former owner"),
    ("mallory", M, JL, "ALICE-1", 404, "BOLA on a job"),
    ("judy", M, J, "ALICE-1", 404, "platform admin"),
]


async def test_policy_table(api: Api, records: Records) -> None:
    wrong = []
    for who, surface, template, vehicle, status, why in CASES:
        path = _path(api, records, template, vehicle)
        response = await api.get(who, surface, path)
        if response.status_code != status:
            wrong.append(
                f"{who} {surface.value} {template} {vehicle}: {response.status_code} ({why})"
            )
    assert not wrong, "\n".join(wrong)


# (who, surface, vehicle in the path, kind, vehicle the record belongs to, why)
WRONG_PARENT = [
    ("mallory", M, "MALLORY-1", TR, "ALICE-1", "BOLA: a victim's trip under the attacker's car"),
    ("dave", M, "DAVE-1", TR, "ALICE-1", "another owner's trip under the buyer's car"),
    ("alice", M, "ALICE-1", CR, "DAVE-1", "another owner's session under her own car"),
    ("erin", F, "ACME-N1", GR, "GLOBEX-1", "another fleet's report under an own vehicle"),
    ("grace", D, "ALICE-1", GR, "DAVE-1", "a report outside the case under the case's car"),
    ("dave", M, "DAVE-1", JL, "ALICE-1", "another owner's job under the buyer's car"),
]
KEEPERS = {"ALICE-1": ("alice", M), "DAVE-1": ("dave", M), "GLOBEX-1": ("gina", F)}


def _record_id(records: Records, template: str, label: str) -> str:
    return {
        TR: records.trips,
        CR: records.charging,
        GR: records.reports,
        JL: {label: records.jobs["lock"]},
    }[template][label]


async def test_a_child_through_the_wrong_parent_is_not_found(api: Api, records: Records) -> None:
    wrong = []
    for who, surface, vehicle, template, owner_of_record, why in WRONG_PARENT:
        rid = _record_id(records, template, owner_of_record)
        fill = {"trip": rid, "charge": rid, "report": rid, "lock": rid}
        path = template.format(v=api.vehicle_id(vehicle), **fill)
        response = await api.get(who, surface, path)
        if response.status_code != 404:
            wrong.append(f"{who} {path}: {response.status_code} ({why})")
        # Asked the other way: the record is there, under its own vehicle, for its keeper.
        keeper, keeper_surface = KEEPERS[owner_of_record]
        own = template.format(v=api.vehicle_id(owner_of_record), **fill)
        mine = await api.get(keeper, keeper_surface, own)
        if mine.status_code != 200:
            wrong.append(f"{keeper} {own}: {mine.status_code} (the record's own vehicle)")
    assert not wrong, "\n".join(wrong)


async def test_not_found_and_not_authorized_are_identical(api: Api, records: Records) -> None:
    # Enumeration: a real trip id of someone else answers exactly like a made-up one.
    theirs = await api.get("mallory", M, _path(api, records, TR, "ALICE-1"))
    path = f"/vehicles/{UNKNOWN_VEHICLE}/trips/trp_aaaaaaaaaaaaaaaaaaaaaaaaaa"
    none = await api.get("mallory", M, path)
    assert theirs.status_code == none.status_code == 404
    strip = {"instance"}
    assert {k: v for k, v in theirs.json().items() if k not in strip} == {
        k: v for k, v in none.json().items() if k not in strip
    }


async def _all(
    api: Api, who: str, surface: Surface, path: str, **token: Any
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(20):
        page = await api.get(who, surface, path + (f"?cursor={cursor}" if cursor else ""), **token)
        assert page.status_code == 200, page.text
        body = page.json()
        assert len(body["items"]) <= PAGE_CAP
        items += body["items"]
        cursor = body["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


async def _ids(api: Api, model: Any, label: str) -> set[str]:
    async with api.platform.services() as (_, ctx):
        column = model.vehicle_id == api.vehicle_id(label)
        return set(await ctx.session.scalars(select(model.id).where(column)))


async def test_the_buyer_never_sees_the_sellers_history(api: Api, records: Records) -> None:
    # Privacy across a sale: the seeded DAVE-1 history predates dave's ownership (carol's
    # trips); dave sees only what happened since he bought it.
    for template, model, mine in (
        (T, Trip, records.trips["DAVE-1"]),
        (C, ChargingSession, records.charging["DAVE-1"]),
        (G, DiagnosticReport, records.reports["DAVE-1"]),
    ):
        seen = {
            i["id"] for i in await _all(api, "dave", M, template.format(v=api.vehicle_id("DAVE-1")))
        }
        stored = await _ids(api, model, "DAVE-1")
        async with api.platform.services() as (_, ctx):
            sold_at = await ctx.session.scalar(
                select(Ownership.valid_from).where(
                    Ownership.vehicle_id == api.vehicle_id("DAVE-1"),
                    Ownership.owner_user_id == api.world.users["dave"].id,
                )
            )
            column = model.started_at if model is not DiagnosticReport else model.created_at
            before = set(
                await ctx.session.scalars(
                    select(model.id).where(
                        model.vehicle_id == api.vehicle_id("DAVE-1"), column < sold_at
                    )
                )
            )
        assert mine in seen
        assert before, "the demo world has pre-sale history"
        assert not seen & before, template
        assert seen <= stored


async def test_the_buyer_cannot_fetch_the_sellers_record_by_id(api: Api, records: Records) -> None:
    # The window bounds the single-record reads too, not only the lists: a pre-sale record's
    # id (learnt from the seller, a receipt, an old export) answers 404 to the buyer.
    async with api.platform.services() as (_, ctx):
        sold_at = await ctx.session.scalar(
            select(Ownership.valid_from).where(
                Ownership.vehicle_id == api.vehicle_id("DAVE-1"),
                Ownership.owner_user_id == api.world.users["dave"].id,
            )
        )
    assert sold_at is not None
    car = api.vehicle_id("DAVE-1")
    wrong: list[str] = []
    for template, mine, earlier in (
        (
            TR,
            records.trips["DAVE-1"],
            select(Trip.id).where(Trip.vehicle_id == car, Trip.started_at < sold_at),
        ),
        (
            CR,
            records.charging["DAVE-1"],
            select(ChargingSession.id).where(
                ChargingSession.vehicle_id == car, ChargingSession.started_at < sold_at
            ),
        ),
        (
            GR,
            records.reports["DAVE-1"],
            select(DiagnosticReport.id).where(
                DiagnosticReport.vehicle_id == car, DiagnosticReport.created_at < sold_at
            ),
        ),
    ):
        async with api.platform.services() as (_, ctx):
            before = await ctx.session.scalar(earlier.limit(1))
        assert before is not None, "the demo world has pre-sale history"
        for rid, expected in ((mine, 200), (before, 404)):
            fill = {"trip": rid, "charge": rid, "report": rid}
            path = template.format(v=car, **fill)
            response = await api.get("dave", M, path)
            if response.status_code != expected:
                wrong.append(f"dave {path}: {response.status_code}, expected {expected}")
    assert not wrong, "\n".join(wrong)


async def test_a_driver_sees_only_their_window(api: Api, records: Records) -> None:
    # A driver delegated trips sees trips since the delegation began, never the owner's
    # earlier ones.
    clock = _clock(api)
    clock.advance(timedelta(minutes=5))
    async with api.platform.services() as (uow, ctx):
        dave_car = api.world.vehicles["DAVE-1"]
        await DelegationService(ctx).delegate(
            dave_car,
            api.world.users["dave"],
            api.world.users["mallory"],
            [Permission.VEHICLE_READ_TRIPS.value],
            valid_until=clock.now() + timedelta(days=1),
            actor=Actor.user(api.world.users["dave"].id),
        )
        await uow.commit()
    clock.advance(timedelta(minutes=5))
    later = trip(api.vehicle_id("DAVE-1"), clock.now())
    await _add(api, later)
    path = T.format(v=api.vehicle_id("DAVE-1"))
    seen = {i["id"] for i in await _all(api, "mallory", M, path)}
    assert seen == {later.id}
    owner = {i["id"] for i in await _all(api, "dave", M, path)}
    assert {later.id, records.trips["DAVE-1"]} <= owner


async def test_fleet_and_partner_windows(api: Api, records: Records) -> None:
    # A fleet sees history since the vehicle joined it; a partner since the consent.
    fleet = {i["id"] for i in await _all(api, "erin", F, T.format(v=api.vehicle_id("ACME-N1")))}
    assert fleet == {records.trips["ACME-N1"]}
    charging = C.format(v=api.vehicle_id("ALICE-1"))
    partner = {i["id"] for i in await _all(api, PARTNER_APP, P, charging)}
    stored = await _ids(api, ChargingSession, "ALICE-1")
    assert records.charging["ALICE-1"] in partner
    assert partner < stored  # the session that predates the consent is not shown


async def test_an_operator_sees_a_moved_vehicle_only_since_it_joined_their_group(
    api: Api, records: Records
) -> None:
    """ACME-S1 moves from the south group to frank's north group: frank sees its trips from
    the move on, none of its time in the south group; the fleet admin sees them all."""
    clock = _clock(api)
    clock.advance(timedelta(minutes=5))
    async with api.platform.services() as (uow, ctx):
        car = api.world.vehicles["ACME-S1"]
        groups = {g.name: g for g in await ctx.session.scalars(select(FleetGroup))}
        link = await ctx.session.scalar(
            select(GroupVehicle).where(
                GroupVehicle.vehicle_id == car.id, GroupVehicle.valid_until.is_(None)
            )
        )
        assert link is not None and link.group_id == groups["south"].id
        fleets = FleetService(ctx)
        erin = Actor.user(api.world.users["erin"].id)
        assert await fleets.remove_from_group(groups["south"], link, actor=erin)
        await fleets.add_to_group(groups["north"], car, actor=erin)
        await uow.commit()
    clock.advance(timedelta(minutes=5))
    later = trip(api.vehicle_id("ACME-S1"), clock.now())
    await _add(api, later)
    path = T.format(v=api.vehicle_id("ACME-S1"))
    assert {i["id"] for i in await _all(api, "frank", F, path)} == {later.id}
    earlier = await api.get("frank", F, f"{path}/{records.trips['ACME-S1']}")
    assert earlier.status_code == 404
    admin = {i["id"] for i in await _all(api, "erin", F, path)}
    assert admin == {records.trips["ACME-S1"], later.id}


async def test_coordinates_follow_read_location(api: Api, records: Records) -> None:
    # Location history: coordinates only when vehicle:read_location is also allowed; without
    # it the fields are absent (not null).
    path = _path(api, records, TR, "ALICE-1")
    full = await api.get("alice", M, path)
    assert full.status_code == 200 and set(full.json()) >= COORDINATES
    scopes = {p.value for p in Permission} - {Permission.VEHICLE_READ_LOCATION.value}
    narrowed = await api.get("alice", M, path, scopes=scopes)
    assert narrowed.status_code == 200
    assert not COORDINATES & set(narrowed.json())
    listed = await _all(api, "alice", M, T.format(v=api.vehicle_id("ALICE-1")), scopes=scopes)
    assert listed and all(not COORDINATES & set(item) for item in listed)
    with_places = await _all(api, "alice", M, T.format(v=api.vehicle_id("ALICE-1")))
    assert with_places and all(set(item) >= COORDINATES for item in with_places)


async def test_partner_views_are_minimised(api: Api, records: Records) -> None:
    # Data minimisation: a partner gets no state of charge detail, no location, no people.
    charging = await _all(api, PARTNER_APP, P, C.format(v=api.vehicle_id("ALICE-1")))
    assert charging
    expected = {"id", "started_at", "ended_at", "energy_kwh", "charger_kind"}
    assert all(set(item) == expected for item in charging)


async def test_partner_trips_are_minimised_when_consented(api: Api, records: Records) -> None:
    # Even with a trips consent, a partner never receives coordinates, and only trips since
    # the consent began.
    clock = _clock(api)
    clock.advance(timedelta(minutes=1))
    async with api.platform.services() as (uow, ctx):
        consents = ConsentService(ctx)
        alice = api.world.users["alice"]
        current = await ctx.session.scalar(
            select(PartnerConsent).where(PartnerConsent.vehicle_id == api.vehicle_id("ALICE-1"))
        )
        assert current is not None
        await consents.revoke(current, actor=Actor.user(alice.id))
        await consents.grant(
            api.world.tenants["insureco"],
            api.world.vehicles["ALICE-1"],
            alice,
            (Permission.VEHICLE_READ_CHARGING, Permission.VEHICLE_READ_TRIPS),
            valid_until=clock.now() + timedelta(days=1),
            actor=Actor.user(alice.id),
        )
        await uow.commit()
    clock.advance(timedelta(minutes=1))
    later = trip(api.vehicle_id("ALICE-1"), clock.now())
    await _add(api, later)
    trips = await _all(api, PARTNER_APP, P, T.format(v=api.vehicle_id("ALICE-1")))
    assert [t["id"] for t in trips] == [later.id]  # the owner's earlier trip is not shown
    assert set(trips[0]) == {"id", "started_at", "ended_at", "distance_km"}


async def test_engineer_sees_diagnostics_pseudonymised(api: Api, records: Records) -> None:
    # Privacy for staff: reports across vehicles, never a vehicle id, VIN, label or owner.
    first = await _all(api, "ken", A, "/diagnostics")
    second = await _all(api, "ken", A, "/diagnostics")
    async with api.platform.services() as (_, ctx):
        stored = len(list(await ctx.session.scalars(select(DiagnosticReport.id))))
    assert len(first) == stored
    expected = {"vehicle", "model", "software_version", "trouble_codes", "created_at"}
    assert all(set(item) == expected for item in first)
    assert [i["vehicle"] for i in first] == [i["vehicle"] for i in second]  # stable
    assert len({i["vehicle"] for i in first}) == len(LABELS)  # one per vehicle with reports
    response = await api.get("ken", A, "/diagnostics")
    forbidden = [v.id for v in api.world.vehicles.values()]
    forbidden += [v.vin for v in api.world.vehicles.values()]
    forbidden += [v.label for v in api.world.vehicles.values()]
    forbidden += [u.id for u in api.world.users.values()]
    assert not [s for s in forbidden if s in response.text]


@pytest.mark.parametrize(
    ("who", "why"),
    [
        ("judy", "platform admin: diagnostics are not hers"),
        ("heidi", "support agent on the admin surface"),
    ],
)
async def test_other_staff_get_no_diagnostics(
    api: Api, records: Records, who: str, why: str
) -> None:
    response = await api.get(who, A, "/diagnostics")
    assert response.status_code == 403, why
    assert api.vehicle_id("ALICE-1") not in response.text


@pytest.mark.parametrize("who", ["judy", "heidi"])
@pytest.mark.parametrize("with_records", [False, True])
async def test_other_staff_are_refused_diagnostics_on_an_empty_page(
    api: Api, who: str, with_records: bool
) -> None:
    # BFLA: the function is refused whatever the page holds. A platform admin or support
    # agent asking for a page past the last report (or before any report exists) must not
    # get a 200, which would also tell them whether reports exist after a given id.
    if with_records:
        await _add(api, _report(api.vehicle_id("ALICE-1"), _clock(api).now()))
    past_the_end = encode_cursor("dgr_" + "z" * 26)
    for path in ("/diagnostics", f"/diagnostics?cursor={past_the_end}"):
        response = await api.get(who, A, path)
        assert response.status_code == 403, (path, response.status_code)
    engineer = await api.get("ken", A, f"/diagnostics?cursor={past_the_end}")
    assert engineer.status_code == 200 and engineer.json()["items"] == []


async def test_command_jobs_follow_the_command_permission(api: Api, records: Records) -> None:
    # A driver sees jobs of the families they may send (lock, climate), never unlock; nobody
    # sees jobs from before their relationship began.
    path = J.format(v=api.vehicle_id("ALICE-1"))
    owner = {i["id"] for i in await _all(api, "alice", M, path)}
    driver = await _all(api, "bob", M, path)
    jobs = records.jobs
    assert owner == {jobs["lock"], jobs["unlock"], jobs["climate"]}
    assert {i["id"] for i in driver} == {jobs["lock"], jobs["climate"]}
    by_id = {i["id"]: i for i in driver}
    assert by_id[jobs["climate"]]["requested_by_me"] is True
    assert by_id[jobs["lock"]]["requested_by_me"] is False
    assert "requested_by" not in by_id[jobs["lock"]]
    detail = await api.get("bob", M, _path(api, records, JL, "ALICE-1"))
    assert [t["to_state"] for t in detail.json()["transitions"]] == ["requested", "executed"]
    old = await api.get("alice", M, f"{path}/{jobs['old']}")
    assert old.status_code == 404


async def test_lists_are_paginated_and_capped(api: Api, records: Records) -> None:
    # Resource consumption: a huge limit is capped; the cursor walks every row exactly once.
    now = _clock(api).now()
    extra = [trip(api.vehicle_id("ALICE-1"), now + timedelta(seconds=i)) for i in range(5)]
    _clock(api).advance(timedelta(minutes=1))
    await _add(api, *extra)
    path = T.format(v=api.vehicle_id("ALICE-1"))
    page = await api.get("alice", M, path + "?limit=1000")
    assert page.status_code == 200
    assert len(page.json()["items"]) == PAGE_CAP
    seen = [i["id"] for i in await _all(api, "alice", M, path)]
    assert len(seen) == len(set(seen)) == 6
    assert set(seen) == {t.id for t in extra} | {records.trips["ALICE-1"]}


@pytest.mark.parametrize(
    ("who", "surface", "template"),
    [
        ("alice", M, T),
        ("alice", M, C),
        ("alice", M, G),
        ("alice", M, J),
        (PARTNER_APP, P, C),
        ("grace", D, G),
    ],
)
async def test_a_bad_cursor_is_refused(
    api: Api, records: Records, who: str, surface: Surface, template: str
) -> None:
    # Hostile input: a forged, oversized, look-alike or empty cursor is a 422, never a 500.
    path = template.format(v=api.vehicle_id("ALICE-1"))
    for cursor in ["%25%25%25", "x" * 200, "\u0430bc", "AA", "null"]:
        response = await api.get(who, surface, f"{path}?cursor={cursor}")
        assert response.status_code == 422, cursor
    admin = await api.get("ken", A, "/diagnostics?cursor=%25%25")
    assert admin.status_code == 422


def _fix(latitude: float) -> dict[str, object]:
    return {
        "Vehicle.CurrentLocation.Latitude": latitude,
        "Vehicle.CurrentLocation.Longitude": 11.5,
        "Vehicle.CurrentLocation.Heading": 90,
    }


async def test_the_last_location_is_bounded_like_location_history(api: Api) -> None:
    # The current location is the newest point of the location history: a fix the car
    # reported before the caller's relationship began (where the seller parked it, where the
    # owner was before the driver's window) is not theirs to see, on /location nor on the
    # vehicle's detail; one reported since is.
    car = api.world.vehicles["DAVE-1"]
    async with api.platform.services() as (_, ctx):
        sold_at = await ctx.session.scalar(
            select(Ownership.valid_from).where(
                Ownership.vehicle_id == car.id,
                Ownership.owner_user_id == api.world.users["dave"].id,
            )
        )
    assert sold_at is not None
    await _add(api, accepted_message(car, sold_at - timedelta(minutes=1), _fix(48.1)))
    detail = f"/vehicles/{car.id}"
    before = await api.get("dave", M, detail + "/location")
    assert before.status_code == 200, before.text
    assert before.json()["latitude"] is None and before.json()["recorded_at"] is None
    assert "latitude" not in (await api.get("dave", M, detail)).json()["location"]
    await _add(api, accepted_message(car, _clock(api).now(), _fix(52.5), sequence=2))
    after = await api.get("dave", M, detail + "/location")
    assert after.json()["latitude"] == 52.5
    assert (await api.get("dave", M, detail)).json()["location"]["latitude"] == 52.5
