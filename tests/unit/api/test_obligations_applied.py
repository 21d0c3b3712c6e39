"""``as_applied``: the route helper's one obligation rule. An allow carrying an obligation
the route does not declare is a deny (fail closed); everything else passes unchanged."""

from __future__ import annotations

import pytest

from fleetward.api.authorize import APPLIES_NONE, as_applied
from fleetward.authz.decision import Decision, Obligation, Reason

VERSION = "v" * 64
MINIMISED = frozenset({Obligation.MINIMISE_FIELDS})
BOTH = frozenset(Obligation)


def _allow(obligations: frozenset[Obligation] = frozenset()) -> Decision:
    return Decision(True, Reason.PARTNER_CONSENT, VERSION, ("partner-consent",), obligations)


@pytest.mark.parametrize(
    ("carried", "applies"),
    [
        (frozenset(), APPLIES_NONE),
        (frozenset(), MINIMISED),
        (MINIMISED, MINIMISED),
        (MINIMISED, BOTH),
        (BOTH, BOTH),
    ],
)
def test_an_allow_whose_obligations_the_route_applies_is_kept(
    carried: frozenset[Obligation], applies: frozenset[Obligation]
) -> None:
    decision = _allow(carried)
    assert as_applied(decision, applies) is decision


@pytest.mark.parametrize(
    ("carried", "applies"),
    [
        (MINIMISED, APPLIES_NONE),  # the default: a route applies none
        (frozenset({Obligation.PSEUDONYMISE}), MINIMISED),
        (BOTH, MINIMISED),  # one of them not applied is enough
    ],
)
def test_an_allow_carrying_an_obligation_the_route_does_not_apply_is_a_deny(
    carried: frozenset[Obligation], applies: frozenset[Obligation]
) -> None:
    applied = as_applied(_allow(carried), applies)
    assert not applied.allowed
    assert applied.reason is Reason.OBLIGATION_NOT_APPLIED
    assert (applied.policy_version, applied.policy_ids) == (VERSION, ("partner-consent",))
    assert applied.obligations == frozenset()


def test_a_deny_is_kept_whatever_the_route_applies() -> None:
    denied = Decision.deny(Reason.NO_RELATIONSHIP, VERSION)
    assert as_applied(denied, APPLIES_NONE) is denied
    assert as_applied(denied, BOTH) is denied
