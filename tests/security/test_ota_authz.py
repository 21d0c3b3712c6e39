"""OTA campaigns on the admin surface: engineering's function only, a checked lifecycle, no
personal data. ken = engineer; judy (platform admin) and heidi (support) may never use it.
Each row names the threat it covers; refused writes are read back."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx

from fleetward.core.surfaces import Surface
from support.api import Api

A = Surface.ADMIN
BASE = "/ota/campaigns"
UNKNOWN = "ota_aaaaaaaaaaaaaaaaaaaaaaaaaa"
HAULER = {"name": "hauler-2.1", "target_model": "Fleetward Hauler", "to_version": "2.1.0"}


async def _create(api: Api, body: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await api.post("ken", A, BASE, body or HAULER)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _patch(api: Api, who: str, campaign_id: str, status: str) -> httpx.Response:
    return await api.patch(who, A, f"{BASE}/{campaign_id}", {"status": status})


async def test_function_table(api: Api) -> None:
    campaign = await _create(api)
    one = f"{BASE}/{campaign['id']}"
    # (who, method, path, body, expected, why)
    rows: list[tuple[str, str, str, Any, int, str]] = [
        ("ken", "GET", BASE, None, 200, "engineer lists campaigns"),
        ("ken", "GET", one, None, 200, "engineer reads a campaign"),
        ("ken", "GET", f"{BASE}/{UNKNOWN}", None, 404, "unknown campaign"),
        ("judy", "GET", BASE, None, 403, "BFLA: platform admin is not engineering"),
        ("judy", "GET", one, None, 403, "BFLA: platform admin with a real id"),
        ("judy", "GET", f"{BASE}/{UNKNOWN}", None, 403, "function refused before any lookup"),
        ("judy", "POST", BASE, HAULER | {"name": "judy"}, 403, "BFLA: admin creates"),
        ("judy", "PATCH", one, {"status": "active"}, 403, "BFLA: admin pushes software"),
        ("heidi", "GET", BASE, None, 403, "BFLA: support agent"),
        ("heidi", "PATCH", one, {"status": "active"}, 403, "BFLA: support pushes software"),
        ("heidi", "POST", BASE, HAULER | {"name": "heidi"}, 403, "BFLA: support creates"),
        ("erin", "GET", BASE, None, 403, "BFLA: a fleet admin with an admin-surface token"),
        ("alice", "POST", BASE, HAULER | {"name": "alice"}, 403, "BFLA: a customer"),
    ]
    wrong = []
    for who, method, path, body, status, why in rows:
        response = await api.client.request(
            method, f"/admin/v1{path}", json=body, headers=api.headers(who, A)
        )
        if response.status_code != status:
            wrong.append(f"{who} {method} {path}: {response.status_code} ({why})")
    assert not wrong, "\n".join(wrong)
    # Read back: nothing was created or moved by the refused callers.
    listed = (await api.get("ken", A, BASE)).json()["items"]
    assert [(c["name"], c["status"]) for c in listed] == [("hauler-2.1", "draft")]


async def test_view_counts_targets_and_names_no_vehicle_or_person(api: Api) -> None:
    campaign = await _create(api)
    assert campaign["status"] == "draft"
    assert campaign["target_vehicles"] == 5  # ACME-N1..N3, ACME-S1..S2
    assert set(campaign) == {
        "id",
        "name",
        "target_model",
        "from_version",
        "to_version",
        "status",
        "target_vehicles",
        "created_at",
        "updated_at",
    }
    vehicles = api.world.vehicles.values()
    text = (await api.get("ken", A, f"{BASE}/{campaign['id']}")).text
    assert not [v.id for v in vehicles if v.id in text or v.vin in text]
    assert api.world.users["ken"].id not in text


# (from, to, expected): every pair; draft->active, active<->paused, ->completed only.
TRANSITIONS = [
    ("draft", "draft", 409),
    ("draft", "paused", 409),
    ("draft", "completed", 409),
    ("draft", "active", 200),
    ("active", "active", 409),
    ("active", "draft", 409),
    ("active", "paused", 200),
    ("paused", "paused", 409),
    ("paused", "draft", 409),
    ("paused", "active", 200),
    ("active", "completed", 200),
    ("completed", "active", 409),
    ("completed", "paused", 409),
    ("completed", "draft", 409),
    ("completed", "completed", 409),
]


async def test_transitions_are_checked(api: Api) -> None:
    # A completed campaign re-activated, or a draft skipping activation, would push software
    # no one approved; each refusal changes nothing.
    campaign = await _create(api)
    wrong = []
    for before, after, status in TRANSITIONS:
        current = (await api.get("ken", A, f"{BASE}/{campaign['id']}")).json()["status"]
        assert current == before, (before, after)
        response = await _patch(api, "ken", campaign["id"], after)
        if response.status_code != status:
            wrong.append(f"{before}->{after}: {response.status_code}")
    assert not wrong, "\n".join(wrong)
    final = await api.get("ken", A, f"{BASE}/{campaign['id']}")
    assert final.json()["status"] == "completed"


async def test_a_paused_campaign_may_complete(api: Api) -> None:
    campaign = await _create(api)
    for status in ("active", "paused", "completed"):
        assert (await _patch(api, "ken", campaign["id"], status)).status_code == 200


async def test_bad_bodies_and_mass_assignment_are_refused(api: Api) -> None:
    campaign = await _create(api)
    one = f"{BASE}/{campaign['id']}"
    creates = [
        (HAULER | {"name": "x", "status": "active"}, "mass assignment: born active"),
        (HAULER | {"name": "x", "created_by": "usr_x"}, "mass assignment: creator"),
        (HAULER | {"name": "x", "tenant_id": "ten_x"}, "mass assignment: tenant"),
        (HAULER | {"name": "x", "target_vehicles": 0}, "mass assignment: reach"),
        (HAULER | {"name": "x", "id": UNKNOWN}, "mass assignment: id"),
        ({"name": "x", "target_model": "Fleetward Hauler"}, "no target version"),
        (HAULER | {"name": "x", "to_version": "2.1.0; rm -rf /"}, "hostile version text"),
        (HAULER | {"name": "x", "to_version": "2.1.\u0030\u0338"}, "look-alike version"),
        (HAULER | {"name": "x", "from_version": "2.1.0"}, "no-op campaign (same version)"),
        (HAULER | {"name": ""}, "empty name"),
        (HAULER | {"name": "x" * 101}, "oversized name"),
    ]
    wrong = []
    for body, why in creates:
        response = await api.post("ken", A, BASE, body)
        if response.status_code != 422:
            wrong.append(f"POST {why}: {response.status_code}")
    for body, why in [
        ({"status": "active", "name": "renamed"}, "mass assignment on PATCH"),
        ({"status": "launched"}, "unknown status"),
        ({}, "empty patch"),
        (None, "null body"),
    ]:
        response = await api.patch("ken", A, one, body)
        if response.status_code != 422:
            wrong.append(f"PATCH {why}: {response.status_code}")
    duplicate = await api.post("ken", A, BASE, HAULER)
    if duplicate.status_code != 409:
        wrong.append(f"duplicate name: {duplicate.status_code}")
    assert not wrong, "\n".join(wrong)
    listed = (await api.get("ken", A, BASE)).json()["items"]
    assert [(c["name"], c["status"]) for c in listed] == [("hauler-2.1", "draft")]


async def test_writes_need_a_recent_multi_factor_sign_in(api: Api) -> None:
    # A stolen, hours-old engineer session cannot start a software rollout.
    campaign = await _create(api)
    stale = timedelta(hours=2)
    response = await api.patch(
        "ken", A, f"{BASE}/{campaign['id']}", {"status": "active"}, auth_age=stale
    )
    assert response.status_code == 401
    created = await api.post("ken", A, BASE, HAULER | {"name": "late"}, auth_age=stale)
    assert created.status_code == 401
    current = (await api.get("ken", A, f"{BASE}/{campaign['id']}", auth_age=stale)).json()
    assert current["status"] == "draft"


async def test_list_is_paginated_and_bad_cursors_refused(api: Api) -> None:
    names = [f"c-{i}" for i in range(5)]
    for name in names:
        await _create(api, HAULER | {"name": name})
    seen: list[str] = []
    cursor: str | None = None
    while True:
        query = f"{BASE}?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = (await api.get("ken", A, query)).json()
        assert len(page["items"]) <= 2
        seen += [c["name"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == names
    for query in ("cursor=%25%25%25", "cursor=" + "x" * 200, "cursor=\u0430bc", "limit=0"):
        assert (await api.get("ken", A, f"{BASE}?{query}")).status_code == 422, query
