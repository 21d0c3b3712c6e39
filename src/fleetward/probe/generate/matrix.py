"""The matrix: every actor (role x relationship state x tenant side) x object type x route.

Each actor is probed against the instances the spec names for it (``Spec.targets``: its own
scenario's object on both sides, and the object's other scenarios). The oracle says what must
happen; a refused write is read back by an actor allowed to read the object. A route that
consumes its target (``spare``) is sent to the spare twin, and only the first write the
oracle allows on a spare is sent (a consumed object cannot prove a second allowance).

A supplement (``paged_cases``, run with the matrix by ``generate``): a list filtered to
what the actor may see, probed about another tenant's object, is also asked one item per
page (``limit=1``, when the route takes a ``limit``) and walked to its last page by the
runner, with the object's ids in cursor form among the canaries: a list cut into pages
before it is filtered names the object in a ``next_cursor`` (the cursor is the last row of
the unfiltered page), even when the filter keeps it out of every page.

A command route without a ``cancel`` (the dealer's diagnostics run: its surface has no job
routes) gets no allowed case: an accepted job the probe cannot cancel would stay queued for
the vehicle. Its refusals are probed as any other.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import Any

from fleetward.probe.auth import PASSWORD_ONLY, STALE_AUTH
from fleetward.probe.generate.common import World, tenant_of
from fleetward.probe.manifest import Manifest, ManifestActor, ObjectRecord
from fleetward.probe.model import Case, Expect, Family, Request
from fleetward.probe.oracle import Decision
from fleetward.probe.spec.models import ObjectType, Route, Spec

_READS = frozenset({"read", "list"})
PAGE_OF_ONE = "limit=1"


def paged(path: str) -> str:
    """The list path asking for pages of one item."""
    return f"{path}{'&' if '?' in path else '?'}{PAGE_OF_ONE}"


def cursor_form(value: str) -> str:
    """An id as the deployment's keyset cursors carry it (URL-safe base64, unpadded)."""
    return base64.urlsafe_b64encode(value.encode("utf-8")).decode("ascii").rstrip("=")


def _case(
    world: World,
    actor: ManifestActor,
    obj: ObjectType,
    route: Route,
    record: ObjectRecord,
    parts: tuple[str, Any],
    decision: Decision,
) -> Case:
    path, body = parts
    expect = decision.expect
    refused = expect is not Expect.ALLOW
    writes = route.method != "GET"
    return Case(
        id=f"matrix/{route.name}/{actor.name}/{record.anchor}-{record.side}",
        family=Family.MATRIX,
        route_id=route.name,
        request=Request(
            route.method, path, actor.name, body=body, fresh_headers=route.fresh_headers
        ),
        expect=expect,
        why=decision.why,
        canaries=tuple(record.canaries),
        read_back=world.read_back(obj, route, record) if refused and writes else None,
        job=route.operation == "command",
        # Any job the command created is cancelled, a wrongly accepted one too: it must not
        # stay in flight to meet the next command on the vehicle.
        cancel=world.cancel(route, record, actor.name),
        step_up=route.step_up and not refused,
        allowed_fields=(
            world.allowed_fields(obj, actor.role)
            if not refused and route.operation in _READS
            else None
        ),
        hidden_reference=(
            world.hidden_reference(route, record, actor.name)
            if expect is Expect.DENY_HIDDEN
            else None
        ),
    )


def uncancellable(route: Route) -> bool:
    """A command route with no ``cancel``: a job it created would stay queued for the
    vehicle, so its allowed cases are not sent (its refusals are)."""
    return route.operation == "command" and route.cancel is None


def cases(world: World) -> Iterator[Case]:
    # A spare is consumed by the first write allowed on it: a second allowed write (another
    # actor, or another route on the same object) would meet a used object, not a decision.
    consumed: set[tuple[str, str, str, str]] = set()
    for actor in world.manifest.actors:
        for obj in world.spec.objects:
            for main in world.targets(actor, obj):
                for route in obj.routes:
                    record = world.instance(route, main, actor.name)
                    parts = None if record is None else world.request_parts(route, record)
                    if record is None or parts is None:
                        continue  # the seed made no instance with these ids
                    decision = world.decide(actor, obj, route, record)
                    if uncancellable(route) and decision.expect is Expect.ALLOW:
                        continue  # the probe never creates a job it cannot withdraw
                    if route.spare and decision.expect is Expect.ALLOW:
                        spare = (record.type, record.anchor, record.side, str(record.actor))
                        if spare in consumed:
                            continue
                        consumed.add(spare)
                    case = _case(world, actor, obj, route, record, parts, decision)
                    yield case
                    if route.step_up and case.expect is Expect.ALLOW:
                        yield without_step_up(world, obj, route, record, case)
                        yield password_only(world, obj, route, record, case)


def without_step_up(
    world: World, obj: ObjectType, route: Route, record: ObjectRecord, allowed: Case
) -> Case:
    """An allowed step-up command sent again with the actor's token from a multi-factor
    sign-in an hour old: the step-up challenge (401), and nothing on the vehicle's job list
    but the rejected job."""
    return replace(
        allowed,
        id=f"{allowed.id}/no-step-up",
        request=replace(allowed.request, credential=STALE_AUTH),
        expect=Expect.STEP_UP,
        why=f"{allowed.why}; without a recent multi-factor sign-in (step-up): refused with "
        "the step-up challenge",
        read_back=world.read_back(obj, route, record),
        step_up=False,
    )


def password_only(
    world: World, obj: ObjectType, route: Route, record: ObjectRecord, allowed: Case
) -> Case:
    """An allowed step-up command sent again with the actor's token from a sign-in as recent
    as a step-up asks, but by password alone (``acr`` password): refused exactly as the
    hour-old sign-in is (a platform that checked the sign-in's age but not its strength
    would accept it)."""
    stale = without_step_up(world, obj, route, record, allowed)
    return replace(
        stale,
        id=f"{allowed.id}/password-only",
        request=replace(allowed.request, credential=PASSWORD_ONLY),
        why=f"{allowed.why}; with a recent sign-in by password alone (too weak for a "
        "step-up): refused with the step-up challenge",
    )


def paged_cases(world: World) -> Iterator[Case]:
    """The matrix's filtered lists about another tenant's object, asked a page of one at a
    time and walked to the end, the object's ids in cursor form among the canaries."""
    for actor in world.manifest.actors:
        for obj in world.spec.objects:
            for record in world.targets(actor, obj):
                for route in obj.routes:
                    if route.method != "GET" or route.operation != "list" or route.spare:
                        continue
                    if tenant_of(world.spec, actor, obj, record) != "other":
                        continue
                    if "limit" not in world.query_params(route.method, route.path):
                        continue
                    parts = world.request_parts(route, record)
                    decision = world.decide(actor, obj, route, record)
                    if parts is None or decision.expect is not Expect.FILTERED:
                        continue
                    case = _case(world, actor, obj, route, record, parts, decision)
                    yield replace(
                        case,
                        id=f"{case.id}/limit-1",
                        request=replace(case.request, path=paged(parts[0])),
                        why=f"{decision.why}; walked a page at a time: the list is filtered "
                        "before it is cut into pages",
                        canaries=(
                            *case.canaries,
                            *(cursor_form(value) for value in record.ids.values()),
                        ),
                    )


def generate(spec: Spec, manifest: Manifest, openapi: Mapping[str, Any]) -> Iterator[Case]:
    return cases(World(spec, manifest, openapi))
