"""What every PolicyDecisionPoint implementation must do (run against each one).

A second implementation (OpenFGA, SpiceDB: see docs/authorization.md) adds its factory to
IMPLEMENTATIONS and must pass unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from fleetward.authz.decision import Decision, Reason
from fleetward.authz.entities import RelationSource
from fleetward.authz.pdp import CedarPdp, PolicyDecisionPoint
from fleetward.authz.permissions import Permission
from unit.authz.fakes import ALICE, ALICE_FACTS, FakeSource, context, owned_car, relations, request

Factory = Callable[[RelationSource], PolicyDecisionPoint]

IMPLEMENTATIONS: list[tuple[str, Factory]] = [("cedar", CedarPdp)]
STATUS = Permission.VEHICLE_READ_STATUS


@pytest.fixture(params=IMPLEMENTATIONS, ids=[name for name, _ in IMPLEMENTATIONS])
def make(request: pytest.FixtureRequest) -> Factory:
    factory: Factory = request.param[1]
    return factory


async def test_answers_are_versioned_decisions(make: Factory) -> None:
    pdp = make(FakeSource(relations(ALICE_FACTS, owned_car())))
    decision = await pdp.decide(request(ALICE, STATUS))
    assert isinstance(decision, Decision)
    assert (decision.allowed, decision.policy_version) == (True, pdp.policy_version)


async def test_never_raises_on_a_broken_source(make: Factory) -> None:
    # Fail closed: a store error is a deny with a reason, never an exception.
    pdp = make(FakeSource(ConnectionError("store unreachable")))
    decisions = await pdp.decide_many([request(ALICE, STATUS)] * 3)
    assert [(d.allowed, d.reason) for d in decisions] == [(False, Reason.PDP_ERROR)] * 3


async def test_scope_is_checked_before_anything_is_read(make: Factory) -> None:
    source = FakeSource(relations(ALICE_FACTS, owned_car()))
    decision = await make(source).decide(request(ALICE, STATUS, ctx=context(scopes=frozenset())))
    assert (decision.allowed, decision.reason, source.calls) == (False, Reason.SCOPE, [])


async def test_concurrent_use(make: Factory) -> None:
    # One PDP shared by many tasks answers each of them correctly.
    pdp = make(FakeSource(relations(ALICE_FACTS, owned_car())))
    asks = [request(ALICE, STATUS), request(ALICE, Permission.VEHICLE_UNLOCK)] * 20
    decisions = await asyncio.gather(*(pdp.decide(a) for a in asks))
    assert [d.allowed for d in decisions] == [True, True] * 20
    stale = context(auth_age=context().now - context().now.replace(year=2000))
    assert not (await pdp.decide(request(ALICE, Permission.VEHICLE_UNLOCK, ctx=stale))).allowed
