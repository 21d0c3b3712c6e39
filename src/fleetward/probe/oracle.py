"""The oracle: what must happen, from the spec's rules alone.

It never imports the platform's authorization code nor reads its policies: a probe that asks
the code under test for the answer proves nothing (``tests/unit/probe/test_independence.py``
walks the imports to keep it so).

Semantics:

* a route on a surface the role has no token for is answered for the actor's own token,
  which is for another surface: it must be refused as unauthenticated (401);
* otherwise the rules are read in order and the first whose every dimension matches decides
  (``"*"`` matches anything); when none matches, the answer is deny (default deny);
* a deny takes the shape the route gives it: a filtered list hides the object (2xx, no
  canary), a function route answers 403 (``Expect.DENY``), any other object route answers the
  same 404 as an unknown object (``Expect.DENY_HIDDEN``). A rule may state the shape itself
  (``hidden``, ``forbidden``, ``filtered``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleetward.probe.model import Expect
from fleetward.probe.spec.models import ANY, ExpectWord, Route, Rule, Spec, Tenant

DEFAULT_DENY = "no rule allows it (default deny)"
OTHER_SURFACE = "a token for another surface must not be accepted"


@dataclass(frozen=True, slots=True)
class Decision:
    expect: Expect
    why: str
    rule: int | None  # 1-based index of the deciding rule; None: default deny or surface


def _matches(names: Sequence[str], value: str) -> bool:
    return ANY in names or value in names


def _rule_matches(
    rule: Rule, *, role: str, state: str, tenant: Tenant, obj: str, route: Route
) -> bool:
    return (
        _matches(rule.roles, role)
        and _matches(rule.states, state)
        and _matches(rule.tenants, tenant)
        and _matches(rule.objects, obj)
        and _matches(rule.operations, route.operation)
        and _matches(rule.routes, route.name)
    )


def shape(word: ExpectWord, route: Route) -> Expect:
    """The outcome a rule's word means on ``route``."""
    if word == "allow":
        return Expect.ALLOW
    if word == "hidden":
        return Expect.DENY_HIDDEN
    if word == "forbidden":
        return Expect.DENY
    if word == "filtered":
        return Expect.FILTERED
    if route.filtered:
        return Expect.FILTERED
    if route.function:
        return Expect.DENY
    return Expect.DENY_HIDDEN


class Oracle:
    """Decides cases for one spec. Pure and thread-safe: it reads the frozen spec only."""

    def __init__(self, spec: Spec) -> None:
        self._spec = spec

    @property
    def spec(self) -> Spec:
        return self._spec

    def decide(self, *, role: str, state: str, tenant: Tenant, obj: str, route: str) -> Decision:
        """The expected outcome for an actor (``role`` in ``state``, ``tenant`` relative to
        the object) sending ``route`` on an instance of ``obj``.

        Unknown names raise ``KeyError``: a generator asking about something the spec does
        not define is a bug, never a silent deny.
        """
        the_role = self._spec.role(role)
        if state not in the_role.states:
            raise KeyError(f"role {role!r} has no state {state!r}")
        owner, the_route = self._spec.route(route)
        if owner.name != obj:
            raise KeyError(f"route {route!r} belongs to {owner.name!r}, not {obj!r}")
        if the_route.surface not in the_role.surfaces:
            if self._spec.probe.cross_surface:
                return Decision(Expect.UNAUTHENTICATED, OTHER_SURFACE, None)
            raise KeyError(f"role {role!r} has no token for surface {the_route.surface!r}")
        for index, rule in enumerate(self._spec.rules, start=1):
            if _rule_matches(rule, role=role, state=state, tenant=tenant, obj=obj, route=the_route):
                return Decision(shape(rule.expect, the_route), rule.why, index)
        return Decision(shape("deny", the_route), DEFAULT_DENY, None)
