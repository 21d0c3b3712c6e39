"""Property level: mass assignment on every write body.

Each write route is sent, by an actor the oracle allows on it, with its ordinary body plus
one server-owned field at a time (the route's ``server_owned`` list, and the usual suspects:
owner, tenant, role, status, expiry, credit, internal ids). The body models reject unknown
fields, so each must be refused (422 expected; any refusal passes) and the object read back
unchanged. Response fields against the per-role allow-list are checked on the matrix's
allowed reads (``Case.allowed_fields``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from fleetward.probe.generate.common import World, other_side
from fleetward.probe.manifest import Manifest, ManifestActor
from fleetward.probe.model import Case, Expect, Family, Request
from fleetward.probe.spec.models import Spec

# Fields a client must never set, with a value an attacker would choose.
SUSPECTS: Final[dict[str, Any]] = {
    "owner": "{other_user}",
    "owner_id": "{other_user}",
    "user_id": "{other_user}",
    "tenant": "{other_tenant}",
    "tenant_id": "{other_tenant}",
    "role": "platform_admin",
    "roles": ["platform_admin"],
    "status": "active",
    "state": "active",
    "expires_at": "2099-01-01T00:00:00Z",
    "credit": 1000000,
    "id": "veh_aaaaaaaaaaaaaaaaaaaaaaaaaa",
    "created_at": "2000-01-01T00:00:00Z",
    "is_admin": True,
}


def _attacker_values(world: World, actor: ManifestActor) -> dict[str, str]:
    away = other_side(actor.side)
    other = next((a for a in world.manifest.actors if a.side == away and a.user_id), None)
    return {
        "other_user": other.user_id
        if other and other.user_id
        else "usr_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        "other_tenant": other.tenant_id if other else "ten_aaaaaaaaaaaaaaaaaaaaaaaaaa",
    }


def _attack(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        return values.get(value[1:-1], value)
    return value


def cases(world: World) -> Iterator[Case]:
    for obj, route in world.spec.routes():
        if route.method in ("GET", "DELETE") or route.body is None:
            continue  # a route without a body ignores one: nothing to assign
        done: set[str] = set()
        for main in world.records(obj):
            record = world.instance(route, main)
            if record is None or record.side in done:
                continue
            actor = world.allowed_actor(obj, route, record)
            parts = world.request_parts(route, record)
            if actor is None or parts is None or actor.side != record.side:
                continue
            done.add(record.side)
            path, body = parts
            base = dict(body) if isinstance(body, dict) else {}
            values = _attacker_values(world, actor)
            fields = dict(SUSPECTS)
            for name in route.server_owned:
                fields.setdefault(name, "probe-mass-assignment")
            for name, value in fields.items():
                if name in base:
                    continue  # a field the route legitimately takes
                yield Case(
                    id=f"property/{route.name}/{name}/{record.side}",
                    family=Family.PROPERTY,
                    route_id=route.name,
                    request=Request(
                        route.method,
                        path,
                        actor.name,
                        body={**base, name: _attack(value, values)},
                        fresh_headers=route.fresh_headers,
                    ),
                    expect=Expect.DENY,
                    why=f"mass assignment: a client sets the server-owned field {name!r}",
                    read_back=world.read_back(obj, route, record),
                )


def generate(spec: Spec, manifest: Manifest, openapi: Mapping[str, Any]) -> Iterator[Case]:
    return cases(World(spec, manifest, openapi))
