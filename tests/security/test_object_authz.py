"""Vehicle object routes over the seeded demo world, through HTTP with real tokens.

Each case is one row of the policy table (docs/authorization.md), asked both ways; a comment
says which threat it covers. Not-found and not-authorized must answer the same bytes.
"""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
from sqlalchemy import select

from fleetward.audit.recorder import Actor
from fleetward.core.surfaces import Surface
from fleetward.identity.models import User
from fleetward.store.base import ID_LENGTH
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.models import DriverDelegation, Vehicle
from support.api import PARTNER_APP, UNKNOWN_VEHICLE, Api

UNKNOWN = UNKNOWN_VEHICLE
NOT_FOUND = "urn:fleetward:problem:not-found"


M, F, D, P = Surface.MOBILE, Surface.FLEET, Surface.DEALER, Surface.PARTNER

# (who, surface, path template, vehicle, expected status, why)
CASES = [
    ("alice", M, "/vehicles/{id}", "ALICE-1", 200, "owner reads her vehicle"),
    ("alice", M, "/vehicles/{id}/status", "ALICE-1", 200, "owner reads status"),
    ("alice", M, "/vehicles/{id}/location", "ALICE-1", 200, "owner reads location"),
    ("alice", M, "/vehicles/{id}", "MALLORY-1", 404, "BOLA: owner of one car, another's id"),
    ("mallory", M, "/vehicles/{id}", "ALICE-1", 404, "BOLA: attacker with a known id"),
    ("mallory", M, "/vehicles/{id}/status", "ALICE-1", 404, "BOLA on status"),
    ("mallory", M, "/vehicles/{id}/location", "ALICE-1", 404, "BOLA on location (stalking)"),
    ("bob", M, "/vehicles/{id}/status", "ALICE-1", 200, "driver: delegated status"),
    ("bob", M, "/vehicles/{id}/location", "ALICE-1", 404, "driver: location not delegated"),
    ("carol", M, "/vehicles/{id}", "DAVE-1", 404, "former owner keeps nothing after sale"),
    ("carol", M, "/vehicles/{id}/status", "DAVE-1", 404, "former owner: no status"),
    ("dave", M, "/vehicles/{id}/status", "DAVE-1", 200, "buyer reads his vehicle"),
    ("erin", F, "/vehicles/{id}", "ACME-N1", 200, "fleet admin: own fleet"),
    ("erin", F, "/vehicles/{id}/status", "ACME-S1", 200, "fleet admin: any group"),
    ("erin", F, "/vehicles/{id}", "GLOBEX-1", 404, "cross-tenant fleet isolation"),
    ("erin", F, "/vehicles/{id}/status", "GLOBEX-1", 404, "cross-tenant status"),
    ("frank", F, "/vehicles/{id}/status", "ACME-N1", 200, "operator: assigned group"),
    ("frank", F, "/vehicles/{id}/status", "ACME-S1", 404, "operator: unassigned group"),
    ("grace", D, "/vehicles/{id}", "ALICE-1", 200, "technician with an open assigned case"),
    ("harry", D, "/vehicles/{id}", "ALICE-1", 404, "technician without a case on it"),
    ("harry", D, "/vehicles/{id}", "DAVE-1", 404, "technician after the case closed"),
    ("judy", M, "/vehicles/{id}", "ALICE-1", 404, "platform admin: no vehicle data (SoD)"),
    ("judy", F, "/vehicles/{id}/location", "ACME-N1", 404, "platform admin: no location"),
    (PARTNER_APP, P, "/vehicles/{id}/status", "ALICE-1", 200, "partner: consented vehicle"),
    (PARTNER_APP, P, "/vehicles/{id}/status", "MALLORY-1", 404, "partner: no consent"),
    ("alice", M, "/vehicles/{id}", "unknown", 404, "unknown id"),
]


async def test_policy_table(api: Api) -> None:
    # One world for the whole table (seeding is the slow part); every failing row is named.
    wrong = []
    for who, surface, path, vehicle, status, why in CASES:
        response = await api.get(who, surface, path.format(id=api.vehicle_id(vehicle)))
        if response.status_code != status:
            wrong.append(f"{who} {surface.value} {path} {vehicle}: {response.status_code} ({why})")
    assert not wrong, "\n".join(wrong)


async def test_not_found_and_not_authorized_are_identical(api: Api) -> None:
    # Enumeration: a caller must not learn that an id exists by the shape of the refusal.
    mine = await api.get("mallory", M, f"/vehicles/{api.vehicle_id('ALICE-1')}")
    none = await api.get("mallory", M, f"/vehicles/{UNKNOWN}")
    assert mine.status_code == none.status_code == 404
    strip = {"instance"}
    body_a = {k: v for k, v in mine.json().items() if k not in strip}
    body_b = {k: v for k, v in none.json().items() if k not in strip}
    assert body_a == body_b
    assert "reason" not in body_a


async def test_detail_fields_follow_permissions(api: Api) -> None:
    # Data minimisation: a driver without read_location gets no location block at all.
    owner = await api.get("alice", M, f"/vehicles/{api.vehicle_id('ALICE-1')}")
    driver = await api.get("bob", M, f"/vehicles/{api.vehicle_id('ALICE-1')}")
    assert owner.status_code == driver.status_code == 200
    assert "location" in owner.json()
    assert "location" not in driver.json()


async def test_partner_fields_are_minimised(api: Api) -> None:
    # Partners get the consented data only: no VIN, label, model or people.
    response = await api.get(PARTNER_APP, P, f"/vehicles/{api.vehicle_id('ALICE-1')}/status")
    assert response.status_code == 200
    assert set(response.json()) == {"id", "state"}


@pytest.mark.parametrize(
    ("who", "surface", "expected"),
    [
        ("alice", M, {"ALICE-1"}),  # owner: her car only
        ("bob", M, {"ALICE-1"}),  # driver: the delegated car only
        ("carol", M, set()),  # former owner: nothing
        ("mallory", M, {"MALLORY-1"}),  # attacker: never anyone else's
        ("erin", F, {"ACME-N1", "ACME-N2", "ACME-N3", "ACME-S1", "ACME-S2"}),
        ("frank", F, {"ACME-N1", "ACME-N2", "ACME-N3"}),  # operator: assigned group only
        ("gina", F, {"GLOBEX-1", "GLOBEX-2"}),  # other tenant: its own fleet only
    ],
)
async def test_lists_never_include_others_vehicles(
    api: Api, who: str, surface: Surface, expected: set[str]
) -> None:
    response = await api.get(who, surface, "/vehicles")
    assert response.status_code == 200
    labels = {item["label"] for item in response.json()["items"]}
    assert labels == expected


async def test_list_pages_with_an_opaque_cursor(api: Api) -> None:
    # Pagination is capped and complete: every page is the caller's, none repeats.
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        query = "/vehicles?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.get("erin", F, query)).json()
        seen += [item["label"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == ["ACME-N1", "ACME-N2", "ACME-N3", "ACME-S1", "ACME-S2"]


async def test_a_bad_cursor_is_refused(api: Api) -> None:
    # Hostile input: a forged, oversized or look-alike cursor is a 422, never a 500.
    for cursor in ["%25%25%25", "x" * 200, "\u0430bc", "AA", "null"]:
        response = await api.get("alice", M, f"/vehicles?cursor={cursor}")
        assert response.status_code == 422, cursor


async def test_a_driver_loses_the_vehicle_when_the_window_ends(api: Api) -> None:
    # Lifecycle: an expired delegation grants nothing, on the next request.
    path = f"/vehicles/{api.vehicle_id('ALICE-1')}/status"
    assert (await api.get("bob", M, path)).status_code == 200
    api.platform.clock.advance(timedelta(days=7, seconds=1))  # type: ignore[attr-defined]
    assert (await api.get("bob", M, path)).status_code == 404
    assert (await api.get("alice", M, path)).status_code == 200


async def test_a_driver_loses_the_vehicle_when_revoked(api: Api) -> None:
    # Lifecycle: revocation takes effect at once, whatever the window said.
    path = f"/vehicles/{api.vehicle_id('ALICE-1')}/status"
    async with api.platform.services() as (uow, ctx):
        delegation = await ctx.session.scalar(
            select(DriverDelegation).where(
                DriverDelegation.driver_user_id == api.world.users["bob"].id
            )
        )
        assert delegation is not None
        await DelegationService(ctx).revoke(
            delegation, actor=Actor.user(delegation.granted_by_user_id)
        )
        await uow.commit()
    assert (await api.get("bob", M, path)).status_code == 404
    listed = (await api.get("bob", M, "/vehicles")).json()["items"]
    assert listed == []


async def test_a_list_keeps_only_the_rows_the_pdp_allows(api: Api) -> None:
    # The list query is a superset (any delegation in force); each row is still decided. A
    # driver delegated only vehicle:lock may not read the car's status, so it is not listed
    # (nor readable) although the query finds it.
    async with api.platform.services() as (uow, ctx):
        car = await ctx.session.get(Vehicle, api.vehicle_id("ALICE-1"))
        alice = await ctx.session.get(User, api.world.users["alice"].id)
        mallory = await ctx.session.get(User, api.world.users["mallory"].id)
        assert car is not None and alice is not None and mallory is not None
        await DelegationService(ctx).delegate(
            car,
            alice,
            mallory,
            ["vehicle:lock"],
            valid_until=ctx.clock.now() + timedelta(days=1),
            actor=Actor.user(alice.id),
        )
        await uow.commit()
    status = await api.get("mallory", M, f"/vehicles/{api.vehicle_id('ALICE-1')}/status")
    assert status.status_code == 404
    listed = (await api.get("mallory", M, "/vehicles")).json()["items"]
    assert {item["label"] for item in listed} == {"MALLORY-1"}


async def test_an_operators_pages_and_cursors_hold_only_their_groups(api: Api) -> None:
    # A list cut into pages before it is filtered would name another group's vehicle in a
    # cursor (or hand out empty pages): the query itself holds only the operator's groups.
    north = {api.vehicle_id(label) for label in ("ACME-N1", "ACME-N2", "ACME-N3")}
    cursor: str | None = None
    seen: list[str] = []
    for _ in range(10):
        query = "/vehicles?limit=1" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.get("frank", F, query)).json()
        assert len(page["items"]) == 1  # never an empty page filtered after the cut
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
        last = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        assert last in north
    assert set(seen) == north


# (who, surface, path): a NUL in an id can name no object; PostgreSQL refuses the byte
# (asyncpg: invalid byte sequence), which reached the client as an opaque 500.
NUL_IDS = [
    ("heidi", Surface.SUPPORT, "/cases/a%00b"),
    ("heidi", Surface.SUPPORT, "/cases/a%00b/account"),
    ("grace", D, "/cases/a%00b/vehicle"),
    ("erin", F, "/groups/a%00b"),
    ("erin", F, "/groups/a%00b/vehicles"),
    ("alice", M, "/vehicles/a%00b/status"),
]


async def test_an_id_with_a_control_character_is_not_found(api: Api) -> None:
    wrong = []
    for who, surface, path in NUL_IDS:
        response = await api.get(who, surface, path)
        if response.status_code != 404 or response.json()["type"] != NOT_FOUND:
            wrong.append(f"{who} {path}: {response.status_code}")
    assert not wrong, "\n".join(wrong)


async def test_an_id_longer_than_any_id_is_not_found(api: Api) -> None:
    # No stored object's id is longer than the store's id column, whatever the parameter:
    # the missing object's 404 before any store sees it (as for a control character).
    wrong = []
    for who, surface, path in NUL_IDS:
        long = path.replace("a%00b", "a" * (ID_LENGTH + 1))
        response = await api.get(who, surface, long)
        if response.status_code != 404 or response.json()["type"] != NOT_FOUND:
            wrong.append(f"{who} {long}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
