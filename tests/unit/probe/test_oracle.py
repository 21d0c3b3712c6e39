"""The oracle: first match wins, default deny, and a deny takes the route's shape."""

from __future__ import annotations

import pytest

from fleetward.probe.model import Expect
from fleetward.probe.oracle import DEFAULT_DENY, OTHER_SURFACE, Oracle
from fleetward.probe.spec.load import loads
from fleetward.probe.spec.models import ActorRef, Spec, Target

SPEC = """
surfaces = ["mobile", "admin"]

[probe]
name = "oracle"

[[roles]]
name = "owner"
surfaces = ["mobile"]
states = ["active", "former"]
anchor = "consumer"

[[roles]]
name = "admin"
surfaces = ["admin"]
states = ["active"]
anchor = "platform"

[[objects]]
name = "vehicle"
anchors = ["consumer", "fleet"]
routes = [
  { name = "v:read", surface = "mobile", method = "GET", path = "/v/{id}", operation = "read" },
  { name = "v:write", surface = "mobile", method = "POST", path = "/v/{id}", operation = "write" },
  { name = "v:export", surface = "mobile", method = "GET", path = "/v/{id}/x", operation = "read" },
  { name = "v:list", surface = "mobile", method = "GET", path = "/v", operation = "list", X },
]

[[objects]]
name = "tenant"
anchors = ["platform"]
tenanted = false
routes = [
  { name = "t:list", surface = "admin", method = "GET", path = "/t", operation = "list", Y },
]

[[rules]]
roles = ["owner"]
states = ["active"]
tenants = ["same"]
routes = ["v:export"]
expect = "forbidden"
why = "exports are a function owners never use"

[[rules]]
roles = ["owner"]
states = ["active"]
tenants = ["same"]
operations = ["read", "list"]
expect = "allow"
why = "owners read their vehicle"

[[rules]]
roles = ["owner"]
operations = ["read"]
expect = "allow"
why = "never reached for the active owner of the same tenant: the rule above matched first"

[[rules]]
roles = ["admin"]
objects = ["tenant"]
expect = "allow"
why = "admins list tenants"
""".replace("X }", "filtered = true }").replace("Y }", "function = true }")  # short lines


@pytest.fixture(scope="module")
def spec() -> Spec:
    return loads(SPEC)


def _decide(
    spec: Spec, role: str, state: str, tenant: str, route: str, obj: str = "vehicle"
) -> tuple[Expect, str, int | None]:
    decision = Oracle(spec).decide(
        role=role,
        state=state,
        tenant=tenant,  # type: ignore[arg-type]
        obj=obj,
        route=route,
    )
    return decision.expect, decision.why, decision.rule


@pytest.mark.parametrize(
    ("role", "state", "tenant", "route", "expect", "rule"),
    [
        # first match: rule 1 (forbidden) before rule 2 (allow) for the export
        ("owner", "active", "same", "v:export", Expect.DENY, 1),
        ("owner", "active", "same", "v:read", Expect.ALLOW, 2),
        ("owner", "active", "same", "v:list", Expect.ALLOW, 2),
        # rule 3 is reached only by what rules 1 and 2 left
        ("owner", "former", "same", "v:read", Expect.ALLOW, 3),
        ("owner", "active", "other", "v:read", Expect.ALLOW, 3),
        # default deny, in the route's shape: hidden 404, filtered list
        ("owner", "active", "same", "v:write", Expect.DENY_HIDDEN, None),
        ("owner", "former", "same", "v:list", Expect.FILTERED, None),
        ("owner", "active", "other", "v:list", Expect.FILTERED, None),
        ("owner", "former", "other", "v:export", Expect.ALLOW, 3),
    ],
)
def test_rules_are_read_in_order_and_the_first_match_decides(
    spec: Spec, role: str, state: str, tenant: str, route: str, expect: Expect, rule: int | None
) -> None:
    found, why, index = _decide(spec, role, state, tenant, route)
    assert (found, index) == (expect, rule)
    if rule is None:
        assert why == DEFAULT_DENY


def test_a_function_route_denies_with_403(spec: Spec) -> None:
    # The admin rule names the tenant object; nothing allows the owner: a function is a 403
    # only for a role with a token on its surface, and the owner has none (see below).
    assert _decide(spec, "admin", "active", "same", "t:list", obj="tenant")[0] is Expect.ALLOW
    broken = loads(
        SPEC.replace(
            'objects = ["tenant"]\nexpect = "allow"', 'objects = ["tenant"]\nexpect = "deny"'
        )
    )
    assert _decide(broken, "admin", "active", "same", "t:list", obj="tenant")[0] is Expect.DENY


def test_a_route_on_another_surface_is_unauthenticated(spec: Spec) -> None:
    expect, why, rule = _decide(spec, "owner", "active", "same", "t:list", obj="tenant")
    assert (expect, why, rule) == (Expect.UNAUTHENTICATED, OTHER_SURFACE, None)
    assert _decide(spec, "admin", "active", "same", "v:read")[0] is Expect.UNAUTHENTICATED


def test_without_cross_surface_cases_such_a_question_is_a_bug(spec: Spec) -> None:
    narrow = loads(SPEC.replace('name = "oracle"', 'name = "oracle"\ncross_surface = false'))
    with pytest.raises(KeyError):
        _decide(narrow, "owner", "active", "same", "t:list", obj="tenant")


@pytest.mark.parametrize(
    ("role", "state", "route", "obj"),
    [
        ("nobody", "active", "v:read", "vehicle"),  # unknown role
        ("owner", "retired", "v:read", "vehicle"),  # a state the role does not have
        ("owner", "active", "v:nothing", "vehicle"),  # unknown route
        ("owner", "active", "v:read", "tenant"),  # the route belongs to another object
    ],
)
def test_unknown_names_are_errors_not_silent_denials(
    spec: Spec, role: str, state: str, route: str, obj: str
) -> None:
    with pytest.raises(KeyError):
        _decide(spec, role, state, "same", route, obj=obj)


@pytest.mark.parametrize(
    ("word", "expect"),
    [
        ("hidden", Expect.DENY_HIDDEN),
        ("forbidden", Expect.DENY),
        ("filtered", Expect.FILTERED),
        ("deny", Expect.DENY_HIDDEN),
    ],
)
def test_a_rule_may_state_the_shape_of_its_denial(word: str, expect: Expect) -> None:
    spec = loads(SPEC.replace('expect = "forbidden"', f'expect = "{word}"'))
    assert _decide(spec, "owner", "active", "same", "v:export")[0] is expect


def test_an_empty_rule_set_denies_everything(spec: Spec) -> None:
    bare = spec.model_copy(update={"rules": []})
    for _obj, route in bare.routes():
        if route.surface == "mobile":
            expect, why, rule = _decide(bare, "owner", "active", "same", route.name)
            assert expect is not Expect.ALLOW and rule is None and why == DEFAULT_DENY


def test_targets_cover_both_sides_and_every_scenario(spec: Spec) -> None:
    owner = ActorRef("owner", "active", "home")
    assert spec.targets(owner, spec.object("vehicle")) == [
        Target("consumer", "home", "same"),
        Target("consumer", "away", "other"),
        Target("fleet", "home", "other"),
        Target("fleet", "away", "other"),
    ]
    # A platform-wide object is probed on the actor's own side only.
    admin = ActorRef("admin", "active", "away")
    assert spec.targets(admin, spec.object("tenant")) == [Target("platform", "away", "same")]


def test_targets_stay_in_the_roles_scenario_without_every_anchor(spec: Spec) -> None:
    narrow = loads(SPEC.replace('name = "oracle"', 'name = "oracle"\nevery_anchor = false'))
    owner = ActorRef("owner", "active", "away")
    assert narrow.targets(owner, narrow.object("vehicle")) == [
        Target("consumer", "home", "other"),
        Target("consumer", "away", "same"),
    ]
