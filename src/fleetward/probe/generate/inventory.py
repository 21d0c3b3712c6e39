"""Inventory drift: shadow routes (served but not in the OpenAPI document) and zombie
versions (a deprecated version that enforces less than the current one).

* Every probe path the spec lists, and a few a framework or a forgotten debug build serves,
  that the OpenAPI document does not declare: no 2xx, with or without a token.
* Every matrix refusal is sent again on each old version the spec names (e.g. ``/mobile/v0``
  for ``/mobile/v1``): the old version must refuse too (or not exist).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from fleetward.probe.generate import matrix
from fleetward.probe.generate.common import World
from fleetward.probe.manifest import Manifest
from fleetward.probe.model import Case, Expect, Family, Request
from fleetward.probe.spec.models import Spec

# Served by frameworks and debug builds when nobody switched them off.
USUAL_SHADOWS: Final = (
    "/docs",
    "/redoc",
    "/debug",
    "/internal",
    "/console",
    "/.env",
    "/.git/config",
    "/server-status",
    "/actuator",
    "/api/v1/vehicles",
    "/v1/vehicles",
)


def shadows(world: World) -> Iterator[Case]:
    declared = set(world.openapi.get("paths", {}))
    paths = [*world.spec.inventory.probe_paths, *USUAL_SHADOWS]
    actors = [None, *sorted({a.name for a in world.manifest.actors if a.side == "home"})[:1]]
    for path in dict.fromkeys(paths):
        if path in declared:
            continue
        for actor in actors:
            yield Case(
                id=f"inventory/shadow{path}/{actor or 'anonymous'}",
                family=Family.INVENTORY,
                route_id=f"GET {path}",
                request=Request("GET", path, actor),
                expect=Expect.DENY,
                why="a route served but absent from the OpenAPI document (shadow API)",
                canaries=tuple(sorted(world.manifest.canaries())),
            )


def zombies(world: World) -> Iterator[Case]:
    versions = world.spec.inventory.old_versions
    if not versions:
        return
    for case in matrix.cases(world):
        if case.expect in (Expect.ALLOW, Expect.FILTERED):
            continue  # a filtered list may answer 2xx: only refusals are compared
        for old, current in versions.items():
            if not case.request.path.startswith(current + "/"):
                continue
            path = old + case.request.path.removeprefix(current)
            request = Request(
                case.request.method,
                path,
                case.request.actor,
                headers=case.request.headers,
                body=case.request.body,
                credential=case.request.credential,
            )
            yield Case(
                id=f"inventory/zombie{old}/{case.id}",
                family=Family.INVENTORY,
                route_id=case.route_id,
                request=request,
                expect=Expect.DENY,
                why=f"the deprecated {old} enforces less than {current}: {case.why}",
                canaries=case.canaries,
                read_back=case.read_back,
            )


def cases(world: World) -> Iterator[Case]:
    yield from shadows(world)
    yield from zombies(world)


def generate(spec: Spec, manifest: Manifest, openapi: Mapping[str, Any]) -> Iterator[Case]:
    return cases(World(spec, manifest, openapi))
