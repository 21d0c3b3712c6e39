"""Every object route, walked (the generic BOLA/BFLA check that needs no list to stay current).

For each surface a stranger holds a valid, fully-scoped, freshly multi-factor token for that
surface, and every route the app serves there is called with every method it accepts, its
path ids filled with REAL ids of someone else's objects (the victim's vehicle, another
agent's case, another fleet's group) or unknown ids. Whatever the route, the stranger must get
a refusal (never a success on someone else's id, never a 5xx), no response may carry the
victim's identifiers, and the store must be unchanged afterwards (audit rows aside).
A new route is covered the moment it is served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi.routing import iter_route_contexts

from fleetward.core.surfaces import Surface
from support.api import PARTNER_APP, Api
from support.snapshot import snapshot

UNKNOWN_ID = "zzz_aaaaaaaaaaaaaaaaaaaaaaaaaa"
_PARAM = re.compile(r"{([a-z_]+)(?::[a-z]+)?}")

# Tables that a refused request may legitimately touch: the audit trail of the refusals.
_ALLOWED_CHANGES = {"audit_events"}


@dataclass(frozen=True)
class Stranger:
    who: str
    victim_vehicle: str


STRANGERS = {
    Surface.MOBILE: Stranger("mallory", "ALICE-1"),
    Surface.FLEET: Stranger("gina", "ACME-N1"),
    Surface.DEALER: Stranger("harry", "ALICE-1"),  # same dealer, not assigned to the case
    Surface.PARTNER: Stranger(PARTNER_APP, "MALLORY-1"),  # no consent on it
    Surface.SUPPORT: Stranger("ivan", "ALICE-1"),  # an agent without the case
    Surface.ADMIN: Stranger("heidi", "ALICE-1"),  # staff, but neither admin nor engineer
}


def _real_ids(api: Api, surface: Surface, victim: str) -> dict[str, str]:
    world = api.world
    ids = {"vehicle_id": world.vehicles[victim].id}
    ids["group_id"] = world.groups[("acme-logistics", "north")].id
    if surface is Surface.SUPPORT:
        ids["case_id"] = world.support_cases["heidi"].id
    else:
        ids["case_id"] = world.dealer_cases["ALICE-1"].id
    ids["user_id"] = world.users["alice"].id
    ids["account_id"] = world.users["alice"].id
    return ids


def _routes(api: Api, surface: Surface) -> list[tuple[str, str]]:
    app = api.client._transport.app  # type: ignore[attr-defined]
    found: list[tuple[str, str]] = []
    prefix = f"/{surface.value}/v1"
    for context in iter_route_contexts(app.router.routes):
        path = context.path or ""
        if not path.startswith(prefix) or path in {prefix, f"{prefix}/me"}:
            continue
        found += [(method, path) for method in sorted(context.methods or ()) if method != "HEAD"]
    return found


async def _walk(api: Api, surface: Surface) -> list[str]:
    stranger = STRANGERS[surface]
    ids = _real_ids(api, surface, stranger.victim_vehicle)
    victim = api.world.vehicles[stranger.victim_vehicle]
    secrets = {victim.id, victim.vin}
    problems: list[str] = []
    for method, template in _routes(api, surface):
        params = _PARAM.findall(template)
        for fill, values in (("real", ids), ("unknown", {})):
            path = _PARAM.sub(lambda m, v=values: v.get(m.group(1), UNKNOWN_ID), template)
            body = {} if method in {"POST", "PUT", "PATCH"} else None
            response = await api.client.request(
                method,
                path,
                json=body,
                headers=api.headers(stranger.who, surface),
            )
            status = response.status_code
            label = f"{stranger.who}: {method} {path} ({fill} ids) -> {status}"
            if status >= 500:
                problems.append(f"{label}: server error")
            if params and 200 <= status < 300:
                problems.append(f"{label}: success on someone else's object")
            # The problem's "instance" echoes the path the caller sent; anything else is a leak.
            text = (response.text + " ".join(response.headers.values())).replace(path, "")
            leaked = [s for s in secrets if s in text]
            if leaked:
                problems.append(f"{label}: the response names the victim's vehicle")
            if not params:
                break  # no ids to vary
    return problems


async def test_strangers_get_nothing_on_any_route(api: Api) -> None:
    async with api.platform.services() as (_, ctx):
        before = await snapshot(ctx.session)
    problems: list[str] = []
    for surface in STRANGERS:
        problems += await _walk(api, surface)
    async with api.platform.services() as (_, ctx):
        after = await snapshot(ctx.session)
    changed = sorted(t for t in before if before[t] != after[t] and t not in _ALLOWED_CHANGES)
    assert not problems, "\n".join(problems)
    assert not changed, f"refused requests changed {changed}"


async def test_the_walk_covers_every_surface(api: Api) -> None:
    # The walk proves nothing about a surface it never reaches.
    for surface in STRANGERS:
        if surface in {Surface.MOBILE, Surface.FLEET, Surface.DEALER, Surface.PARTNER}:
            assert _routes(api, surface), surface
