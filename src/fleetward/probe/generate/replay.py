"""Replay of every catalogued route with credentials that must not work.

Every operation of the deployment's OpenAPI document on an API surface (its
``x-fleetward-surface``), except the public ones (``x-fleetward-permission`` = public), is
sent with no credentials, a garbage token, an expired token and a valid token for every
other surface: each must be a 401 with a challenge. Lower-privileged roles on the same
surface are the matrix's business (it knows which object each actor may touch).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from fleetward.probe.auth import EXPIRED, GARBAGE, OTHER_SURFACE
from fleetward.probe.generate.common import World, fill, fill_body
from fleetward.probe.manifest import Manifest
from fleetward.probe.model import Case, Expect, Family, Request
from fleetward.probe.spec.models import Spec

PUBLIC: Final = "public"
# Stands in for an id the world has no value for: authentication comes before any lookup.
_NO_ID: Final = "probe-unknown"


def route_id(world: World, method: str, template: str) -> str:
    """The spec's route name when the spec knows the route, else ``METHOD template``."""
    known = world.spec_route(method, template)
    return known[1].name if known is not None else f"{method} {template}"


def concrete_path(world: World, template: str, ids: Mapping[str, str]) -> str:
    path = fill(template, ids)
    if path is not None:
        return path
    params = {name: ids.get(name, _NO_ID) for name in _names(template)}
    return fill(template, params) or template


def route_body(template: Mapping[str, Any] | None, ids: Mapping[str, str]) -> Any:
    """The route's body when the world has every id it names; else none (auth comes first)."""
    try:
        return fill_body(template, ids)
    except KeyError:
        return None


def _names(template: str) -> list[str]:
    return [
        part[1:-1] for part in template.split("/") if part.startswith("{") and part.endswith("}")
    ]


def credentialed_operations(world: World) -> Iterator[tuple[str, str, str, Mapping[str, Any]]]:
    """(METHOD, template, surface, operation) of every non-public API-surface operation."""
    surfaces = set(world.spec.surfaces)
    for method, template, operation in world.operations():
        surface = str(operation.get("x-fleetward-surface", ""))
        if surface not in surfaces or operation.get("x-fleetward-permission") == PUBLIC:
            continue
        yield method, template, surface, operation


def cases(world: World) -> Iterator[Case]:
    ids = world.any_ids()
    with_tokens = {s for a in world.manifest.actors for s in a.surfaces}
    expired = set(world.manifest.expired_tokens)
    # A refused request carries nothing of anybody: every canary of the world is checked.
    canaries = tuple(sorted(world.manifest.canaries()))
    for method, template, surface, _operation in credentialed_operations(world):
        path = concrete_path(world, template, ids)
        known = world.spec_route(method, template)
        body = route_body(known[1].body if known is not None else None, ids)
        name = route_id(world, method, template)
        fresh = known[1].fresh_headers if known is not None else ()
        variants: list[tuple[str, str | None, str | None, str]] = [
            ("none", None, None, "a route that answers without credentials"),
            ("garbage", None, GARBAGE, "a forged, unsigned token accepted"),
        ]
        if surface in expired:
            variants.append(("expired", None, EXPIRED, "an expired token accepted"))
        for other in sorted(with_tokens - {surface}):
            variants.append(
                (
                    f"surface-{other}",
                    None,
                    f"{OTHER_SURFACE}{other}",
                    f"a token for the {other} surface accepted on the {surface} surface",
                )
            )
        for variant, actor, credential, why in variants:
            yield Case(
                id=f"replay/{name}/{variant}",
                family=Family.REPLAY,
                route_id=name,
                request=Request(
                    method, path, actor, body=body, credential=credential, fresh_headers=fresh
                ),
                expect=Expect.UNAUTHENTICATED,
                why=why,
                canaries=canaries,
            )


def generate(spec: Spec, manifest: Manifest, openapi: Mapping[str, Any]) -> Iterator[Case]:
    return cases(World(spec, manifest, openapi))
