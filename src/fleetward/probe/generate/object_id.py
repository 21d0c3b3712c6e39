"""Object ids: another owner's ids, confusing spellings, children through the wrong parent,
and ids smuggled in bodies (arrays included).

Every case is sent by an actor the oracle DENIES on the victim object (or allows only on
its own one), so any 2xx or any canary of the victim in the answer is a finding.
Use after revoke / transfer / close is the matrix's relationship states.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import quote

from fleetward.probe.generate.common import World, body_params, fill, fill_body, other_side
from fleetward.probe.manifest import Manifest, ManifestActor, ObjectRecord
from fleetward.probe.model import Case, Expect, Family, Request
from fleetward.probe.spec.models import ObjectType, Route, Spec

# (variant name, how the victim's id is spelled in the path). Each must still be refused.
CONFUSING: Final[tuple[tuple[str, str], ...]] = (
    ("query-suffix", "{id}?x=1"),
    ("encoded-query", "{id}%3Fx=1"),
    ("dot-dot", "{id}/.."),
    ("encoded-slash", "{id}%2F"),
    ("upper-case", "{ID}"),
    ("leading-space", "%20{id}"),
    ("trailing-space", "{id}%20"),
    ("trailing-tab", "{id}%09"),
    ("braces", "%7B%7D"),
    ("json-object", "%7B%22id%22:%22{id}%22%7D"),
    ("array", "[{id}]"),
    ("double-encoded", "{id_encoded}"),
)


def _spell(template: str, victim: str) -> str:
    return (
        template.replace("{id_encoded}", quote(quote(victim, safe=""), safe=""))
        .replace("{ID}", victim.upper())
        .replace("{id}", victim)
    )


def _denied_actor(
    world: World, obj: ObjectType, route: Route, victim: ObjectRecord
) -> ManifestActor | None:
    """An actor allowed on its own side's object but refused on the victim (other side)."""
    for actor in world.manifest.actors:
        if actor.side == victim.side or route.surface not in actor.surfaces:
            continue
        own = world.own(actor, obj)
        if own is None or world.decide(actor, obj, route, own).expect is not Expect.ALLOW:
            continue
        if world.decide(actor, obj, route, victim).expect in (Expect.DENY_HIDDEN, Expect.DENY):
            return actor
    return None


def _body(route: Route, ids: Mapping[str, str]) -> tuple[bool, Any]:
    try:
        return True, fill_body(route.body, ids)
    except KeyError:
        return False, None


def confusing_ids(world: World) -> Iterator[Case]:
    for obj, route in world.spec.routes():
        if not route.params or route.filtered:
            continue
        last = route.params[-1]
        for main in world.records(obj):
            victim = world.instance(route, main)
            if victim is None or last not in victim.ids:
                continue
            attacker = _denied_actor(world, obj, route, victim)
            complete, body = _body(route, victim.ids)
            if attacker is None or not complete:
                continue
            for variant, template in CONFUSING:
                path = fill(route.path, {**victim.ids, last: _spell(template, victim.ids[last])})
                if path is None:
                    continue
                yield Case(
                    id=f"object-id/{route.name}/{variant}/{victim.anchor}/{victim.side}",
                    family=Family.OBJECT_ID,
                    route_id=route.name,
                    request=Request(
                        route.method,
                        path,
                        attacker.name,
                        body=body,
                        fresh_headers=route.fresh_headers,
                    ),
                    expect=Expect.DENY,
                    why=f"another tenant's id spelled as {variant} slips past the object check",
                    canaries=tuple(victim.canaries),
                    read_back=world.read_back(obj, route, victim)
                    if route.method != "GET"
                    else None,
                )
            break  # one victim per route: the spellings, not the objects, are under test


def _own_and_victim(
    world: World, obj: ObjectType, route: Route
) -> Iterator[tuple[ManifestActor, ObjectRecord, ObjectRecord]]:
    """(actor, its own instance, the other side's twin) for actors allowed on their own.
    Platform-wide objects (not ``tenanted``) have no other tenant's twin to take."""
    if not obj.tenanted:
        return
    for main in world.records(obj):
        own = world.instance(route, main)
        if own is None:
            continue
        actor = world.allowed_actor(obj, route, own)
        if actor is None or actor.side != own.side:
            continue
        twin = world.manifest.find(obj.name, own.anchor, other_side(own.side), spare=own.spare)
        if twin is not None:
            yield actor, own, twin


def wrong_parent(world: World) -> Iterator[Case]:
    """A child object reached through a parent the actor may use, with another's child id."""
    for obj, route in world.spec.routes():
        if obj.parent is None or len(route.params) < 2 or route.filtered:
            continue
        child = route.params[-1]
        for actor, own, victim in _own_and_victim(world, obj, route):
            ids = {**own.ids, child: victim.ids.get(child, "")}
            path = fill(route.path, ids)
            complete, body = _body(route, own.ids)
            if child not in victim.ids or path is None or not complete:
                continue
            yield Case(
                id=f"object-id/{route.name}/wrong-parent/{own.anchor}/{own.side}",
                family=Family.OBJECT_ID,
                route_id=route.name,
                request=Request(
                    route.method, path, actor.name, body=body, fresh_headers=route.fresh_headers
                ),
                expect=Expect.DENY_HIDDEN,
                why="a child reached through a parent the caller may use, not its own parent",
                canaries=tuple(victim.canaries),
                read_back=world.read_back(obj, route, victim) if route.method != "GET" else None,
                hidden_reference=world.hidden_reference(route, own, actor.name),
            )


def _object_ids(world: World) -> frozenset[str]:
    """Ids of things a tenant owns: every id a route addresses in its path, and people."""
    found = {
        record.ids[name]
        for obj, route in world.spec.routes()
        for record in world.manifest.objects
        if record.type == obj.name
        for name in route.params
        if name in record.ids
    }
    found |= {actor.user_id for actor in world.manifest.actors if actor.user_id is not None}
    return frozenset(found)


def ids_in_bodies(world: World) -> Iterator[Case]:
    """The actor's own object in the path, the other tenant's ids in the body (and arrays).

    Only ids of a kind some route addresses in its path (or people) are smuggled: an id of a
    directory entry (a dealer to book with, a partner to consent to) is a reference anybody
    may use, not another tenant's object.
    """
    owned_ids = _object_ids(world)
    kinds = frozenset(v.split("_", 1)[0] + "_" for v in owned_ids if "_" in v)
    for obj, route in world.spec.routes():
        names = body_params(route.body) - set(route.params)
        if not names:
            continue
        for actor, own, victim in _own_and_victim(world, obj, route):
            owned = {
                n: victim.ids[n]
                for n in names
                if n in victim.ids and victim.ids[n].split("_", 1)[0] + "_" in kinds
            }
            smuggled = {**own.ids, **owned}
            path = fill(route.path, own.ids)
            complete, body = _body(route, smuggled)
            if smuggled == own.ids or path is None or not complete:
                continue
            yield Case(
                id=f"object-id/{route.name}/body-ids/{own.anchor}/{own.side}",
                family=Family.OBJECT_ID,
                route_id=route.name,
                request=Request(
                    route.method, path, actor.name, body=body, fresh_headers=route.fresh_headers
                ),
                expect=Expect.DENY,
                why="another tenant's ids in the request body are not checked like path ids",
                canaries=tuple(victim.canaries),
                read_back=world.read_back(obj, route, own),
            )


def cases(world: World) -> Iterator[Case]:
    yield from confusing_ids(world)
    yield from wrong_parent(world)
    yield from ids_in_bodies(world)


def generate(spec: Spec, manifest: Manifest, openapi: Mapping[str, Any]) -> Iterator[Case]:
    return cases(World(spec, manifest, openapi))
