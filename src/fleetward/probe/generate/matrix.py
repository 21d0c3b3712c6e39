"""The matrix: every actor (role x relationship state x tenant side) x object type x route.

Each actor is probed against the instances the spec names for it (``Spec.targets``: its own
scenario's object on both sides, and the object's other scenarios). The oracle says what must
happen; a refused write is read back by an actor allowed to read the object. A route that
consumes its target (``spare``) is sent to the spare twin, and only the first write the
oracle allows on a spare is sent (a consumed object cannot prove a second allowance).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from fleetward.probe.generate.common import World
from fleetward.probe.manifest import Manifest
from fleetward.probe.model import Case, Expect, Family, Request
from fleetward.probe.spec.models import Spec

_READS = frozenset({"read", "list"})


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
                    path, body = parts
                    decision = world.decide(actor, obj, route, record)
                    expect = decision.expect
                    if route.spare and expect is Expect.ALLOW:
                        spare = (record.type, record.anchor, record.side, str(record.actor))
                        if spare in consumed:
                            continue
                        consumed.add(spare)
                    refused = expect is not Expect.ALLOW
                    writes = route.method != "GET"
                    yield Case(
                        id=f"matrix/{route.name}/{actor.name}/{record.anchor}-{record.side}",
                        family=Family.MATRIX,
                        route_id=route.name,
                        request=Request(route.method, path, actor.name, body=body),
                        expect=expect,
                        why=decision.why,
                        canaries=tuple(record.canaries),
                        read_back=world.read_back(obj, route, record)
                        if refused and writes
                        else None,
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


def generate(spec: Spec, manifest: Manifest, openapi: Mapping[str, Any]) -> Iterator[Case]:
    return cases(World(spec, manifest, openapi))
