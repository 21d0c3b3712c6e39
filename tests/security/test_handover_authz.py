"""Driver invitations, drivers and ownership transfers over the seeded demo world, through
HTTP with real tokens. Each table row names the threat it covers; refused writes are read
back to show that nothing changed.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select, update

from fleetward.app import build_app
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.authz.permissions import Permission
from fleetward.catalog.inventory import inventory
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.models import Membership, User
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.vehicles.handover_models import DriverInvitation, HandoverStatus
from fleetward.vehicles.models import DriverDelegation, Ownership
from fleetward.vehicles.transfers import MAX_VIN_FAILURES, TransferService
from support.api import PARTNER_APP, Api
from support.locks import TurnWatch
from support.snapshot import snapshot

M, P, D = Surface.MOBILE, Surface.PARTNER, Surface.DEALER
STATUS = Permission.VEHICLE_READ_STATUS.value


def _when(api: Api, **delta: float) -> str:
    return (api.platform.clock.now() + timedelta(**delta)).isoformat()


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _invitation(api: Api, permissions: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"permissions": permissions or [STATUS], "valid_until": _when(api, days=2), **extra}


async def _invite(api: Api, label: str = "ALICE-1", who: str = "alice", **body: Any) -> Any:
    response = await api.post(
        who, M, f"/vehicles/{api.vehicle_id(label)}/invitations", _invitation(api, **body)
    )
    assert response.status_code == 201, response.text
    return response.json()


async def _start(api: Api, label: str = "ALICE-1", who: str = "alice") -> Any:
    response = await api.post(who, M, f"/vehicles/{api.vehicle_id(label)}/transfers")
    assert response.status_code == 201, response.text
    return response.json()


async def _count(api: Api, model: Any, *where: Any) -> int:
    async with api.platform.services() as (_uow, ctx):
        return int(await ctx.session.scalar(select(func.count()).select_from(model).where(*where)))


# (who, method, path template, vehicle, expected status, why)
OWNER_ROUTES = [
    ("alice", "post", "/vehicles/{id}/invitations", "ALICE-1", 201, "owner invites a driver"),
    ("alice", "get", "/vehicles/{id}/invitations", "ALICE-1", 200, "owner lists invitations"),
    ("alice", "get", "/vehicles/{id}/drivers", "ALICE-1", 200, "owner lists drivers"),
    ("dave", "get", "/vehicles/{id}/drivers", "DAVE-1", 200, "the buyer owns DAVE-1 now"),
    ("bob", "post", "/vehicles/{id}/invitations", "ALICE-1", 404, "driver cannot invite"),
    ("bob", "get", "/vehicles/{id}/invitations", "ALICE-1", 404, "driver: no invitations"),
    ("bob", "get", "/vehicles/{id}/drivers", "ALICE-1", 404, "driver cannot list drivers"),
    ("bob", "post", "/vehicles/{id}/transfers", "ALICE-1", 404, "driver cannot sell the car"),
    ("mallory", "post", "/vehicles/{id}/invitations", "ALICE-1", 404, "BOLA: invite on a known id"),
    ("mallory", "get", "/vehicles/{id}/drivers", "ALICE-1", 404, "BOLA: who drives her car"),
    ("mallory", "post", "/vehicles/{id}/transfers", "ALICE-1", 404, "BOLA: sell another's car"),
    ("carol", "get", "/vehicles/{id}/drivers", "DAVE-1", 404, "former owner keeps nothing"),
    ("carol", "post", "/vehicles/{id}/invitations", "DAVE-1", 404, "former owner cannot invite"),
    ("carol", "post", "/vehicles/{id}/transfers", "DAVE-1", 404, "former owner cannot resell"),
    ("grace", "post", "/vehicles/{id}/transfers", "ALICE-1", 404, "dealer never reassigns owner"),
    ("grace", "post", "/vehicles/{id}/invitations", "ALICE-1", 404, "dealer never adds drivers"),
    ("grace", "get", "/vehicles/{id}/drivers", "ALICE-1", 404, "dealer: open case, no drivers"),
    ("heidi", "get", "/vehicles/{id}/drivers", "ALICE-1", 404, "support case: read only"),
    ("heidi", "post", "/vehicles/{id}/transfers", "ALICE-1", 404, "support never sells a car"),
    ("erin", "get", "/vehicles/{id}/drivers", "ALICE-1", 404, "fleet admin: other tenant"),
    ("erin", "get", "/vehicles/{id}/drivers", "ACME-N1", 404, "fleet car: no consumer owner"),
    ("erin", "post", "/vehicles/{id}/transfers", "ACME-N1", 404, "fleet admin cannot sell"),
    ("frank", "post", "/vehicles/{id}/invitations", "ACME-N1", 404, "fleet operator: no drivers"),
    ("judy", "post", "/vehicles/{id}/transfers", "ALICE-1", 404, "platform admin: SoD"),
    ("alice", "get", "/vehicles/{id}/drivers", "MALLORY-1", 404, "owner of one car, another's"),
    ("alice", "post", "/vehicles/{id}/transfers", "unknown", 404, "unknown id"),
]


async def test_owner_routes_table(api: Api) -> None:
    # One world for the whole table; transfers are started last so nothing else moves.
    wrong = []
    for who, method, path, vehicle, status, why in OWNER_ROUTES:
        url = path.format(id=api.vehicle_id(vehicle))
        if method == "post" and url.endswith("/invitations"):
            response = await api.post(who, M, url, _invitation(api))
        elif method == "post":
            response = await api.post(who, M, url)
        else:
            response = await api.get(who, M, url)
        if response.status_code != status:
            wrong.append(f"{who} {method} {path} {vehicle}: {response.status_code} ({why})")
    assert not wrong, "\n".join(wrong)
    # Read back: the only invitation and transfer are alice's own.
    assert await _count(api, DriverInvitation) == 1


async def test_code_routes_refuse_non_consumers(api: Api) -> None:
    invitation = await _invite(api)
    transfer = await _start(api)
    vin = api.world.vehicles["ALICE-1"].vin
    for who in ("grace", "heidi", "erin", "judy", PARTNER_APP):
        # A dealer, staff, a fleet or an application holding a code still gets nothing.
        accepted = await api.post(who, M, "/invitations/accept", {"code": invitation["code"]})
        bought = await api.post(who, M, "/transfers/accept", {"code": transfer["code"], "vin": vin})
        mine = await api.get(who, M, "/delegations")
        assert (accepted.status_code, bought.status_code, mine.status_code) == (403, 403, 403), who
    # Read back: both are still pending, the owner unchanged.
    assert (await api.get("alice", M, f"/vehicles/{api.vehicle_id('ALICE-1')}")).status_code == 200
    assert await _count(api, DriverDelegation, DriverDelegation.revoked_at.is_(None)) == 1


def test_no_dealer_route_touches_owners_or_drivers(platform: Platform, settings: Settings) -> None:
    # A dealer can never reassign an owner: nothing on /dealer/v1 transfers, invites or shares.
    app: FastAPI = build_app(settings, platform=platform)
    forbidden = {
        Permission.VEHICLE_TRANSFER,
        Permission.VEHICLE_MANAGE_DRIVERS,
        Permission.VEHICLE_MANAGE_CONSENTS,
    }
    for item in inventory(app.router.routes):
        if item.path.startswith(f"{D.prefix}/v1"):
            assert item.entry.permission not in forbidden, item.path
            assert "transfer" not in item.path and "invitation" not in item.path, item.path


async def test_invitation_end_to_end(api: Api) -> None:
    alice_1 = api.vehicle_id("ALICE-1")
    issued = await _invite(api, permissions=[STATUS])
    assert len(issued["code"]) >= 22  # >= 128 bits, url-safe base64
    # The code is shown once: the list never carries it.
    listed = (await api.get("alice", M, f"/vehicles/{alice_1}/invitations")).json()["items"]
    assert [i["id"] for i in listed] == [issued["id"]] and "code" not in listed[0]
    assert listed[0]["status"] == "pending"

    # Before accepting, carol is a stranger to ALICE-1.
    assert (await api.get("carol", M, f"/vehicles/{alice_1}/status")).status_code == 404
    accepted = await api.post("carol", M, "/invitations/accept", {"code": issued["code"]})
    assert accepted.status_code == 200, accepted.text
    delegation = accepted.json()
    assert delegation["vehicle_id"] == alice_1 and delegation["permissions"] == [STATUS]

    # Delegated permission works; a non-delegated one does not; no owner powers.
    assert (await api.get("carol", M, f"/vehicles/{alice_1}/status")).status_code == 200
    assert (await api.get("carol", M, f"/vehicles/{alice_1}/location")).status_code == 404
    invite = await api.post("carol", M, f"/vehicles/{alice_1}/invitations", _invitation(api))
    assert invite.status_code == 404
    mine = (await api.get("carol", M, "/delegations")).json()["items"]
    assert [d["id"] for d in mine] == [delegation["id"]]

    # Single use: the same code again, by anyone, is the wrong-code answer.
    for who in ("carol", "dave", "mallory"):
        again = await api.post(who, M, "/invitations/accept", {"code": issued["code"]})
        assert again.status_code == 404, who
    wrong = await api.post("dave", M, "/invitations/accept", {"code": "x" * 43})
    assert again.json()["type"] == wrong.json()["type"]

    # The owner sees the driver: user id and display name, nothing more.
    drivers = (await api.get("alice", M, f"/vehicles/{alice_1}/drivers")).json()["items"]
    carol = next(d for d in drivers if d["id"] == delegation["id"])
    assert carol["driver_user_id"] == api.world.users["carol"].id
    assert set(carol) == {
        "id",
        "driver_user_id",
        "display_name",
        "permissions",
        "valid_from",
        "valid_until",
    }

    # Revocation ends the driver's access at once.
    revoked = await api.delete("alice", M, f"/vehicles/{alice_1}/drivers/{delegation['id']}")
    assert revoked.status_code == 204
    assert (await api.get("carol", M, f"/vehicles/{alice_1}/status")).status_code == 404
    assert (await api.get("carol", M, "/delegations")).json()["items"] == []


async def test_invitation_keeps_the_owners_window(api: Api, clock: FrozenClock) -> None:
    # The invitee cannot widen or extend anything: the delegation is the invitation's window.
    start, end = _when(api, hours=1), _when(api, days=3)
    issued = await _invite(api, valid_from=start, valid_until=end)
    accepted = (await api.post("dave", M, "/invitations/accept", {"code": issued["code"]})).json()
    window = (_parse(accepted["valid_from"]), _parse(accepted["valid_until"]))
    assert window == (_parse(start), _parse(end))
    # Not yet started: nothing yet.
    alice_1 = api.vehicle_id("ALICE-1")
    assert (await api.get("dave", M, f"/vehicles/{alice_1}/status")).status_code == 404
    clock.advance(timedelta(hours=2))
    assert (await api.get("dave", M, f"/vehicles/{alice_1}/status")).status_code == 200


async def test_expired_and_revoked_invitations_answer_like_wrong_codes(
    api: Api, clock: FrozenClock
) -> None:
    alice_1 = api.vehicle_id("ALICE-1")
    expiring = await _invite(api, valid_until=_when(api, days=5))
    revoked = await _invite(api)
    # Revocation by the owner; a second revocation has nothing left to revoke.
    path = f"/vehicles/{alice_1}/invitations/{revoked['id']}"
    assert (await api.delete("alice", M, path)).status_code == 204
    assert (await api.delete("alice", M, path)).status_code == 404
    # Another owner cannot revoke it through their own vehicle (child under the wrong parent).
    other = f"/vehicles/{api.vehicle_id('MALLORY-1')}/invitations/{expiring['id']}"
    assert (await api.delete("mallory", M, other)).status_code == 404

    clock.advance(timedelta(hours=73))
    for code in (expiring["code"], revoked["code"]):
        response = await api.post("dave", M, "/invitations/accept", {"code": code})
        assert response.status_code == 404
    listed = (await api.get("alice", M, f"/vehicles/{alice_1}/invitations")).json()["items"]
    assert {i["id"]: i["status"] for i in listed} == {
        expiring["id"]: "expired",
        revoked["id"]: "revoked",
    }
    assert (await api.get("dave", M, f"/vehicles/{alice_1}/status")).status_code == 404


# (permissions, extra body, why) -> 422 and nothing stored
BAD_INVITATIONS: list[tuple[list[str], dict[str, Any], str]] = [
    ([Permission.VEHICLE_TRANSFER.value], {}, "escalation: a driver who can sell"),
    ([Permission.VEHICLE_MANAGE_DRIVERS.value], {}, "escalation: a driver who adds drivers"),
    ([Permission.VEHICLE_MANAGE_CONSENTS.value], {}, "escalation: a driver who shares data"),
    (["vehicle:fly"], {}, "unknown permission"),
    (["VEHICLE:READ_STATUS"], {}, "look-alike permission"),
    ([], {}, "empty delegation"),
    ([STATUS], {"valid_until": "2099-01-01T00:00:00+00:00"}, "window longer than allowed"),
    ([STATUS], {"valid_until": "2026-12-01T00:00:00"}, "naive time"),
    ([STATUS], {"valid_from": "2020-01-01T00:00:00+00:00"}, "back-dated window"),
    (
        [STATUS],
        {"valid_from": "9999-12-31T23:00:00-14:00", "valid_until": "9999-12-31T23:30:00-14:00"},
        "a window past the last storable instant (was a 500)",
    ),
    ([STATUS], {"owner": "usr_aaaaaaaaaaaaaaaaaaaaaaaaaa"}, "mass assignment: owner"),
    ([STATUS], {"status": "accepted"}, "mass assignment: status"),
    ([STATUS], {"tenant_id": "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa"}, "mass assignment: tenant"),
    ([STATUS], {"driver_user_id": "usr_aaaaaaaaaaaaaaaaaaaaaaaaaa"}, "mass assignment: driver"),
    ([STATUS], {"expires_at": "2099-01-01T00:00:00+00:00"}, "mass assignment: deadline"),
]


async def test_bad_invitations_are_refused_and_change_nothing(api: Api) -> None:
    alice_1 = api.vehicle_id("ALICE-1")
    wrong = []
    for permissions, extra, why in BAD_INVITATIONS:
        body = {"permissions": permissions, "valid_until": _when(api, days=2)} | extra
        response = await api.post("alice", M, f"/vehicles/{alice_1}/invitations", body)
        if response.status_code != 422:
            wrong.append(f"{why}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
    listed = await api.get("alice", M, f"/vehicles/{alice_1}/invitations")
    assert listed.json()["items"] == []


async def test_accept_bodies_reject_server_fields(api: Api) -> None:
    issued = await _invite(api)
    for field in ("owner", "status", "tenant_id", "driver_user_id", "expires_at"):
        body = {"code": issued["code"], field: "usr_aaaaaaaaaaaaaaaaaaaaaaaaaa"}
        response = await api.post("dave", M, "/invitations/accept", body)
        assert response.status_code == 422, field  # mass assignment on accept
    # Read back: still pending; dave has nothing.
    listed = await api.get("alice", M, f"/vehicles/{api.vehicle_id('ALICE-1')}/invitations")
    assert listed.json()["items"][0]["status"] == "pending"
    assert (await api.get("dave", M, "/delegations")).json()["items"] == []


async def test_the_owner_cannot_accept_their_own_invitation(api: Api) -> None:
    issued = await _invite(api)
    response = await api.post("alice", M, "/invitations/accept", {"code": issued["code"]})
    assert response.status_code == 422
    assert (
        await _count(api, DriverInvitation, DriverInvitation.status == HandoverStatus.PENDING) == 1
    )


async def test_a_driver_cannot_be_revoked_through_another_vehicle(api: Api) -> None:
    # BOLA on a child: bob's delegation id under mallory's vehicle is mallory's 404.
    (bob,) = (await api.get("alice", M, f"/vehicles/{api.vehicle_id('ALICE-1')}/drivers")).json()[
        "items"
    ]
    path = f"/vehicles/{api.vehicle_id('MALLORY-1')}/drivers/{bob['id']}"
    assert (await api.delete("mallory", M, path)).status_code == 404
    assert (
        await api.delete("bob", M, f"/vehicles/{api.vehicle_id('ALICE-1')}/drivers/{bob['id']}")
    ).status_code == 404
    status = await api.get("bob", M, f"/vehicles/{api.vehicle_id('ALICE-1')}/status")
    assert status.status_code == 200


# ----------------------------------------------------------------------------- transfers


async def test_transfer_start_needs_step_up(api: Api) -> None:
    path = f"/vehicles/{api.vehicle_id('ALICE-1')}/transfers"
    for token in ({"acr": Acr.PASSWORD}, {"auth_age": timedelta(minutes=10)}):
        response = await api.post("alice", M, path, **token)
        # Account takeover with a stolen password (or an old session) cannot sell the car.
        assert response.status_code == 401, token
        assert 'error="insufficient_user_authentication"' in response.headers["www-authenticate"]
    assert (await api.post("alice", M, path, {"owner": "x"})).status_code == 422
    assert (await api.post("alice", M, path)).status_code == 201


async def test_transfer_end_to_end(api: Api) -> None:
    alice_1 = api.vehicle_id("ALICE-1")
    vin = api.world.vehicles["ALICE-1"].vin
    pending_invitation = await _invite(api)
    transfer = await _start(api)
    # One pending transfer per vehicle.
    again = await api.post("alice", M, f"/vehicles/{alice_1}/transfers")
    assert again.status_code == 409

    # Buyer acceptance needs step-up too.
    body = {"code": transfer["code"], "vin": vin}
    stale = await api.post("dave", M, "/transfers/accept", body, auth_age=timedelta(minutes=10))
    assert stale.status_code == 401
    # The seller cannot accept their own transfer.
    assert (await api.post("alice", M, "/transfers/accept", body)).status_code == 422
    # Mass assignment on accept.
    for field in ("owner", "status", "tenant_id", "driver_user_id", "expires_at"):
        bad = await api.post("dave", M, "/transfers/accept", body | {field: "x"})
        assert bad.status_code == 422, field
    assert (await api.get("alice", M, f"/vehicles/{alice_1}")).status_code == 200

    sold = await api.post(
        "dave", M, "/transfers/accept", {"code": transfer["code"], "vin": f" {vin.lower()} "}
    )
    assert sold.status_code == 200, sold.text
    assert sold.json()["vehicle_id"] == alice_1

    # The seller keeps nothing; the driver and the partner lose access at the same instant.
    assert (await api.get("alice", M, f"/vehicles/{alice_1}")).status_code == 404
    assert (await api.get("alice", M, f"/vehicles/{alice_1}/drivers")).status_code == 404
    assert (await api.get("bob", M, f"/vehicles/{alice_1}/status")).status_code == 404
    assert (await api.get("bob", M, "/delegations")).json()["items"] == []
    assert (await api.get(PARTNER_APP, P, f"/vehicles/{alice_1}/status")).status_code == 404
    assert (await api.get(PARTNER_APP, P, "/consents")).json()["items"] == []
    # The buyer reads the car and starts with no drivers.
    assert (await api.get("dave", M, f"/vehicles/{alice_1}/status")).status_code == 200
    assert (await api.get("dave", M, f"/vehicles/{alice_1}/drivers")).json()["items"] == []
    # The seller's pending invitation died with the sale; the code is spent.
    late = await api.post("mallory", M, "/invitations/accept", {"code": pending_invitation["code"]})
    assert late.status_code == 404
    assert (await api.post("mallory", M, "/transfers/accept", body)).status_code == 404
    # The old seller cannot cancel what is done.
    cancel = await api.delete("alice", M, f"/vehicles/{alice_1}/transfers/{transfer['id']}")
    assert cancel.status_code == 404


async def test_five_wrong_vins_revoke_the_transfer(api: Api) -> None:
    alice_1 = api.vehicle_id("ALICE-1")
    vin = api.world.vehicles["ALICE-1"].vin
    transfer = await _start(api)
    wrong_vin = api.world.vehicles["MALLORY-1"].vin
    for attempt in range(5):
        # A leaked code paired with guessed VINs: each refusal is audited.
        response = await api.post(
            "mallory", M, "/transfers/accept", {"code": transfer["code"], "vin": wrong_vin}
        )
        assert response.status_code == 422, attempt
    refused = await _count(
        api, AuditRecord, AuditRecord.name == EventName.OWNERSHIP_TRANSFER_REFUSED.value
    )
    assert refused == 5
    # The right VIN after the limit: the transfer is gone.
    late = await api.post("mallory", M, "/transfers/accept", {"code": transfer["code"], "vin": vin})
    assert late.status_code == 404
    assert (await api.get("alice", M, f"/vehicles/{alice_1}")).status_code == 200
    assert (await api.get("mallory", M, f"/vehicles/{alice_1}")).status_code == 404
    # The seller can start a new one.
    assert (await api.post("alice", M, f"/vehicles/{alice_1}/transfers")).status_code == 201


async def test_a_right_vin_sent_beside_the_fifth_wrong_one_is_refused(
    api: Api, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Five wrong VINs end the transfer however they are sent. A leaked code with guesses
    # sent at once: each guess was judged in one transaction and its refusal counted in
    # another, so guesses judged before the fifth refusal was counted were judged past the
    # limit (a burst of N guesses got N, and a right one among them took the car). Here the
    # right VIN arrives while the fifth wrong one is judged and not yet counted: it must
    # wait for that count, find the transfer revoked, and get the wrong code's 404.
    alice_1 = api.vehicle_id("ALICE-1")
    transfer = await _start(api)
    wrong = {"code": transfer["code"], "vin": api.world.vehicles["MALLORY-1"].vin}
    right = {"code": transfer["code"], "vin": api.world.vehicles["ALICE-1"].vin}
    for attempt in range(MAX_VIN_FAILURES - 1):
        response = await api.post("mallory", M, "/transfers/accept", wrong)
        assert response.status_code == 422, attempt
    fifth_judged, fifth_goes_on = asyncio.Event(), asyncio.Event()
    refuse_vin = TransferService.refuse_vin

    async def counted_after_a_pause(self: TransferService, *args: Any, **kwargs: Any) -> bool:
        fifth_judged.set()
        await fifth_goes_on.wait()
        return await refuse_vin(self, *args, **kwargs)

    monkeypatch.setattr(TransferService, "refuse_vin", counted_after_a_pause)
    turns = TurnWatch(monkeypatch)
    fifth = asyncio.create_task(api.post("mallory", M, "/transfers/accept", wrong))
    await fifth_judged.wait()
    # The attacker's second account, with the right VIN.
    sixth = asyncio.create_task(api.post("dave", M, "/transfers/accept", right))
    # Until the sixth is done, or waits for its turn behind the fifth.
    await turns.waiting(api.platform, backend, sixth)
    fifth_goes_on.set()
    fifth_answer, sixth_answer = await asyncio.gather(fifth, sixth)
    assert fifth_answer.status_code == 422, fifth_answer.text
    assert sixth_answer.status_code == 404, sixth_answer.text
    refused = await _count(
        api, AuditRecord, AuditRecord.name == EventName.OWNERSHIP_TRANSFER_REFUSED.value
    )
    assert refused == MAX_VIN_FAILURES
    assert (await api.get("alice", M, f"/vehicles/{alice_1}")).status_code == 200
    assert (await api.get("dave", M, f"/vehicles/{alice_1}")).status_code == 404


async def test_cancel_and_wrong_parent(api: Api) -> None:
    alice_1 = api.vehicle_id("ALICE-1")
    transfer = await _start(api)
    # A transfer id under another vehicle, by its owner: 404, and the transfer stands.
    other = f"/vehicles/{api.vehicle_id('MALLORY-1')}/transfers/{transfer['id']}"
    assert (await api.delete("mallory", M, other)).status_code == 404
    # The driver cannot cancel the owner's sale either.
    mine = f"/vehicles/{alice_1}/transfers/{transfer['id']}"
    assert (await api.delete("bob", M, mine)).status_code == 404
    assert (await api.delete("alice", M, mine)).status_code == 204
    vin = api.world.vehicles["ALICE-1"].vin
    late = await api.post("dave", M, "/transfers/accept", {"code": transfer["code"], "vin": vin})
    assert late.status_code == 404
    assert (await api.get("alice", M, f"/vehicles/{alice_1}")).status_code == 200


async def test_expired_transfer_is_a_wrong_code(api: Api, clock: FrozenClock) -> None:
    transfer = await _start(api)
    clock.advance(timedelta(hours=25))
    vin = api.world.vehicles["ALICE-1"].vin
    late = await api.post("dave", M, "/transfers/accept", {"code": transfer["code"], "vin": vin})
    assert late.status_code == 404
    # The lapsed transfer no longer blocks a new one.
    assert (
        await api.post("alice", M, f"/vehicles/{api.vehicle_id('ALICE-1')}/transfers")
    ).status_code == 201


async def _strip_alice(api: Api, how: str) -> None:
    """Alice loses her standing, as after an account takeover is found out: her account is
    disabled, or her membership of the consumer tenant ends (she still owns ALICE-1)."""
    alice = api.world.users["alice"].id
    async with api.platform.services() as (uow, ctx):
        now = ctx.clock.now()
        if how == "disabled":
            await ctx.session.execute(update(User).where(User.id == alice).values(disabled_at=now))
        else:
            await ctx.session.execute(
                update(Membership).where(Membership.user_id == alice).values(valid_until=now)
            )
        await uow.commit()


@pytest.mark.parametrize("how", ["disabled", "membership-ended"])
async def test_handovers_die_with_the_owners_standing(api: Api, how: str) -> None:
    # Account takeover: the attacker (with alice's password and MFA) offers the car to an
    # accomplice; the account is disabled (or alice leaves) before the accomplice accepts.
    # The sale and the invitation were made on alice's authority: they die with it.
    alice_1 = api.vehicle_id("ALICE-1")
    vin = api.world.vehicles["ALICE-1"].vin
    invitation = await _invite(api)
    transfer = await _start(api)
    await _strip_alice(api, how)
    # The invitation first (a sale would void it anyway).
    invited = await api.post("mallory", M, "/invitations/accept", {"code": invitation["code"]})
    body = {"code": transfer["code"], "vin": vin}
    bought = await api.post("mallory", M, "/transfers/accept", body)
    assert (invited.status_code, bought.status_code) == (404, 404)
    # Read back: alice still owns the car, mallory reaches nothing and drives nothing.
    mallory = api.world.users["mallory"].id
    assert await _count(api, DriverDelegation, DriverDelegation.driver_user_id == mallory) == 0
    async with api.platform.services() as (_uow, ctx):
        owner = await ctx.session.scalar(
            select(Ownership.owner_user_id).where(
                Ownership.vehicle_id == alice_1, Ownership.valid_until.is_(None)
            )
        )
    assert owner == api.world.users["alice"].id
    assert (await api.get("mallory", M, f"/vehicles/{alice_1}/status")).status_code == 404


async def test_an_invitation_window_cannot_start_beyond_the_lead_cap(api: Api) -> None:
    # Only the window's length was capped: a one-day window starting in year 9998 (or next
    # year) was accepted, an offer parked out of sight for as long as anyone cares to wait.
    # Starting more than max_delegation_lead ahead is a 422 problem and stores nothing.
    alice_1 = api.vehicle_id("ALICE-1")
    path = f"/vehicles/{alice_1}/invitations"
    lead = api.platform.limits.max_delegation_lead
    async with api.platform.services() as (_, ctx):
        before = await snapshot(ctx.session)
    for start in (
        lead + timedelta(minutes=1),
        timedelta(days=365),
        datetime(9998, 1, 1, tzinfo=UTC) - api.platform.clock.now(),
    ):
        body = {
            "permissions": [STATUS],
            "valid_from": _when(api, seconds=start.total_seconds()),
            "valid_until": _when(api, seconds=(start + timedelta(days=1)).total_seconds()),
        }
        response = await api.post("alice", M, path, body)
        assert response.status_code == 422, (start, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["type"] == "urn:fleetward:problem:invalid-window"
        assert problem["reason"] == "too-far-ahead"
    async with api.platform.services() as (_, ctx):
        after = await snapshot(ctx.session)
    # Nothing stored (the owner's authorization decisions are recorded, as for any request).
    assert sorted(t for t in before if before[t] != after[t] and t != "audit_events") == []
    # Up to the cap, a window starting later is still an ordinary invitation.
    body = {
        "permissions": [STATUS],
        "valid_from": _when(api, seconds=lead.total_seconds()),
        "valid_until": _when(api, seconds=(lead + timedelta(days=1)).total_seconds()),
    }
    assert (await api.post("alice", M, path, body)).status_code == 201
