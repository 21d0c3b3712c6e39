"""Function level: privileged routes with every other role, verb tampering, method override.

* Every operation on a privileged surface (admin, support, dealer, and the fleet surface's
  bulk and management routes: any route the spec marks ``function``) is sent with the home
  token of every actor whose role has no token for that surface: a 401 (wrong audience).
* Verb tampering: every spec route is sent, by an actor the oracle allows on it, with each
  method its path does not declare: never a 2xx.
* ``X-HTTP-Method-Override``: every write route is sent by an allowed actor as a method its
  path does not declare, with the header naming the real method: never a 2xx.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final

from fleetward.probe.generate.common import HTTP_METHODS, World
from fleetward.probe.generate.replay import concrete_path, credentialed_operations, route_id
from fleetward.probe.generate.replay import route_body as replay_body
from fleetward.probe.manifest import Manifest
from fleetward.probe.model import Case, Expect, Family, Request
from fleetward.probe.spec.models import Spec

PRIVILEGED_SURFACES: Final = frozenset({"admin", "support", "dealer"})
OVERRIDE_HEADERS: Final = ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override")


def _privileged(world: World, method: str, template: str, surface: str) -> bool:
    if surface in PRIVILEGED_SURFACES:
        return True
    known = world.spec_route(method, template)
    return known is not None and known[1].function


def other_roles(world: World) -> Iterator[Case]:
    ids = world.any_ids()
    canaries = tuple(sorted(world.manifest.canaries()))
    # One actor per role is enough: the token's audience, not the relationship, is tested.
    seen_roles: set[str] = set()
    actors = []
    for actor in world.manifest.actors:
        if actor.role not in seen_roles:
            seen_roles.add(actor.role)
            actors.append(actor)
    for method, template, surface, _operation in credentialed_operations(world):
        if not _privileged(world, method, template, surface):
            continue
        path = concrete_path(world, template, ids)
        name = route_id(world, method, template)
        known = world.spec_route(method, template)
        body = replay_body(known[1].body if known is not None else None, ids)
        fresh = known[1].fresh_headers if known is not None else ()
        for actor in actors:
            if surface in actor.surfaces:
                continue  # the matrix decides for roles that hold this surface
            yield Case(
                id=f"function/{name}/{actor.role}",
                family=Family.FUNCTION,
                route_id=name,
                request=Request(method, path, actor.name, body=body, fresh_headers=fresh),
                expect=Expect.UNAUTHENTICATED,
                why=f"a {actor.role} reaches a {surface} function with its own token",
                canaries=canaries,
            )


def tampering(world: World) -> Iterator[Case]:
    for obj, route in world.spec.routes():
        declared = world.declared_methods(route.path)
        if not declared:
            continue  # the spec's path is not in the OpenAPI document: nothing to compare with
        done: set[str] = set()
        for main in world.records(obj):
            record = world.instance(route, main)
            if record is None or record.side in done:
                continue
            actor = world.allowed_actor(obj, route, record)
            parts = world.request_parts(route, record)
            if actor is None or parts is None:
                continue
            done.add(record.side)
            path, body = parts
            yield from _tampered(
                Request(
                    route.method, path, actor.name, body=body, fresh_headers=route.fresh_headers
                ),
                name=route.name,
                declared=declared,
                read_back=world.read_back(obj, route, record),
                side=record.side,
            )


def _tampered(
    real: Request, *, name: str, declared: set[str], read_back: Request | None, side: str
) -> Iterator[Case]:
    path, actor, body, fresh = real.path, real.actor, real.body, real.fresh_headers
    for method in HTTP_METHODS:
        if method in declared:
            continue
        yield Case(
            id=f"function/{name}/verb-{method}/{side}",
            family=Family.FUNCTION,
            route_id=name,
            request=Request(
                method,
                path,
                actor,
                body=body if method != "GET" else None,
                fresh_headers=fresh,
            ),
            expect=Expect.DENY,
            why=f"verb tampering: {method} on a path that does not declare it does something",
            read_back=read_back,
        )
    if real.method == "GET":
        return
    carrier = next((m for m in ("POST", "GET") if m not in declared), None)
    if carrier is None:
        return
    for header in OVERRIDE_HEADERS:
        yield Case(
            id=f"function/{name}/override-{header.lower()}/{side}",
            family=Family.FUNCTION,
            route_id=name,
            request=Request(
                carrier,
                path,
                actor,
                headers=((header, real.method),),
                body=body if carrier != "GET" else None,
                fresh_headers=fresh,
            ),
            expect=Expect.DENY,
            why=f"{header} turns a {carrier} into a {real.method}",
            read_back=read_back,
        )


def cases(world: World) -> Iterator[Case]:
    yield from other_roles(world)
    yield from tampering(world)


def generate(spec: Spec, manifest: Manifest, openapi: Mapping[str, Any]) -> Iterator[Case]:
    return cases(World(spec, manifest, openapi))
