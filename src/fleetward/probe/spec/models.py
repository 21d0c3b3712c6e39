"""The probe spec: what the deployment must do, stated independently of its code.

A spec names the roles (with the relationship states each is probed in), the object types
(with their routes and the operation each route performs), and the rules that say what is
expected of every combination. Rules are read top to bottom; the first that matches decides;
nothing matches: deny. A denial on an object route must look like "not found" (404); on a
route marked ``function = true`` it is a 403; on a list marked ``filtered = true`` it is a 2xx
that does not carry the object.

Actors are not listed: they are every role x state x tenant side (``same``: the actor lives
in the tenant of the objects it is probed against; ``other``: it lives in another tenant and
holds the same relationship to that tenant's twin objects). Their names are
``<role>:<state>:<side>`` (see ``actor_name``); the world manifest carries their credentials.

Every model forbids unknown fields: a typo in a spec is an error, never a silently ignored
rule.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The two sides of every world: objects are seeded on both, each with its own actors.
Side = Literal["home", "away"]
SIDES: tuple[Side, Side] = ("home", "away")
# How an actor's tenant relates to the object's tenant, as rules name it.
Tenant = Literal["same", "other"]
TENANTS: tuple[Tenant, Tenant] = ("same", "other")
Operation = Literal["list", "read", "write", "command"]
OPERATIONS: tuple[Operation, ...] = ("list", "read", "write", "command")
# "deny" lets the route decide how a refusal looks (hidden 404, function 403, or a filtered
# list); "hidden", "forbidden" and "filtered" state it explicitly.
ExpectWord = Literal["allow", "deny", "hidden", "forbidden", "filtered"]
Method = Literal["GET", "POST", "PUT", "PATCH", "DELETE"]
ActorKind = Literal["user", "partner"]
TenantPattern = Literal["same", "other", "*"]
OperationPattern = Literal["list", "read", "write", "command", "*"]

ANY = "*"
# Sent with a fresh unique value on every request of a "command" route (a retry of the same
# key would answer the first job instead of asking again).
IDEMPOTENCY_HEADER = "Idempotency-Key"
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_ROUTE_NAME = re.compile(r"^[a-z][a-z0-9_:.-]*$")
_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


def actor_name(role: str, state: str, side: Side) -> str:
    """The name of the actor holding ``role`` in ``state`` on ``side`` of the world."""
    return f"{role}:{state}:{side}"


def path_params(path: str) -> tuple[str, ...]:
    """The ``{name}`` parameters of a path template, in order."""
    return tuple(_PARAM.findall(path))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpecInfo(_Strict):
    """``[probe]``: the spec's identity and the defaults the command line uses."""

    name: str = Field(min_length=1, description="shown in reports")
    format: Literal[1] = Field(default=1, description="spec format version")
    description: str = ""
    # Where `fleetward probe` looks for the world manifest when --world is not given.
    world: str = "var/probe-world.json"
    # Include actor x route pairs whose route is on a surface the actor has no token for
    # (the actor's own token is sent: expect unauthenticated).
    cross_surface: bool = True
    # Probe each actor against the object's instance in every scenario it exists in, not
    # only the role's own (an owner against a fleet's vehicle: another tenant).
    every_anchor: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the spec needs a name")
        return value


class Role(_Strict):
    """``[[roles]]``: a kind of principal and the relationship states it is probed in."""

    name: str = Field(description="lowercase identifier, e.g. driver")
    description: str = ""
    kind: ActorKind = Field(default="user", description="user: signs in; partner: a client")
    # Surfaces the role's actors obtain tokens for; the first is the one used by default.
    surfaces: list[str] = Field(min_length=1)
    # Relationship states probed for this role, e.g. ["active", "expired", "revoked"].
    states: list[str] = Field(min_length=1)
    # The scenario whose objects this role's relationships point at (e.g. "consumer").
    anchor: str

    @field_validator("name", "anchor")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a lowercase identifier ([a-z][a-z0-9_-]*)")
        return value

    @field_validator("states", "surfaces")
    @classmethod
    def _unique_identifiers(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _NAME.match(value):
                raise ValueError(f"{value!r} is not a lowercase identifier")
        if len(set(values)) != len(values):
            raise ValueError("duplicate entries")
        return values


class Route(_Strict):
    """``[[objects.routes]]``: one HTTP route that performs one operation on the object."""

    name: str = Field(description="the catalog route name, e.g. mobile:vehicles:status")
    surface: str
    method: Method
    path: str = Field(description="path template; {params} come from the world manifest")
    operation: Operation
    # True: a refusal is a 403 (a function the caller may never use), not a hidden 404.
    function: bool = False
    # True: a list filtered to what the caller may see; a refusal is a 2xx without the
    # object (none of its canaries), not an error.
    filtered: bool = False
    # The JSON body for writes; string values may hold {param} placeholders.
    body: dict[str, object] | None = None
    # Fields a client must never set: sent one by one, each must be refused (422).
    server_owned: list[str] = Field(default_factory=list)
    # A route name (a GET) to read before and after a write to prove no side effect.
    read_back: str | None = None
    # True: an allowed call consumes its target (a revoke, a cancel, a close); it is sent to
    # the spare instance the seed made for it (``ObjectRecord.spare``), never the main one.
    spare: bool = False
    # Operation "command" only: the path (template; ``{id}`` is the accepted job's id, the
    # other params come from the manifest) that cancels the job an allowed command created.
    # The same actor POSTs it as soon as the case is judged, so that the probe's own job
    # never stays in flight (a vehicle takes one security-relevant command at a time).
    cancel: str | None = None
    # A list that records refusals (a vehicle's command jobs: a command refused past the
    # object check is stored as a rejected job): the fields such a record holds. Read back
    # around a refused write, the list may gain items holding these values; nothing else in
    # it may change.
    refusal_record: dict[str, str | bool | int] = Field(default_factory=dict)
    # Operation "command" only: the command needs a step-up (a multi-factor sign-in at most
    # ``step_up_max_age`` seconds old, RFC 9470). An allowed case is sent with a token from a
    # sign-in that recent (the runner signs the actor in again when its token is older), and
    # every allowed case is also sent with a stale sign-in's token: that must be refused with
    # the step-up challenge (401 ``insufficient_user_authentication``), side-effect free.
    step_up: bool = False

    @field_validator("name", "read_back")
    @classmethod
    def _route_name(cls, value: str | None) -> str | None:
        if value is not None and not _ROUTE_NAME.match(value):
            raise ValueError(f"{value!r} is not a route name ([a-z][a-z0-9_:.-]*)")
        return value

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        return _path_template(value)

    @field_validator("cancel")
    @classmethod
    def _cancel(cls, value: str | None) -> str | None:
        if value is not None:
            _path_template(value)
            if "id" not in path_params(value):
                raise ValueError(f"{value!r} must name the accepted job as {{id}}")
        return value

    @model_validator(mode="after")
    def _command_fields(self) -> Route:
        if self.cancel is not None and self.operation != "command":
            raise ValueError("cancel: only a command creates a job to cancel")
        if self.step_up and self.operation != "command":
            raise ValueError("step_up: only a command is probed with and without a step-up")
        if self.refusal_record and (self.method != "GET" or self.operation != "list"):
            raise ValueError("refusal_record: only a list (a GET) records refusals")
        return self

    @property
    def params(self) -> tuple[str, ...]:
        return path_params(self.path)

    @property
    def fresh_headers(self) -> tuple[str, ...]:
        """Headers that take a new unique value every time the request is sent."""
        return (IDEMPOTENCY_HEADER,) if self.operation == "command" else ()


class ObjectType(_Strict):
    """``[[objects]]``: a kind of object the deployment serves, and its routes."""

    name: str
    description: str = ""
    # Scenarios the seed creates this object in; the first is the default target for roles
    # anchored elsewhere.
    anchors: list[str] = Field(min_length=1)
    parent: str | None = None
    # Response fields that carry the canary (the seed writes the canary there).
    canary_fields: list[str] = Field(default_factory=list)
    # False: the object belongs to no tenant (platform-wide, e.g. OTA campaigns); each actor
    # is probed against the instance on its own side only, as the "same" tenant.
    tenanted: bool = True
    # Allowed response fields per role name ("*" for every role) for allowed reads.
    fields: dict[str, list[str]] = Field(default_factory=dict)
    routes: list[Route] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"{value!r} is not a lowercase identifier ([a-z][a-z0-9_-]*)")
        return value

    def anchor_for(self, role: Role) -> str:
        """The scenario whose instance of this object a ``role`` actor is probed against."""
        return role.anchor if role.anchor in self.anchors else self.anchors[0]


class Rule(_Strict):
    """``[[rules]]``: an expected outcome. ``"*"`` (the default) matches anything."""

    roles: list[str] = Field(default_factory=lambda: [ANY], min_length=1)
    states: list[str] = Field(default_factory=lambda: [ANY], min_length=1)
    tenants: list[TenantPattern] = Field(default_factory=lambda: _any_tenant(), min_length=1)
    objects: list[str] = Field(default_factory=lambda: [ANY], min_length=1)
    operations: list[OperationPattern] = Field(
        default_factory=lambda: _any_operation(), min_length=1
    )
    # Route names; narrows a rule to some routes of the objects.
    routes: list[str] = Field(default_factory=lambda: [ANY], min_length=1)
    expect: ExpectWord
    why: str = Field(min_length=1, description="the policy line this rule states")


class Inventory(_Strict):
    """``[inventory]``: paths to try that no catalog route should answer (shadow routes)."""

    probe_paths: list[str] = Field(default_factory=list)
    # Deprecated API versions to compare with the current one (zombie routes), as prefixes
    # such as "/mobile/v0" mapped to the current "/mobile/v1".
    old_versions: dict[str, str] = Field(default_factory=dict)


class Spec(_Strict):
    """A whole spec. Cross-references are checked: every name a rule uses must exist."""

    probe: SpecInfo
    surfaces: list[str] = Field(min_length=1)
    roles: list[Role] = Field(min_length=1)
    objects: list[ObjectType] = Field(min_length=1)
    rules: list[Rule] = Field(default_factory=list)
    inventory: Inventory = Field(default_factory=Inventory)

    @model_validator(mode="after")
    def _references(self) -> Spec:
        _check_references(self)
        return self

    # -- lookups -----------------------------------------------------------------------

    def role(self, name: str) -> Role:
        for role in self.roles:
            if role.name == name:
                return role
        raise KeyError(name)

    def object(self, name: str) -> ObjectType:
        for obj in self.objects:
            if obj.name == name:
                return obj
        raise KeyError(name)

    def routes(self) -> Iterator[tuple[ObjectType, Route]]:
        for obj in self.objects:
            for route in obj.routes:
                yield obj, route

    def route(self, name: str) -> tuple[ObjectType, Route]:
        for obj, route in self.routes():
            if route.name == name:
                return obj, route
        raise KeyError(name)

    def actors(self) -> list[ActorRef]:
        """Every actor the world must hold: role x state x side, in spec order."""
        return [
            ActorRef(role=role.name, state=state, side=side)
            for role in self.roles
            for state in role.states
            for side in SIDES
        ]

    def targets(self, actor: ActorRef, obj: ObjectType) -> list[Target]:
        """The object instances an actor is probed against, with the tenant relation each
        stands in: the role's own scenario on both sides (``same`` on the actor's side), and
        with ``every_anchor`` the object's other scenarios on both sides (always ``other``:
        the actor holds no relationship there). An object that is not ``tenanted`` is probed
        on the actor's own side only."""
        role = self.role(actor.role)
        own = obj.anchor_for(role)
        anchors = [own]
        if self.probe.every_anchor:
            anchors += [a for a in obj.anchors if a != own]
        sides: tuple[Side, ...] = SIDES if obj.tenanted else (actor.side,)
        return [
            Target(
                anchor=anchor,
                side=side,
                tenant="same" if anchor == own and side == actor.side else "other",
            )
            for anchor in anchors
            for side in sides
        ]

    def anchors(self) -> set[str]:
        return {anchor for obj in self.objects for anchor in obj.anchors} | {
            role.anchor for role in self.roles
        }


@dataclass(frozen=True, slots=True)
class ActorRef:
    role: str
    state: str
    side: Side

    @property
    def name(self) -> str:
        return actor_name(self.role, self.state, self.side)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a case's object instance is: ``manifest.find(obj, anchor, side)``."""

    anchor: str
    side: Side
    tenant: Tenant


def _path_template(value: str) -> str:
    if not value.startswith("/") or "?" in value or "#" in value:
        raise ValueError(f"{value!r} must be an absolute path template without a query")
    if value.count("{") != value.count("}") or len(path_params(value)) != value.count("{"):
        raise ValueError(f"{value!r} has a malformed {{param}}")
    return value


def _any_tenant() -> list[TenantPattern]:
    return ["*"]


def _any_operation() -> list[OperationPattern]:
    return ["*"]


def _check_references(spec: Spec) -> None:
    _unique("surface", spec.surfaces)
    _unique("role", [r.name for r in spec.roles])
    _unique("object", [o.name for o in spec.objects])
    route_names = [route.name for _obj, route in spec.routes()]
    _unique("route", route_names)
    surfaces = set(spec.surfaces)
    objects = {o.name for o in spec.objects}
    routes = set(route_names)
    roles = {r.name: r for r in spec.roles}
    for role in spec.roles:
        for surface in role.surfaces:
            if surface not in surfaces:
                raise ValueError(f"role {role.name!r}: unknown surface {surface!r}")
    for obj in spec.objects:
        if obj.parent is not None and obj.parent not in objects:
            raise ValueError(f"object {obj.name!r}: unknown parent {obj.parent!r}")
        for role_name in obj.fields:
            if role_name != ANY and role_name not in roles:
                raise ValueError(f"object {obj.name!r}: fields for unknown role {role_name!r}")
        for route in obj.routes:
            if route.surface not in surfaces:
                raise ValueError(f"route {route.name!r}: unknown surface {route.surface!r}")
            if route.read_back is not None and route.read_back not in routes:
                raise ValueError(f"route {route.name!r}: unknown read_back {route.read_back!r}")
    all_states = {state for role in spec.roles for state in role.states}
    for index, rule in enumerate(spec.rules, start=1):
        where = f"rule {index} ({rule.why})"
        _known(where, "role", rule.roles, set(roles))
        _known(where, "object", rule.objects, objects)
        _known(where, "route", rule.routes, routes)
        named_roles = [roles[n] for n in rule.roles if n != ANY]
        states = {s for r in named_roles for s in r.states} if named_roles else all_states
        _known(where, "state", rule.states, states)


def _unique(what: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise ValueError(f"duplicate {what} {name!r}")
        seen.add(name)


def _known(where: str, what: str, names: list[str], known: set[str]) -> None:
    if ANY in names and len(names) > 1:
        raise ValueError(f"{where}: {what}s mix '*' with names")
    for name in names:
        if name != ANY and name not in known:
            choices = ", ".join(sorted(known))
            raise ValueError(f"{where}: unknown {what} {name!r} (known: {choices})")
