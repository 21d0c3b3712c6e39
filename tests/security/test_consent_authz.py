"""Partner consents over the seeded demo world, through HTTP with real tokens: the owner's
routes (mobile) and the partner's view of its own consents. Each row names its threat."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from fleetward.authz.decision import Obligation
from fleetward.authz.entities import SessionRelations
from fleetward.authz.permissions import Permission
from fleetward.authz.relations.facts import Relations
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from support.api import PARTNER_APP, Api, obliged
from support.factories import accepted_message
from support.snapshot import snapshot

M, P = Surface.MOBILE, Surface.PARTNER
STATUS = Permission.VEHICLE_READ_STATUS.value
UNKNOWN_TENANT = "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa"


def _body(api: Api, **extra: Any) -> dict[str, Any]:
    until = api.platform.clock.now() + timedelta(days=10)
    return {
        "partner_id": api.world.tenants["insureco"].id,
        "scopes": [STATUS],
        "valid_until": until.isoformat(),
    } | extra


def _path(api: Api, label: str) -> str:
    return f"/vehicles/{api.vehicle_id(label)}/consents"


async def _consents(api: Api, label: str = "ALICE-1") -> list[dict[str, Any]]:
    response = await api.get("alice" if label == "ALICE-1" else "dave", M, _path(api, label))
    assert response.status_code == 200
    items: list[dict[str, Any]] = response.json()["items"]
    return items


# (who, method, vehicle, expected status, why)
CASES = [
    ("alice", "get", "ALICE-1", 200, "owner lists her consents"),
    ("dave", "get", "DAVE-1", 200, "buyer lists consents of his car"),
    ("bob", "get", "ALICE-1", 404, "driver: manage_consents is never delegable"),
    ("bob", "post", "ALICE-1", 404, "driver cannot share the owner's data"),
    ("mallory", "get", "ALICE-1", 404, "BOLA: who sees alice's car"),
    ("mallory", "post", "ALICE-1", 404, "BOLA: share another's car"),
    ("carol", "get", "DAVE-1", 404, "former owner keeps nothing"),
    ("carol", "post", "DAVE-1", 404, "former owner cannot share the sold car"),
    ("grace", "post", "ALICE-1", 404, "dealer never changes consents"),
    ("heidi", "get", "ALICE-1", 404, "support case: read only"),
    ("erin", "post", "ACME-N1", 404, "fleet car: no consumer owner to consent"),
    ("judy", "get", "ALICE-1", 404, "platform admin: SoD"),
    ("alice", "get", "MALLORY-1", 404, "owner of one car, another's id"),
    ("alice", "post", "unknown", 404, "unknown id"),
]


async def test_owner_routes_table(api: Api) -> None:
    wrong = []
    for who, method, vehicle, status, why in CASES:
        if method == "post":
            # A valid body: the refusal must come from authorization, not from the input.
            response = await api.post(who, M, _path(api, vehicle), _body(api))
        else:
            response = await api.get(who, M, _path(api, vehicle))
        if response.status_code != status:
            wrong.append(f"{who} {method} {vehicle}: {response.status_code} ({why})")
    assert not wrong, "\n".join(wrong)
    # Read back: only the seeded consent exists.
    assert len(await _consents(api)) == 1


async def test_grant_and_revoke_as_the_partner_sees_them(api: Api) -> None:
    alice_1 = api.vehicle_id("ALICE-1")
    (seeded,) = await _consents(api)
    before = (await api.get(PARTNER_APP, P, "/consents")).json()["items"]
    # The partner sees ids, scopes and window, nothing about the owner.
    assert [c["id"] for c in before] == [seeded["id"]]
    assert set(before[0]) == {"id", "vehicle_id", "scopes", "valid_from", "valid_until"}
    assert before[0]["vehicle_id"] == alice_1
    # A second consent for the same partner and car would make the PDP's answer ambiguous.
    assert (await api.post("alice", M, _path(api, "ALICE-1"), _body(api))).status_code == 409

    revoked = await api.delete("alice", M, f"{_path(api, 'ALICE-1')}/{seeded['id']}")
    assert revoked.status_code == 204
    assert (await api.get(PARTNER_APP, P, f"/vehicles/{alice_1}/status")).status_code == 404
    assert (await api.get(PARTNER_APP, P, "/consents")).json()["items"] == []
    again = await api.delete("alice", M, f"{_path(api, 'ALICE-1')}/{seeded['id']}")
    assert again.status_code == 404

    granted = await api.post("alice", M, _path(api, "ALICE-1"), _body(api))
    assert granted.status_code == 201, granted.text
    assert granted.json()["scopes"] == [STATUS]
    assert (await api.get(PARTNER_APP, P, f"/vehicles/{alice_1}/status")).status_code == 200
    after = (await api.get(PARTNER_APP, P, "/consents")).json()["items"]
    assert [c["id"] for c in after] == [granted.json()["id"]]


async def test_partner_list_is_its_own_and_in_force(api: Api, clock: FrozenClock) -> None:
    short = _body(api, valid_until=(clock.now() + timedelta(days=1)).isoformat())
    assert (await api.post("dave", M, _path(api, "DAVE-1"), short)).status_code == 201
    listed = (await api.get(PARTNER_APP, P, "/consents")).json()["items"]
    assert len(listed) == 2
    clock.advance(timedelta(days=2))
    listed = (await api.get(PARTNER_APP, P, "/consents")).json()["items"]
    # The lapsed consent is gone from the partner's view.
    assert [c["vehicle_id"] for c in listed] == [api.vehicle_id("ALICE-1")]


async def test_only_partner_clients_list_consents(api: Api) -> None:
    # A person holding a partner-surface token is not a partner application.
    for who in ("alice", "grace", "judy"):
        response = await api.get(who, P, "/consents")
        assert response.status_code == 403, who


async def test_unknown_and_non_partner_tenants_answer_the_same(api: Api) -> None:
    # Enumeration of tenants through the body: one answer for every wrong partner id.
    bodies = []
    for partner_id in (
        UNKNOWN_TENANT,
        api.world.tenants["downtown-motors"].id,  # a dealer
        api.world.tenants["consumer"].id,  # the owner's own tenant
        "not-an-id",
    ):
        response = await api.post(
            "dave", M, _path(api, "DAVE-1"), _body(api, partner_id=partner_id)
        )
        assert response.status_code == 422, partner_id
        bodies.append({k: v for k, v in response.json().items() if k != "instance"})
    assert all(body == bodies[0] for body in bodies)
    assert await _consents(api, "DAVE-1") == []


# (extra body, why) -> 422 and nothing stored
BAD = [
    ({"scopes": [Permission.VEHICLE_UNLOCK.value]}, "a partner that opens the car"),
    ({"scopes": [Permission.VEHICLE_MANAGE_CONSENTS.value]}, "a partner that re-shares"),
    ({"scopes": ["vehicle:everything"]}, "unknown scope"),
    ({"scopes": []}, "empty consent"),
    ({"valid_until": "2099-01-01T00:00:00+00:00"}, "window longer than allowed"),
    ({"valid_until": "2026-12-01T00:00:00"}, "naive time"),
    ({"owner": "usr_aaaaaaaaaaaaaaaaaaaaaaaaaa"}, "mass assignment: owner"),
    ({"status": "active"}, "mass assignment: status"),
    ({"tenant_id": UNKNOWN_TENANT}, "mass assignment: tenant"),
    ({"driver_user_id": "usr_aaaaaaaaaaaaaaaaaaaaaaaaaa"}, "mass assignment: driver"),
    ({"expires_at": "2099-01-01T00:00:00+00:00"}, "mass assignment: deadline"),
]


async def test_bad_grants_are_refused_and_change_nothing(api: Api) -> None:
    wrong = []
    for extra, why in BAD:
        response = await api.post("dave", M, _path(api, "DAVE-1"), _body(api, **extra))
        if response.status_code != 422:
            wrong.append(f"{why}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
    assert await _consents(api, "DAVE-1") == []


async def test_a_consent_cannot_be_revoked_through_another_vehicle(api: Api) -> None:
    # BOLA on a child: alice's consent id under mallory's vehicle is mallory's 404.
    (seeded,) = await _consents(api)
    path = f"{_path(api, 'MALLORY-1')}/{seeded['id']}"
    assert (await api.delete("mallory", M, path)).status_code == 404
    assert (
        await api.delete("bob", M, f"{_path(api, 'ALICE-1')}/{seeded['id']}")
    ).status_code == 404
    alice_1 = api.vehicle_id("ALICE-1")
    assert (await api.get(PARTNER_APP, P, f"/vehicles/{alice_1}/status")).status_code == 200


async def _reported(api: Api, label: str, at: datetime, sequence: int) -> None:
    vehicle = api.world.vehicles[label]
    async with api.platform.services() as (uow, ctx):
        ctx.session.add(
            accepted_message(vehicle, at, {"Vehicle.Speed": sequence}, sequence=sequence)
        )
        await uow.commit()


async def test_a_partner_sees_no_state_from_before_the_consent(
    api: Api, clock: FrozenClock
) -> None:
    # What the car reported before its owner consented is not the partner's: the latest
    # state is shown only once it was reported within the consent (as history is bounded).
    await _reported(api, "DAVE-1", clock.now(), 1)
    clock.advance(timedelta(hours=1))
    assert (await api.post("dave", M, _path(api, "DAVE-1"), _body(api))).status_code == 201
    path = f"/vehicles/{api.vehicle_id('DAVE-1')}/status"
    before = await api.get(PARTNER_APP, P, path)
    assert before.status_code == 200 and before.json()["state"] is None, before.text
    await _reported(api, "DAVE-1", clock.now() + timedelta(seconds=1), 2)
    after = await api.get(PARTNER_APP, P, path)
    assert after.status_code == 200
    assert after.json()["state"]["signals"] == {"Vehicle.Speed": 2}


async def test_a_decision_cut_off_by_its_deadline_is_a_retryable_503(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relations' read outlasting the PDP's budget is no answer about the consent: the
    # route must say "retry" (503 store-busy, Retry-After), as docs/authorization.md says,
    # and write nothing. It answered the 404 of a vehicle without consent (a partner drops
    # a car its customer still shares) and recorded a denial from a transaction cut off in
    # the middle of a statement.
    alice_1 = api.vehicle_id("ALICE-1")
    path = f"/vehicles/{alice_1}/status"
    assert (await api.get(PARTNER_APP, P, path)).status_code == 200
    async with api.platform.services() as (_, ctx):
        before = await snapshot(ctx.session)

    async def cut_off(*_args: object) -> Relations:
        raise TimeoutError  # what the PDP's deadline raises inside the relations' read

    monkeypatch.setattr(SessionRelations, "relations", cut_off)
    response = await api.get(PARTNER_APP, P, path)
    monkeypatch.undo()
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["retry-after"] == "1"
    assert response.json()["type"] == "urn:fleetward:problem:store-busy"
    async with api.platform.services() as (_, ctx):
        after = await snapshot(ctx.session)
    assert before == after  # not even a decision's record
    assert (await api.get(PARTNER_APP, P, path)).status_code == 200


async def test_an_obligation_the_partner_status_cannot_apply_is_a_denial(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The partner's status view is minimised and nothing else: an allow that asks for more
    # (a policy change adding pseudonymise to consents) must be refused, as the partner's
    # trips and charging routes refuse it (docs/authorization.md: a decision carrying an
    # obligation the route cannot apply is a deny). The status route ignored obligations
    # and answered 200 with the real vehicle id.
    alice_1 = api.vehicle_id("ALICE-1")
    path = f"/vehicles/{alice_1}/status"
    assert (await api.get(PARTNER_APP, P, path)).status_code == 200
    obliged(monkeypatch, Obligation.PSEUDONYMISE)
    response = await api.get(PARTNER_APP, P, path)
    assert response.status_code == 404, response.text
    monkeypatch.undo()
    assert (await api.get(PARTNER_APP, P, path)).status_code == 200
