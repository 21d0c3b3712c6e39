"""What every generator needs: the world it probes, path filling, read-backs and references.

A generator never asks the deployment what to expect: expectations come from the oracle
(the spec's rules); the world manifest only says which ids and canaries exist.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from fleetward.probe.manifest import Manifest, ManifestActor, ObjectRecord
from fleetward.probe.model import Expect, Request
from fleetward.probe.oracle import Decision, Oracle
from fleetward.probe.spec.models import ActorRef, ObjectType, Route, Side, Spec, Tenant
from fleetward.probe.spec.render import render_body

_PLACEHOLDER: Final = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# An id of the shape "<prefix>_<base32>" (the platform's ids); anything else has no safe twin.
_PREFIXED_ID: Final = re.compile(r"^([a-z]{2,5})_([a-z2-7]+)$")
HTTP_METHODS: Final = ("GET", "POST", "PUT", "PATCH", "DELETE")


def other_side(side: Side) -> Side:
    return "away" if side == "home" else "home"


def tenant_of(spec: Spec, actor: ManifestActor, obj: ObjectType, record: ObjectRecord) -> Tenant:
    """``same`` only for the actor's own scenario on its own side: anywhere else the actor
    holds no relationship (spec ``targets``)."""
    own = obj.anchor_for(spec.role(actor.role))
    return "same" if record.anchor == own and record.side == actor.side else "other"


def fill(template: str, ids: Mapping[str, str]) -> str | None:
    """The template with every ``{param}`` replaced; None when an id is missing."""
    missing = False

    def one(match: re.Match[str]) -> str:
        nonlocal missing
        value = ids.get(match.group(1))
        if value is None:
            missing = True
            return ""
        return value

    filled = _PLACEHOLDER.sub(one, template)
    return None if missing else filled


def fill_body(body: Mapping[str, Any] | None, ids: Mapping[str, str]) -> Any:
    """A route's JSON body with its placeholders (ids and the spec's built-ins) filled.

    Raises KeyError for a placeholder without a value: a case is never sent with a hole.
    """
    return render_body(body, ids)


def body_params(body: object) -> set[str]:
    """The placeholders a body uses."""
    if isinstance(body, str):
        return set(_PLACEHOLDER.findall(body))
    if isinstance(body, list):
        return {name for item in body for name in body_params(item)}
    if isinstance(body, dict):
        return {name for value in body.values() for name in body_params(value)}
    return set()


def unknown_id(value: str) -> str | None:
    """A well-formed id of the same kind that names nothing; None when the shape is unknown."""
    match = _PREFIXED_ID.match(value)
    if match is None:
        return None
    return f"{match.group(1)}_{'a' * len(match.group(2))}"


def shape(template: str) -> str:
    """A path template with its parameter names erased: a spec may name them differently
    from the OpenAPI document (``{confirm_appointment_id}`` for ``{appointment_id}``)."""
    return _PLACEHOLDER.sub("{}", template)


def surface_of(path: str) -> str:
    return path.lstrip("/").split("/", 1)[0]


@dataclass
class World:
    """The spec, the seeded world and the deployment's OpenAPI document, with lookups."""

    spec: Spec
    manifest: Manifest
    openapi: Mapping[str, Any]
    oracle: Oracle = field(init=False)
    _readers: dict[tuple[str, str, str], ManifestActor | None] = field(
        init=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        self.oracle = Oracle(self.spec)

    def records(self, obj: ObjectType) -> Iterator[ObjectRecord]:
        """The main (non-spare) instances of an object type."""
        for record in self.manifest.objects:
            if record.type == obj.name and not record.spare:
                yield record

    def instance(
        self, route: Route, record: ObjectRecord, actor: str | None = None
    ) -> ObjectRecord | None:
        """The instance a route is sent to: the spare twin for routes that consume it (the
        one reserved for ``actor`` when the seed reserved one)."""
        if not route.spare:
            return record
        return self.manifest.find(record.type, record.anchor, record.side, spare=True, actor=actor)

    def request_parts(self, route: Route, record: ObjectRecord) -> tuple[str, Any] | None:
        """(path, body) of ``route`` on ``record``; None when an id is missing."""
        path = fill(route.path, record.ids)
        if path is None:
            return None
        try:
            return path, fill_body(route.body, record.ids)
        except KeyError:
            return None

    def targets(self, actor: ManifestActor, obj: ObjectType) -> Iterator[ObjectRecord]:
        """The main instances an actor is probed against (spec ``targets``): its scenario's
        object on both sides, and the object's other scenarios when the spec asks."""
        ref = ActorRef(role=actor.role, state=actor.state, side=actor.side)
        for target in self.spec.targets(ref, obj):
            record = self.manifest.find(obj.name, target.anchor, target.side)
            if record is not None:
                yield record

    def own(self, actor: ManifestActor, obj: ObjectType) -> ObjectRecord | None:
        """The instance the actor holds its relationship to (own scenario, own side)."""
        anchor = obj.anchor_for(self.spec.role(actor.role))
        return self.manifest.find(obj.name, anchor, actor.side)

    def decide(
        self, actor: ManifestActor, obj: ObjectType, route: Route, record: ObjectRecord
    ) -> Decision:
        return self.oracle.decide(
            role=actor.role,
            state=actor.state,
            tenant=tenant_of(self.spec, actor, obj, record),
            obj=obj.name,
            route=route.name,
        )

    def allowed_actor(
        self, obj: ObjectType, route: Route, record: ObjectRecord
    ) -> ManifestActor | None:
        """An actor the oracle allows ``route`` on ``record``, preferring one that holds a
        relationship to it (same tenant) over one allowed from outside (cached)."""
        key = (obj.name, route.name, f"{record.anchor}:{record.side}:{record.spare}")
        if key not in self._readers:
            ranked = sorted(
                self.manifest.actors,
                key=lambda a: tenant_of(self.spec, a, obj, record) != "same",
            )
            self._readers[key] = next(
                (a for a in ranked if self.decide(a, obj, route, record).expect is Expect.ALLOW),
                None,
            )
        return self._readers[key]

    def read_back(self, obj: ObjectType, route: Route, record: ObjectRecord) -> Request | None:
        """The route's read-back request, sent by an actor allowed to read the object."""
        if route.read_back is None:
            return None
        read_obj, read_route = self.spec.route(route.read_back)
        path = fill(read_route.path, record.ids)
        reader = self.allowed_actor(read_obj, read_route, record) if path else None
        if path is None or reader is None:
            return None
        record_fields = tuple(sorted(read_route.refusal_record.items()))
        return Request("GET", path, reader.name, refusal_record=record_fields)

    def cancel(self, route: Route, record: ObjectRecord, actor: str) -> Request | None:
        """For a command: the request that cancels the job it created (``{id}`` left in the
        path for the runner to fill with the job's id)."""
        if route.cancel is None:
            return None
        path = fill(route.cancel, {**record.ids, "id": "{id}"})
        return None if path is None else Request("POST", path, actor)

    def hidden_reference(
        self, route: Route, record: ObjectRecord, actor: str | None
    ) -> Request | None:
        """The route for an object that does not exist: its last id replaced by an unknown one."""
        params = route.params
        if not params or params[-1] not in record.ids:
            return None
        unknown = unknown_id(record.ids[params[-1]])
        if unknown is None:
            return None
        path = fill(route.path, {**record.ids, params[-1]: unknown})
        if path is None:
            return None
        try:
            body = fill_body(route.body, record.ids)
        except KeyError:
            return None
        return Request(route.method, path, actor, body=body, fresh_headers=route.fresh_headers)

    def allowed_fields(self, obj: ObjectType, role: str) -> frozenset[str] | None:
        fields = obj.fields.get(role, obj.fields.get("*"))
        return None if fields is None else frozenset(fields)

    def operations(self) -> Iterator[tuple[str, str, Mapping[str, Any]]]:
        """Every (METHOD, path template, operation) of the OpenAPI document."""
        paths = self.openapi.get("paths", {})
        if not isinstance(paths, Mapping):
            return
        for path, item in paths.items():
            if not isinstance(item, Mapping):
                continue
            for method, operation in item.items():
                if method.upper() in HTTP_METHODS and isinstance(operation, Mapping):
                    yield method.upper(), str(path), operation

    def declared_methods(self, path: str) -> set[str]:
        """The methods the OpenAPI document declares on a path template (any param names)."""
        wanted = shape(path)
        return {m for m, template, _op in self.operations() if shape(template) == wanted}

    def query_params(self, method: str, path: str) -> set[str]:
        """The query parameters the OpenAPI document declares for a route (any param names)."""
        wanted = shape(path)
        found: set[str] = set()
        for m, template, operation in self.operations():
            if m != method or shape(template) != wanted:
                continue
            for param in operation.get("parameters", ()):
                if isinstance(param, Mapping) and param.get("in") == "query":
                    found.add(str(param.get("name")))
        return found

    def spec_route(self, method: str, path: str) -> tuple[ObjectType, Route] | None:
        wanted = shape(path)
        for obj, route in self.spec.routes():
            if route.method == method and shape(route.path) == wanted:
                return obj, route
        return None

    def any_ids(self) -> dict[str, str]:
        """Some id for every parameter name the world knows (for routes outside the spec)."""
        found: dict[str, str] = {}
        for record in self.manifest.objects:
            for name, value in record.ids.items():
                found.setdefault(name, value)
        return found
