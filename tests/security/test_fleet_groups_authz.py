"""Fleet groups, group vehicles, operator assignments and members, through HTTP with real
tokens over the demo world (erin = acme admin, frank = acme operator of "north", gina =
globex admin; alice, judy and ken have no business here).

Each row names the threat it covers; refused writes are read back to prove nothing changed.
"""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import select

from fleetward.audit.recorder import Actor
from fleetward.core.surfaces import Surface
from fleetward.vehicles.fleets import FleetService
from fleetward.vehicles.models import FleetGroup, OperatorAssignment
from support.api import UNKNOWN_VEHICLE, Api

F = Surface.FLEET
UNKNOWN_GROUP = "grp_aaaaaaaaaaaaaaaaaaaaaaaaaa"
UNKNOWN_ASSIGNMENT = "opa_aaaaaaaaaaaaaaaaaaaaaaaaaa"


async def _call(
    api: Api, who: str, method: str, path: str, body: Any = None, **token: Any
) -> httpx.Response:
    return await api.client.request(
        method, f"/fleet/v1{path}", json=body, headers=api.headers(who, F, **token)
    )


def _ids(api: Api) -> dict[str, str]:
    w = api.world
    return {
        "north": w.groups[("acme-logistics", "north")].id,
        "south": w.groups[("acme-logistics", "south")].id,
        "main": w.groups[("globex", "main")].id,
        "unknown": UNKNOWN_GROUP,
        **{label: v.id for label, v in w.vehicles.items()},
        **{f"u_{name}": u.id for name, u in w.users.items()},
    }


async def _frank_assignment(api: Api) -> str:
    async with api.platform.services() as (_, ctx):
        found = await ctx.session.scalar(
            select(OperatorAssignment.id).where(
                OperatorAssignment.user_id == api.world.users["frank"].id,
                OperatorAssignment.valid_until.is_(None),
            )
        )
    assert found is not None
    return found


async def _state(api: Api) -> dict[str, Any]:
    """What the fleets look like, read back as their admins."""
    ids = _ids(api)
    out: dict[str, Any] = {}
    for who, groups in (("erin", ("north", "south")), ("gina", ("main",))):
        listed = (await _call(api, who, "GET", "/groups")).json()["items"]
        out[f"{who}:groups"] = sorted(g["name"] for g in listed)
        for name in groups:
            vehicles = (await _call(api, who, "GET", f"/groups/{ids[name]}/vehicles")).json()
            operators = (await _call(api, who, "GET", f"/groups/{ids[name]}/operators")).json()
            out[f"{name}:vehicles"] = sorted(v["label"] for v in vehicles["items"])
            out[f"{name}:operators"] = sorted(o["username"] for o in operators["items"])
    return out


# (who, method, path template, expected status, why). Templates use {north}, {south},
# {main} (globex), {unknown} and vehicle labels.
READS = [
    ("erin", "GET", "/groups", 200, "fleet admin lists the fleet's groups"),
    ("frank", "GET", "/groups", 200, "operator lists the groups assigned to him"),
    ("gina", "GET", "/groups", 200, "another fleet's admin lists her own groups"),
    ("erin", "GET", "/groups/{north}", 200, "admin reads a group of her fleet"),
    ("frank", "GET", "/groups/{north}", 200, "operator reads his assigned group"),
    ("frank", "GET", "/groups/{south}", 404, "operator: a group he is not assigned to"),
    ("gina", "GET", "/groups/{north}", 404, "BOLA: another fleet's group id"),
    ("erin", "GET", "/groups/{main}", 404, "BOLA: the other direction"),
    ("erin", "GET", "/groups/{unknown}", 404, "unknown group id"),
    ("alice", "GET", "/groups/{north}", 404, "a consumer with a fleet token and a real id"),
    ("judy", "GET", "/groups/{north}", 404, "platform admin: no fleet objects"),
    ("ken", "GET", "/groups/{north}", 404, "engineer: no fleet objects"),
    ("erin", "GET", "/groups/{north}/vehicles", 200, "admin lists a group's vehicles"),
    ("frank", "GET", "/groups/{north}/vehicles", 200, "operator lists his group's vehicles"),
    ("frank", "GET", "/groups/{south}/vehicles", 404, "operator: another group's vehicles"),
    ("gina", "GET", "/groups/{north}/vehicles", 404, "BOLA: another fleet's vehicles"),
    ("judy", "GET", "/groups/{north}/vehicles", 404, "platform admin: no vehicle ids"),
    ("erin", "GET", "/groups/{north}/operators", 200, "admin lists a group's operators"),
    ("frank", "GET", "/groups/{north}/operators", 403, "BFLA: operator reads member data"),
    ("gina", "GET", "/groups/{north}/operators", 404, "BOLA: another fleet's operators"),
    ("alice", "GET", "/groups/{north}/operators", 403, "a consumer: not a fleet function"),
    ("erin", "GET", "/members", 200, "admin lists the fleet's members"),
    ("gina", "GET", "/members", 200, "admin lists her own fleet's members"),
    ("frank", "GET", "/members", 403, "BFLA: operator lists the fleet's people"),
    ("alice", "GET", "/members", 403, "BFLA: a consumer"),
    ("judy", "GET", "/members", 403, "BFLA: platform admin reads fleet people"),
    ("ken", "GET", "/members", 403, "BFLA: engineer reads fleet people"),
]

# Refused writes: (who, method, path template, body, expected status, why).
REFUSED_WRITES = [
    ("frank", "POST", "/groups", {"name": "frank-made"}, 403, "BFLA: operator creates a group"),
    ("alice", "POST", "/groups", {"name": "x"}, 403, "BFLA: consumer creates a fleet group"),
    ("judy", "POST", "/groups", {"name": "x"}, 403, "BFLA: platform admin creates a group"),
    ("ken", "POST", "/groups", {"name": "x"}, 403, "BFLA: engineer creates a group"),
    (
        "frank",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": ["{ACME-S1}"]},
        403,
        "BFLA: operator widens his own group (and so his access)",
    ),
    (
        "gina",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": ["{GLOBEX-1}"]},
        404,
        "BOLA: another fleet's group",
    ),
    (
        "gina",
        "POST",
        "/groups/{main}/vehicles",
        {"vehicle_ids": ["{ACME-S1}"]},
        404,
        "BOLA: another fleet's vehicle pulled into her group",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": ["{ACME-S1}", "{GLOBEX-1}"]},
        404,
        "array with one foreign id: nothing is added",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": ["{ACME-S2}", "{MALLORY-1}"]},
        404,
        "array with a consumer's vehicle id",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": ["{ACME-S1}", UNKNOWN_VEHICLE]},
        404,
        "array with one unknown id",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": ["{ACME-S1}", "{ACME-N1}"]},
        409,
        "one vehicle already in the group: nothing is added",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": ["{ACME-S1}", "{ACME-S1}"]},
        422,
        "duplicate ids (cost inflation, ambiguous intent)",
    ),
    ("erin", "POST", "/groups/{north}/vehicles", {"vehicle_ids": []}, 422, "empty array"),
    (
        "erin",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": [f"veh_{i:026d}" for i in range(101)]},
        422,
        "over the batch cap",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": ["ACME-S1 OR 1=1"]},
        422,
        "hostile id text",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": ["v" * 64]},
        422,
        "an id longer than any id (PostgreSQL: it did not fit the decision's audit record)",
    ),
    ("erin", "POST", "/groups/{north}/vehicles", None, 422, "null body"),
    ("erin", "POST", "/groups/{north}/vehicles", [], 422, "array body"),
    ("frank", "DELETE", "/groups/{north}/vehicles/{ACME-N1}", None, 403, "BFLA: operator"),
    ("gina", "DELETE", "/groups/{north}/vehicles/{ACME-N1}", None, 404, "BOLA: other fleet"),
    (
        "erin",
        "DELETE",
        "/groups/{south}/vehicles/{ACME-N1}",
        None,
        404,
        "child through the wrong parent: N1 is in north, not south",
    ),
    (
        "erin",
        "DELETE",
        "/groups/{main}/vehicles/{GLOBEX-1}",
        None,
        404,
        "BOLA: admin removes from another fleet's group",
    ),
    (
        "frank",
        "POST",
        "/groups/{south}/operators",
        {"user_id": "{u_frank}"},
        403,
        "BFLA: operator assigns himself to another group",
    ),
    (
        "gina",
        "POST",
        "/groups/{north}/operators",
        {"user_id": "{u_gina}"},
        404,
        "BOLA: another fleet's admin joins a group",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/operators",
        {"user_id": "{u_gina}"},
        404,
        "assigning someone of another fleet (id says nothing)",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/operators",
        {"user_id": "{u_alice}"},
        404,
        "assigning a consumer",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/operators",
        {"user_id": "{u_erin}"},
        422,
        "a member who is not an operator",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/operators",
        {"user_id": "{u_frank}"},
        409,
        "already assigned",
    ),
    (
        "frank",
        "DELETE",
        "/groups/{north}/operators/{assignment}",
        None,
        403,
        "BFLA: operator ends assignments",
    ),
    (
        "gina",
        "DELETE",
        "/groups/{north}/operators/{assignment}",
        None,
        404,
        "BOLA: another fleet's assignment",
    ),
    (
        "erin",
        "DELETE",
        "/groups/{south}/operators/{assignment}",
        None,
        404,
        "child through the wrong parent: frank's assignment is to north",
    ),
    (
        "erin",
        "DELETE",
        "/groups/{north}/operators/" + UNKNOWN_ASSIGNMENT,
        None,
        404,
        "unknown assignment",
    ),
    # Mass assignment: server-owned fields are not in the body models at all.
    (
        "erin",
        "POST",
        "/groups",
        {"name": "west", "tenant_id": "{u_gina}"},
        422,
        "mass assignment: tenant_id",
    ),
    ("erin", "POST", "/groups", {"name": "west", "created_by": "x"}, 422, "mass assignment"),
    ("erin", "POST", "/groups", {"name": "west", "status": "x"}, 422, "mass assignment: status"),
    ("erin", "POST", "/groups", {"name": "west", "id": UNKNOWN_GROUP}, 422, "mass assignment: id"),
    ("erin", "POST", "/groups", {"name": "north"}, 409, "duplicate group name"),
    ("erin", "POST", "/groups", {"name": ""}, 422, "empty name"),
    ("erin", "POST", "/groups", {"name": "\u0430dmins"}, 422, "look-alike (Cyrillic) name"),
    ("erin", "POST", "/groups", {"name": "x" * 65}, 422, "oversized name"),
    (
        "erin",
        "POST",
        "/groups/{north}/operators",
        {"user_id": "{u_frank}", "role": "fleet_admin"},
        422,
        "mass assignment: role on an assignment",
    ),
    (
        "erin",
        "POST",
        "/groups/{north}/vehicles",
        {"vehicle_ids": ["{ACME-S1}"], "group_id": "{main}"},
        422,
        "mass assignment: a second group id in the body",
    ),
]


def _fill(text: str, ids: dict[str, str]) -> str:
    return text.format(**ids) if "{" in text else text


def _fill_body(body: Any, ids: dict[str, str]) -> Any:
    if isinstance(body, dict):
        return {k: _fill_body(v, ids) for k, v in body.items()}
    if isinstance(body, list):
        return [_fill_body(v, ids) for v in body]
    return _fill(body, ids) if isinstance(body, str) else body


async def test_read_table(api: Api) -> None:
    ids = _ids(api)
    wrong = []
    for who, method, path, status, why in READS:
        response = await _call(api, who, method, _fill(path, ids))
        if response.status_code != status:
            wrong.append(f"{who} {method} {path}: {response.status_code} ({why})")
    assert not wrong, "\n".join(wrong)


async def test_refused_writes_change_nothing(api: Api) -> None:
    ids = _ids(api) | {"assignment": await _frank_assignment(api)}
    before = await _state(api)
    wrong = []
    for who, method, path, body, status, why in REFUSED_WRITES:
        response = await _call(api, who, method, _fill(path, ids), _fill_body(body, ids))
        if response.status_code != status:
            wrong.append(f"{who} {method} {path}: {response.status_code} ({why})")
        elif response.headers["content-type"] != "application/problem+json":
            wrong.append(f"{who} {method} {path}: not a problem document ({why})")
    assert not wrong, "\n".join(wrong)
    assert await _state(api) == before
    # frank still holds his group's vehicles: the refused unassignments did nothing.
    status = await api.get("frank", F, f"/vehicles/{ids['ACME-N1']}/status")
    assert status.status_code == 200


async def test_lists_show_only_what_the_caller_may_see(api: Api) -> None:
    ids = _ids(api)
    seen = {}
    for who in ("erin", "frank", "gina", "alice", "judy", "ken"):
        response = await _call(api, who, "GET", "/groups")
        assert response.status_code == 200, who
        seen[who] = sorted(g["name"] for g in response.json()["items"])
    # Operators see their assigned groups only; other fleets' and outsiders see nothing.
    assert seen == {
        "erin": ["north", "south"],
        "frank": ["north"],
        "gina": ["main"],
        "alice": [],
        "judy": [],
        "ken": [],
    }
    vehicles = (await _call(api, "frank", "GET", f"/groups/{ids['north']}/vehicles")).json()
    assert sorted(v["label"] for v in vehicles["items"]) == ["ACME-N1", "ACME-N2", "ACME-N3"]
    assert all(set(v) == {"id", "label"} for v in vehicles["items"])


async def test_members_carry_roles_and_no_secrets(api: Api) -> None:
    response = await _call(api, "erin", "GET", "/members")
    assert response.status_code == 200
    items = response.json()["items"]
    assert sorted((m["username"], m["role"]) for m in items) == [
        ("erin", "fleet_admin"),
        ("frank", "fleet_operator"),
    ]
    # The member's fields are exactly these: no credential field (password hash, TOTP
    # secret) can ride along. Field names, not the raw text: a random id may spell "totp".
    assert all(
        set(m)
        == {
            "membership_id",
            "user_id",
            "username",
            "display_name",
            "role",
            "valid_from",
            "valid_until",
        }
        for m in items
    )


async def test_admin_manages_a_group_end_to_end(api: Api) -> None:
    ids = _ids(api)
    created = await _call(api, "erin", "POST", "/groups", {"name": "west"})
    assert created.status_code == 201, created.text
    west = created.json()["id"]
    added = await _call(
        api, "erin", "POST", f"/groups/{west}/vehicles", {"vehicle_ids": [ids["ACME-S1"]]}
    )
    assert added.status_code == 201, added.text
    listed = (await _call(api, "erin", "GET", f"/groups/{west}/vehicles")).json()["items"]
    assert [v["label"] for v in listed] == ["ACME-S1"]
    removed = await _call(api, "erin", "DELETE", f"/groups/{west}/vehicles/{ids['ACME-S1']}")
    assert removed.status_code == 204
    listed = (await _call(api, "erin", "GET", f"/groups/{west}/vehicles")).json()["items"]
    assert listed == []
    # Removing twice is the same 404 as a vehicle that was never there.
    again = await _call(api, "erin", "DELETE", f"/groups/{west}/vehicles/{ids['ACME-S1']}")
    assert again.status_code == 404
    # gina cannot see the new group, by list or by id.
    assert (await _call(api, "gina", "GET", f"/groups/{west}")).status_code == 404


async def test_unassigned_operator_loses_the_group_and_its_vehicles(api: Api) -> None:
    # Revocation: ending an assignment ends access at once, on every route.
    ids = _ids(api)
    assignment = await _frank_assignment(api)
    n1_status = f"/vehicles/{ids['ACME-N1']}/status"
    assert (await api.get("frank", F, n1_status)).status_code == 200
    ended = await _call(api, "erin", "DELETE", f"/groups/{ids['north']}/operators/{assignment}")
    assert ended.status_code == 204
    assert (await api.get("frank", F, n1_status)).status_code == 404
    assert (await _call(api, "frank", "GET", f"/groups/{ids['north']}")).status_code == 404
    assert (await _call(api, "frank", "GET", "/groups")).json()["items"] == []
    # The ended assignment cannot be ended again (it is no longer a child of the group now).
    again = await _call(api, "erin", "DELETE", f"/groups/{ids['north']}/operators/{assignment}")
    assert again.status_code == 404


async def test_assigned_operator_gains_the_group(api: Api) -> None:
    ids = _ids(api)
    s1_status = f"/vehicles/{ids['ACME-S1']}/status"
    assert (await api.get("frank", F, s1_status)).status_code == 404
    assigned = await _call(
        api, "erin", "POST", f"/groups/{ids['south']}/operators", {"user_id": ids["u_frank"]}
    )
    assert assigned.status_code == 201, assigned.text
    assert assigned.json()["username"] == "frank"
    assert (await api.get("frank", F, s1_status)).status_code == 200
    operators = (await _call(api, "erin", "GET", f"/groups/{ids['south']}/operators")).json()
    assert [o["username"] for o in operators["items"]] == ["frank"]


async def test_foreign_group_and_unknown_group_answer_the_same(api: Api) -> None:
    # Enumeration: gina must not learn that an acme group id exists.
    ids = _ids(api)
    real = await _call(api, "gina", "GET", f"/groups/{ids['north']}")
    none = await _call(api, "gina", "GET", f"/groups/{UNKNOWN_GROUP}")
    strip = {"instance"}
    assert real.status_code == none.status_code == 404
    assert {k: v for k, v in real.json().items() if k not in strip} == {
        k: v for k, v in none.json().items() if k not in strip
    }


async def test_group_list_is_paginated_with_a_cap(api: Api) -> None:
    acme = api.world.tenants["acme-logistics"]
    cap = api.platform.settings.max_page_size
    async with api.platform.services() as (uow, ctx):
        fleets = FleetService(ctx)
        for i in range(cap):
            await fleets.create_group(acme, f"extra-{i:03d}", actor=Actor.system("test"))
        await uow.commit()
    # A huge limit is cut to the cap, and a cursor leads to the rest.
    first = (await _call(api, "erin", "GET", "/groups?limit=100000")).json()
    assert len(first["items"]) == cap and first["next_cursor"] is not None
    rest = (await _call(api, "erin", "GET", f"/groups?cursor={first['next_cursor']}")).json()
    assert rest["next_cursor"] is None
    names = [g["name"] for g in first["items"] + rest["items"]]
    assert len(names) == len(set(names)) == cap + 2
    # Walking in small pages sees the same set.
    seen: list[str] = []
    cursor: str | None = None
    while True:
        query = "/groups?limit=7" + (f"&cursor={cursor}" if cursor else "")
        page = (await _call(api, "erin", "GET", query)).json()
        seen += [g["name"] for g in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(names)
    async with api.platform.services() as (_, ctx):
        total = len((await ctx.session.scalars(select(FleetGroup))).all())
    assert total == cap + 3  # acme's two, globex's one, the extras


async def test_bad_cursors_and_limits_are_refused(api: Api) -> None:
    # Hostile input: forged, oversized or look-alike cursors are 422, never a 500.
    ids = _ids(api)
    for path in ("/groups", f"/groups/{ids['north']}/vehicles", "/members"):
        for query in ("cursor=%25%25%25", "cursor=" + "x" * 200, "cursor=\u0430bc", "limit=0"):
            response = await _call(api, "erin", "GET", f"{path}?{query}")
            assert response.status_code == 422, (path, query)
