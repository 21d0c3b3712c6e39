"""The gateway's refusal budget: what a flood of refused handshakes may write, per network."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fleetward.gateway.refusals import UNTRACKED, RefusalBudget, Unrecorded
from fleetward.identity.login.limits import network_of

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
WINDOW = timedelta(minutes=1)


def test_one_ipv6_subscriber_is_one_network() -> None:
    # Threat: a host holding a /64 takes a fresh address per connection to get a fresh
    # budget each time. Its addresses count as one network, as at the login throttle.
    budget = RefusalBudget(per_network=2, window=WINDOW, networks=8)
    decisions = [budget.admit(network_of(f"2001:db8:1:2::{n:x}"), T0)[0] for n in range(1, 6)]
    assert decisions == [True, True, False, False, False]
    assert len(budget) == 1 and budget.unrecorded == 3


def test_the_table_is_bounded_and_more_networks_buy_no_more_writes() -> None:
    # Threat: an attacker with many addresses spreads the flood over networks to get a
    # budget for each, and grows the table without limit. Past the table's size a refusal
    # is counted, not recorded, and the count is handed back once its window is over.
    budget = RefusalBudget(per_network=1, window=WINDOW, networks=3)
    recorded = [budget.admit(f"192.0.2.{n}", T0)[0] for n in range(10)]
    assert recorded == [True] * 3 + [False] * 7
    assert len(budget) == 3 and budget.unrecorded == 7
    record, ended = budget.admit("198.51.100.1", T0 + WINDOW)
    assert record
    assert ended == [Unrecorded(UNTRACKED, T0, 0, 7)]
    # A window that left nothing unrecorded is forgotten without an event.
    assert len(budget) == 1
