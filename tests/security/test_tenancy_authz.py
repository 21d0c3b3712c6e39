"""Tenants and client registrations on the admin surface: the platform admin's function.
judy = platform admin; ken (engineer) and heidi (support) are refused, and so is everyone
else. Each row names the threat it covers; refused writes are read back."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from fleetward.core.surfaces import Surface
from fleetward.identity.models import Tenant
from fleetward.identity.oauth_models import Client
from fleetward.store.base import Base
from support.api import PARTNER_APP, Api

A = Surface.ADMIN
F = Surface.FLEET
M = Surface.MOBILE
NEW = {"slug": "initech", "name": "Initech", "kind": "fleet"}


async def _slugs(api: Api) -> list[str]:
    async with api.platform.services() as (_, ctx):
        return sorted((await ctx.session.scalars(select(Tenant.slug))).all())


async def test_function_table(api: Api) -> None:
    client = f"/clients/{PARTNER_APP}"
    # (who, method, path, body, expected, why)
    rows: list[tuple[str, str, str, Any, int, str]] = [
        ("judy", "GET", "/tenants", None, 200, "platform admin lists tenants"),
        ("judy", "GET", "/clients", None, 200, "platform admin lists client registrations"),
        ("judy", "GET", client, None, 200, "platform admin reads a registration"),
        ("judy", "GET", "/clients/no-such-client", None, 404, "unknown client"),
        ("ken", "GET", "/tenants", None, 403, "BFLA: engineer lists tenants"),
        ("ken", "POST", "/tenants", NEW, 403, "BFLA: engineer creates a tenant"),
        ("ken", "GET", "/clients", None, 403, "BFLA: engineer lists clients"),
        ("ken", "GET", client, None, 403, "BFLA: engineer reads a client"),
        ("ken", "GET", "/clients/no-such-client", None, 403, "refused before any lookup"),
        ("heidi", "GET", "/tenants", None, 403, "BFLA: support agent lists tenants"),
        ("heidi", "POST", "/tenants", NEW, 403, "BFLA: support creates a tenant"),
        ("heidi", "GET", "/clients", None, 403, "BFLA: support lists clients"),
        ("heidi", "GET", client, None, 403, "BFLA: support reads a client"),
        ("erin", "GET", "/tenants", None, 403, "BFLA: a fleet admin on the admin surface"),
        ("erin", "POST", "/tenants", NEW, 403, "BFLA: a fleet admin creates a tenant"),
        ("alice", "GET", "/clients", None, 403, "BFLA: a customer"),
    ]
    before = await _slugs(api)
    wrong = []
    for who, method, path, body, status, why in rows:
        response = await api.client.request(
            method, f"/admin/v1{path}", json=body, headers=api.headers(who, A)
        )
        if response.status_code != status:
            wrong.append(f"{who} {method} {path}: {response.status_code} ({why})")
    assert not wrong, "\n".join(wrong)
    assert await _slugs(api) == before


async def test_an_empty_client_registry_refuses_the_function_all_the_same(api: Api) -> None:
    # Whether the caller may administer client registrations does not depend on whether any
    # exists: with none registered, the engineer and the support agent are still a 403 (not
    # an empty 200 list, nor a 404 that a platform admin would get), and judy still the
    # empty list and the 404.
    async with api.platform.services() as (uow, ctx):
        for model in Base.metadata.sorted_tables[::-1]:
            if any(fk.column.table.name == "oauth_clients" for fk in model.foreign_keys):
                await ctx.session.execute(model.delete())
        await ctx.session.execute(delete(Client))
        await uow.commit()
    rows = [
        ("ken", "/clients", 403),
        ("ken", "/clients/no-such-client", 403),
        ("heidi", "/clients", 403),
        ("heidi", f"/clients/{PARTNER_APP}", 403),
        ("alice", "/clients", 403),
        ("judy", f"/clients/{PARTNER_APP}", 404),
    ]
    wrong = []
    for who, path, status in rows:
        response = await api.get(who, A, path)
        if response.status_code != status:
            wrong.append(f"{who} GET {path}: {response.status_code}, not {status}")
    assert not wrong, "\n".join(wrong)
    listed = await api.get("judy", A, "/clients")
    assert listed.status_code == 200 and listed.json()["items"] == []


async def test_platform_admin_gets_nothing_from_vehicle_routes(api: Api) -> None:
    # Separation of duties: administering tenants grants no vehicle data.
    n1 = api.vehicle_id("ACME-N1")
    alice = api.vehicle_id("ALICE-1")
    assert (await api.get("judy", F, f"/vehicles/{n1}/status")).status_code == 404
    assert (await api.get("judy", M, f"/vehicles/{alice}")).status_code == 404
    assert (await api.get("judy", F, "/vehicles")).json()["items"] == []


async def test_tenant_list_covers_every_tenant(api: Api) -> None:
    response = await api.get("judy", A, "/tenants")
    assert response.status_code == 200
    slugs = sorted(t["slug"] for t in response.json()["items"])
    assert slugs == await _slugs(api)
    assert all(
        set(t) == {"id", "slug", "name", "kind", "created_at", "disabled_at"}
        for t in response.json()["items"]
    )


async def test_platform_admin_creates_a_tenant(api: Api) -> None:
    response = await api.post("judy", A, "/tenants", NEW)
    assert response.status_code == 201, response.text
    assert response.json()["slug"] == "initech" and response.json()["kind"] == "fleet"
    assert "initech" in await _slugs(api)
    again = await api.post("judy", A, "/tenants", NEW | {"name": "Initech 2"})
    assert again.status_code == 409  # duplicate slug


async def test_bad_tenant_bodies_change_nothing(api: Api) -> None:
    cases = [
        (NEW | {"kind": "operator"}, "a second platform-staff tenant (privilege escalation)"),
        (NEW | {"kind": "superuser"}, "unknown kind"),
        (NEW | {"slug": "Initech Corp"}, "slug with capitals and spaces"),
        (NEW | {"slug": "\u0430cme-logistics"}, "look-alike (Cyrillic) slug"),
        (NEW | {"slug": "a"}, "slug too short"),
        (NEW | {"slug": "x" * 65}, "slug too long"),
        (NEW | {"name": ""}, "empty name"),
        (NEW | {"name": "Ini\ntech"}, "control characters in the name"),
        # Text spoofing where tenant names are shown (consent screen, admin lists, audit):
        (NEW | {"name": "Initech \u202egnp.exe"}, "bidi override (RLO) in the name"),
        (NEW | {"name": "\u202aInitech\u202c"}, "bidi embedding in the name"),
        (NEW | {"name": "Ini\u2067hcet\u2069"}, "bidi isolate in the name"),
        (NEW | {"name": "Ini\u200btech"}, "zero-width space (format) in the name"),
        (NEW | {"name": "\ufeffInitech"}, "byte order mark (format) in the name"),
        (NEW | {"name": "Ini\u0085tech"}, "C1 control (NEL) in the name"),
        (NEW | {"name": "Ini\u2028tech"}, "line separator in the name"),
        (NEW | {"id": "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa"}, "mass assignment: id"),
        (NEW | {"tenant_id": "ten_x"}, "mass assignment: tenant_id"),
        (NEW | {"status": "active"}, "mass assignment: status"),
        (NEW | {"created_by": "usr_x"}, "mass assignment: created_by"),
        (NEW | {"disabled_at": None}, "mass assignment: disabled_at"),
        ({"slug": "initech", "name": "Initech"}, "no kind"),
    ]
    before = await _slugs(api)
    wrong = []
    for body, why in cases:
        response = await api.post("judy", A, "/tenants", body)
        if response.status_code != 422:
            wrong.append(f"{why}: {response.status_code}")
    spoof = await api.post("judy", A, "/tenants", NEW | {"name": "Initech \u202egnp.exe"})
    assert spoof.headers["content-type"].startswith("application/problem+json")
    assert spoof.json()["errors"][0]["location"] == ["body", "name"]
    assert "gnp.exe" not in spoof.text  # the refused value is never repeated
    duplicate = await api.post("judy", A, "/tenants", NEW | {"slug": "acme-logistics"})
    if duplicate.status_code != 409:
        wrong.append(f"duplicate slug: {duplicate.status_code}")
    assert not wrong, "\n".join(wrong)
    assert await _slugs(api) == before


async def test_tenant_names_in_any_script_are_kept(api: Api) -> None:
    # The refusal is of invisible and control characters, not of languages.
    name = "Soci\u00e9t\u00e9 M\u00fcller \u2013 \u682a\u5f0f\u4f1a\u793e \u0634\u0631\u0643\u0629"
    response = await api.post("judy", A, "/tenants", NEW | {"name": name})
    assert response.status_code == 201, response.text
    assert response.json()["name"] == name


async def test_client_registrations_carry_no_secrets_or_keys(api: Api) -> None:
    listed = await api.get("judy", A, "/clients")
    one = await api.get("judy", A, f"/clients/{PARTNER_APP}")
    assert listed.status_code == one.status_code == 200
    ids = {c["id"] for c in listed.json()["items"]}
    assert {PARTNER_APP, "acme-telemetry"} <= ids
    for text in (listed.text, one.text):
        # No JWKS material (key type, curve, coordinates) and nothing named like a secret.
        for marker in ('"kty"', '"crv"', '"x"', '"y"', '"d"', "secret", "jwks"):
            assert marker not in text, marker
    assert isinstance(one.json()["key_ids"], list)
    assert one.json()["tenant_id"] == api.world.tenants["insureco"].id


async def test_lists_are_paginated_and_bad_cursors_refused(api: Api) -> None:
    for path in ("/tenants", "/clients"):
        full = (await api.get("judy", A, path)).json()["items"]
        seen: list[str] = []
        cursor: str | None = None
        while True:
            query = f"{path}?limit=2" + (f"&cursor={cursor}" if cursor else "")
            page = (await api.get("judy", A, query)).json()
            assert len(page["items"]) <= 2
            seen += [item["id"] for item in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == [item["id"] for item in full], path
        for query in ("cursor=%25%25%25", "cursor=" + "x" * 200, "cursor=\u0430bc", "limit=0"):
            assert (await api.get("judy", A, f"{path}?{query}")).status_code == 422, query
