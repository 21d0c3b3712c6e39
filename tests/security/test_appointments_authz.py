"""Service appointments over the seeded demo world, through HTTP with real tokens.

Booking needs ``vehicle:book_service`` on the vehicle (owner, a driver it was delegated to,
fleet admin, fleet operator of the vehicle's group); dealers see and confirm only what was
booked with their own tenant, never who booked it. Every refused write changes nothing (the
store is read back), and every row names the threat it covers.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, TenantKind, User
from fleetward.vehicles.appointments import OPEN_STATUSES, AppointmentService
from fleetward.vehicles.models import Vehicle
from fleetward.vehicles.ownership import OwnershipService
from fleetward.vehicles.records import AppointmentStatus, ServiceAppointment
from support.api import PARTNER_APP, Api
from support.snapshot import snapshot
from unit.authz.kit import ALL_SCOPES

M, F, D = Surface.MOBILE, Surface.FLEET, Surface.DEALER
_AUDIT_ONLY = {"audit_events"}


def _clock(api: Api) -> FrozenClock:
    clock = api.platform.clock
    assert isinstance(clock, FrozenClock)
    return clock


def _body(
    api: Api, *, days: float = 7, note: str = "brakes squeak", **extra: Any
) -> dict[str, Any]:
    when = _clock(api).now() + timedelta(days=days)
    return {
        "dealer_id": api.world.tenants["downtown-motors"].id,
        "scheduled_for": when.isoformat(),
        "note": note,
        **extra,
    }


def _base(api: Api, label: str) -> str:
    return f"/vehicles/{api.vehicle_id(label)}/appointments"


async def _book(api: Api, who: str, surface: Surface, label: str, **body: Any) -> dict[str, Any]:
    response = await api.post(who, surface, _base(api, label), _body(api, **body))
    assert response.status_code == 201, response.text
    booked: dict[str, Any] = response.json()
    return booked


async def _status(api: Api, appointment_id: str) -> AppointmentStatus:
    async with api.platform.services() as (_, ctx):
        found = await ctx.session.get(ServiceAppointment, appointment_id)
        assert found is not None
        return found.status


async def _events(api: Api, name: str, appointment_id: str) -> int:
    async with api.platform.services() as (_, ctx):
        rows = await ctx.session.scalars(
            select(AuditRecord.id).where(
                AuditRecord.name == name, AuditRecord.object_id == appointment_id
            )
        )
        return len(list(rows))


async def _unchanged(api: Api, before: dict[str, Any]) -> list[str]:
    async with api.platform.services() as (_, ctx):
        after = await snapshot(ctx.session)
    return sorted(t for t in before if before[t] != after[t] and t not in _AUDIT_ONLY)


async def _snapshot(api: Api) -> dict[str, Any]:
    async with api.platform.services() as (_, ctx):
        return await snapshot(ctx.session)


# (who, surface, vehicle, expected status, why)
BOOKING = [
    ("alice", M, "ALICE-1", 201, "owner books service"),
    ("bob", M, "ALICE-1", 404, "driver: booking was not delegated"),
    ("mallory", M, "ALICE-1", 404, "BOLA: booking under someone else's car"),
    ("carol", M, "DAVE-1", 404, "former owner keeps nothing after the sale"),
    ("dave", M, "DAVE-1", 201, "buyer books for his car"),
    ("erin", F, "ACME-S1", 201, "fleet admin: any vehicle of the fleet"),
    ("frank", F, "ACME-N1", 201, "fleet operator: a vehicle of the assigned group"),
    ("frank", F, "ACME-S1", 404, "fleet operator: another group"),
    ("gina", F, "ACME-N1", 404, "cross-tenant fleet isolation"),
    ("grace", M, "ALICE-1", 404, "dealer technician: books nothing for the owner"),
    ("heidi", M, "ALICE-1", 404, "support agent: read-only"),
    ("judy", M, "ALICE-1", 404, "platform admin: no vehicle actions"),
    ("alice", M, "unknown", 404, "unknown vehicle"),
]


async def test_booking_policy_table(api: Api) -> None:
    wrong = []
    for who, surface, label, status, why in BOOKING:
        before = await _snapshot(api)
        response = await api.post(who, surface, _base(api, label), _body(api))
        if response.status_code != status:
            wrong.append(f"{who} {label}: {response.status_code} ({why})")
        if status != 201 and await _unchanged(api, before):
            wrong.append(f"{who} {label}: a refused booking changed the store ({why})")
        if status == 201:
            booked = response.json()
            assert booked["status"] == "requested"
            assert await _events(api, "vehicle:appointment:booked", booked["id"]) == 1
    assert not wrong, "\n".join(wrong)


async def test_bad_bodies_are_refused_and_change_nothing(api: Api) -> None:
    # Hostile input: server-owned fields, bad dates, bad dealers, long or odd notes.
    now = _clock(api).now()
    consumer = api.world.tenants["consumer"].id
    cases: list[tuple[dict[str, Any], str]] = [
        (_body(api, status="confirmed"), "mass assignment of the status"),
        (_body(api, vehicle_id=api.vehicle_id("MALLORY-1")), "mass assignment of the vehicle"),
        (_body(api, booked_by_user_id="usr_x"), "mass assignment of the booker"),
        (_body(api, days=-1), "a date in the past"),
        (_body(api, days=0), "now is not in the future"),
        (_body(api, days=181), "more than 180 days ahead"),
        (_body(api, note="x" * 501), "an over-long note"),
        (_body(api, note="hello\x00world"), "a control character in the note"),
        ({**_body(api), "scheduled_for": now.replace(tzinfo=None).isoformat()}, "naive time"),
        ({**_body(api), "scheduled_for": "tomorrow"}, "not a time"),
        ({**_body(api), "dealer_id": consumer}, "a tenant that is not a dealer"),
        ({**_body(api), "dealer_id": api.world.tenants["insureco"].id}, "a partner tenant"),
        ({**_body(api), "dealer_id": "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa"}, "an unknown dealer"),
        ({**_body(api), "dealer_id": "ten_../../x"}, "a malformed dealer id"),
        ({**_body(api), "dealer_id": ["ten_x"]}, "an array for an id"),
        ({k: v for k, v in _body(api).items() if k != "dealer_id"}, "no dealer"),
    ]
    before = await _snapshot(api)
    wrong = []
    for body, why in cases:
        response = await api.post("alice", M, _base(api, "ALICE-1"), body)
        if response.status_code != 422:
            wrong.append(f"{why}: {response.status_code}")
    for raw in (b"null", b"[]", b"{}", b'"x"', b"{" * 50):
        response = await api.client.post(
            f"/mobile/v1{_base(api, 'ALICE-1')}",
            content=raw,
            headers={**api.headers("alice", M), "content-type": "application/json"},
        )
        if response.status_code != 422:
            wrong.append(f"raw body {raw[:10]!r}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
    assert await _unchanged(api, before) == []


async def test_unknown_and_non_dealer_answer_the_same(api: Api) -> None:
    # Enumeration of the tenant directory through the body: same problem for both.
    path = _base(api, "ALICE-1")
    consumer = await api.post(
        "alice", M, path, {**_body(api), "dealer_id": api.world.tenants["consumer"].id}
    )
    unknown = await api.post(
        "alice", M, path, {**_body(api), "dealer_id": "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa"}
    )
    strip = {"instance"}
    assert consumer.status_code == unknown.status_code == 422
    assert {k: v for k, v in consumer.json().items() if k not in strip} == {
        k: v for k, v in unknown.json().items() if k not in strip
    }


async def test_boundaries_of_the_schedule(api: Api) -> None:
    # The last allowed instant is accepted; a note of exactly 500 characters too.
    booked = await _book(api, "alice", M, "ALICE-1", days=180, note="n" * 500)
    assert booked["status"] == "requested"


async def test_reads_follow_the_vehicle_and_the_window(api: Api) -> None:
    booked = await _book(api, "alice", M, "ALICE-1")
    own = f"{_base(api, 'ALICE-1')}/{booked['id']}"
    # (who, path, expected status, why)
    rows = [
        ("alice", own, 200, "owner reads her booking"),
        ("mallory", own, 404, "BOLA on the booking"),
        ("mallory", f"{_base(api, 'MALLORY-1')}/{booked['id']}", 404, "child via wrong parent"),
        ("dave", f"{_base(api, 'DAVE-1')}/{booked['id']}", 404, "child via another owner's car"),
        ("bob", own, 404, "driver without book_service"),
    ]
    wrong = []
    for who, path, status, why in rows:
        response = await api.get(who, M, path)
        if response.status_code != status:
            wrong.append(f"{who} {path}: {response.status_code} ({why})")
    assert not wrong, "\n".join(wrong)
    listed = (await api.get("alice", M, _base(api, "ALICE-1"))).json()
    assert [a["id"] for a in listed["items"]] == [booked["id"]]
    assert listed["items"][0]["booked_by_me"] is True
    assert (await api.get("mallory", M, _base(api, "MALLORY-1"))).json()["items"] == []
    bad = await api.get("alice", M, _base(api, "ALICE-1") + "?cursor=%25%25")
    assert bad.status_code == 422


async def test_the_buyer_never_sees_the_sellers_bookings(api: Api) -> None:
    # Privacy across a sale: alice's booking (and its note) stays hers when she sells.
    booked = await _book(api, "alice", M, "ALICE-1", note="collect from my home address")
    _clock(api).advance(timedelta(minutes=1))
    async with api.platform.services() as (uow, ctx):
        await OwnershipService(ctx).transfer(
            api.world.vehicles["ALICE-1"],
            api.world.users["alice"],
            api.world.users["mallory"],
            actor=Actor.system("test"),
        )
        await uow.commit()
    listed = await api.get("mallory", M, _base(api, "ALICE-1"))
    assert listed.status_code == 200
    assert listed.json()["items"] == []
    one = await api.get("mallory", M, f"{_base(api, 'ALICE-1')}/{booked['id']}")
    assert one.status_code == 404
    seller = await api.get("alice", M, f"{_base(api, 'ALICE-1')}/{booked['id']}")
    assert seller.status_code == 404  # the former owner keeps nothing either


async def test_the_sellers_open_bookings_end_with_the_sale(api: Api) -> None:
    # A booking is made in the keeper's name: once the car is sold, nobody who may act on it
    # can see or cancel the seller's booking (the seller keeps nothing, the buyer never sees
    # it), so the sale cancels it, audited, and the dealer can no longer confirm a visit
    # for a car whose booker does not own it ("collect from my home address").
    requested = await _book(api, "alice", M, "ALICE-1", note="collect from my home address")
    confirmed = await _book(api, "alice", M, "ALICE-1", days=8)
    assert (await api.post("grace", D, f"/appointments/{confirmed['id']}/confirm")).is_success
    _clock(api).advance(timedelta(minutes=1))
    async with api.platform.services() as (uow, ctx):
        await OwnershipService(ctx).transfer(
            api.world.vehicles["ALICE-1"],
            api.world.users["alice"],
            api.world.users["mallory"],
            actor=Actor.system("test"),
        )
        await uow.commit()
    for booked in (requested, confirmed):
        assert await _status(api, booked["id"]) is AppointmentStatus.CANCELLED
        assert await _events(api, "vehicle:appointment:cancelled", booked["id"]) == 1
    late = await api.post("grace", D, f"/appointments/{requested['id']}/confirm")
    assert late.status_code == 409
    listed = (await api.get("grace", D, "/appointments")).json()["items"]
    assert {i["status"] for i in listed} == {"cancelled"}


# PostgreSQL only: on SQLite (one writer) the sale cannot commit while the booking's
# transaction holds the write lock (it waits, and the request is a 503 store-busy).
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_booking_racing_the_sale_does_not_survive_it(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The seller books; the sale completes (another transaction) after the booking was
    # authorized and before it was written, so the sale's cancellation of the seller's open
    # bookings did not see it. It would stand on the buyer's car, booked in the seller's
    # name ("collect from my home address"), for the dealer to confirm, and nobody who may
    # act on the car could see or cancel it. The booking is asked again under the
    # ownership's lock once written: refused like any booking the caller may not make.
    book = AppointmentService.book

    async def sold_meanwhile(service: AppointmentService, *args: Any, **kwargs: Any) -> Any:
        async with api.platform.services() as (uow, ctx):
            vehicle = await ctx.session.get(Vehicle, api.vehicle_id("ALICE-1"))
            seller = await ctx.session.get(User, api.world.users["alice"].id)
            buyer = await ctx.session.get(User, api.world.users["mallory"].id)
            assert vehicle is not None and seller is not None and buyer is not None
            await OwnershipService(ctx).transfer(vehicle, seller, buyer, actor=Actor.system("t"))
            await uow.commit()
        return await book(service, *args, **kwargs)

    monkeypatch.setattr(AppointmentService, "book", sold_meanwhile)
    response = await api.post(
        "alice", M, _base(api, "ALICE-1"), _body(api, note="collect from my home address")
    )
    assert response.status_code == 404, response.text
    async with api.platform.services() as (_, ctx):
        standing = await ctx.session.scalars(
            select(ServiceAppointment.id).where(
                ServiceAppointment.vehicle_id == api.vehicle_id("ALICE-1"),
                ServiceAppointment.status.in_(OPEN_STATUSES),
            )
        )
        assert list(standing) == []
    assert (await api.get("grace", D, "/appointments")).json()["items"] == []


async def test_cancel(api: Api) -> None:
    booked = await _book(api, "alice", M, "ALICE-1")
    path = f"{_base(api, 'ALICE-1')}/{booked['id']}/cancel"
    # Refused cancels change nothing: a stranger, the wrong parent.
    before = await _snapshot(api)
    assert (await api.post("mallory", M, path)).status_code == 404
    wrong_parent = f"{_base(api, 'MALLORY-1')}/{booked['id']}/cancel"
    assert (await api.post("mallory", M, wrong_parent)).status_code == 404
    assert (await api.post("bob", M, path)).status_code == 404
    assert await _unchanged(api, before) == []
    assert await _status(api, booked["id"]) is AppointmentStatus.REQUESTED
    # The owner cancels once; a second cancel is a conflict and changes nothing.
    done = await api.post("alice", M, path)
    assert done.status_code == 200
    assert done.json()["status"] == "cancelled"
    assert await _events(api, "vehicle:appointment:cancelled", booked["id"]) == 1
    before = await _snapshot(api)
    again = await api.post("alice", M, path)
    assert again.status_code == 409
    assert await _unchanged(api, before) == []
    assert await _events(api, "vehicle:appointment:cancelled", booked["id"]) == 1


async def _second_dealer(api: Api) -> str:
    """Another dealer tenant with one technician; returns a dealer-surface token for them."""
    async with api.platform.services() as (uow, ctx):
        directory = Directory(ctx)
        seeder = Actor.system("test")
        uptown = await directory.create_tenant(
            "uptown-motors", "Uptown Motors", TenantKind.DEALER, actor=seeder
        )
        ursula = await directory.create_user(
            "ursula", "Ursula", uptown, password_hash=None, actor=seeder
        )
        await directory.grant_membership(ursula, uptown, Role.DEALER_TECHNICIAN, actor=seeder)
        await uow.commit()
        tenant_id, user_id = uptown.id, ursula.id
    api.world.tenants["uptown-motors"] = uptown
    now = _clock(api).now()
    return api.platform.identity.tokens.issue(
        subject=user_id,
        client_id="cli_dealer",
        tenant=tenant_id,
        surface=D,
        scopes=sorted(ALL_SCOPES),
        auth_time=now - timedelta(seconds=30),
        acr=Acr.MFA.value,
        amr=["pwd", "otp"],
        token_family=None,
        subject_type="user",
    ).token


async def test_dealers_see_only_their_own_bookings(api: Api) -> None:
    ursula = await _second_dealer(api)
    ours = await _book(api, "alice", M, "ALICE-1", note="annual service")
    theirs = await _book(api, "dave", M, "DAVE-1", dealer_id=api.world.tenants["uptown-motors"].id)
    listed = await api.get("grace", D, "/appointments")
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [i["id"] for i in items] == [ours["id"]]
    # Minimised: the model, the time, the status and the note; never who or which vehicle.
    assert set(items[0]) == {"id", "vehicle_model", "scheduled_for", "status", "note"}
    vehicle = api.world.vehicles["ALICE-1"]
    leaks = [vehicle.id, vehicle.vin, vehicle.label, api.world.users["alice"].id, "alice"]
    assert not [s for s in leaks if s in listed.text]
    # The other dealer sees only theirs, through the same filter.
    other = await api.client.get(
        "/dealer/v1/appointments", headers={"authorization": f"Bearer {ursula}"}
    )
    assert [i["id"] for i in other.json()["items"]] == [theirs["id"]]


@pytest.mark.parametrize(
    ("who", "surface", "status", "why"),
    [
        ("harry", D, 200, "any technician of the dealer (the dealer's function)"),
        ("alice", D, 403, "a customer with a dealer-surface token: not a dealer"),
        ("erin", D, 403, "a fleet admin: not a dealer"),
        ("judy", D, 403, "platform admin: not a dealer"),
    ],
)
async def test_dealer_list_is_a_dealer_function(
    api: Api, who: str, surface: Surface, status: int, why: str
) -> None:
    await _book(api, "alice", M, "ALICE-1")
    response = await api.get(who, surface, "/appointments")
    assert response.status_code == status, why
    if status != 200:
        assert api.vehicle_id("ALICE-1") not in response.text


async def test_confirm(api: Api) -> None:
    ursula = await _second_dealer(api)
    ours = await _book(api, "alice", M, "ALICE-1")
    theirs = await _book(api, "dave", M, "DAVE-1", dealer_id=api.world.tenants["uptown-motors"].id)
    # (who, appointment, expected, why): refused ones change nothing.
    before = await _snapshot(api)
    for who, appointment, status, why in [
        ("grace", theirs["id"], 404, "booked with another dealer"),
        ("grace", "apt_aaaaaaaaaaaaaaaaaaaaaaaaaa", 404, "unknown appointment"),
        ("alice", ours["id"], 404, "a customer cannot confirm"),
    ]:
        response = await api.post(who, D, f"/appointments/{appointment}/confirm")
        assert response.status_code == status, why
    partner = await api.post(PARTNER_APP, Surface.PARTNER, "/vehicles/x/appointments", {})
    assert partner.status_code in {404, 405}  # no booking on the partner surface at all
    assert await _unchanged(api, before) == []
    assert await _status(api, theirs["id"]) is AppointmentStatus.REQUESTED
    done = await api.post("grace", D, f"/appointments/{ours['id']}/confirm")
    assert done.status_code == 200
    assert done.json()["status"] == "confirmed"
    assert await _events(api, "vehicle:appointment:confirmed", ours["id"]) == 1
    again = await api.post("grace", D, f"/appointments/{ours['id']}/confirm")
    assert again.status_code == 409
    other = await api.client.post(
        f"/dealer/v1/appointments/{theirs['id']}/confirm",
        headers={"authorization": f"Bearer {ursula}"},
    )
    assert other.status_code == 200
    # A confirmed appointment can still be cancelled by the owner; then not confirmed again.
    cancel = await api.post("alice", M, f"{_base(api, 'ALICE-1')}/{ours['id']}/cancel")
    assert cancel.status_code == 200
    late = await api.post("grace", D, f"/appointments/{ours['id']}/confirm")
    assert late.status_code == 409
    assert await _status(api, ours["id"]) is AppointmentStatus.CANCELLED
