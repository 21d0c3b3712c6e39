"""The gateway's per-device budget of session openings (gateway/churn.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleetward.gateway.churn import HandshakeRate

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def test_a_burst_then_one_per_refill() -> None:
    rate = HandshakeRate(burst=3, refill=MINUTE, devices=8)
    assert [rate.take("dev_a", T0).allowed for _ in range(4)] == [True, True, True, False]
    # Refilled gradually: half a refill is not a credit yet, a whole one is.
    assert not rate.take("dev_a", T0 + MINUTE / 2).allowed
    assert rate.take("dev_a", T0 + MINUTE).allowed
    assert not rate.take("dev_a", T0 + MINUTE).allowed
    # Never more than the burst, however long the device was away.
    later = T0 + 100 * MINUTE
    assert [rate.take("dev_a", later).allowed for _ in range(4)] == [True, True, True, False]
    assert rate.refused == 4


def test_the_first_refusal_after_an_opening_is_the_breach_and_says_when_to_retry() -> None:
    rate = HandshakeRate(burst=1, refill=MINUTE, devices=8)
    assert rate.take("dev_a", T0).allowed
    first = rate.take("dev_a", T0 + timedelta(seconds=15))
    assert (first.allowed, first.first, first.retry_after) == (False, True, timedelta(seconds=45))
    again = rate.take("dev_a", T0 + timedelta(seconds=20.5))
    assert (again.first, again.retry_after) == (False, timedelta(seconds=40))
    assert rate.take("dev_a", T0 + MINUTE).allowed
    assert rate.take("dev_a", T0 + MINUTE).first  # a new breach after an opening


def test_devices_are_counted_apart_and_a_given_back_opening_is_not_spent() -> None:
    rate = HandshakeRate(burst=2, refill=MINUTE, devices=8)
    assert rate.take("dev_a", T0).allowed and rate.take("dev_a", T0).allowed
    assert not rate.take("dev_a", T0).allowed
    assert rate.take("dev_b", T0).allowed
    rate.give_back("dev_b")
    rate.give_back("dev_b")  # never above the burst
    assert [rate.take("dev_b", T0).allowed for _ in range(3)] == [True, True, False]


def test_the_table_is_bounded_and_forgets_the_least_recently_seen() -> None:
    rate = HandshakeRate(burst=1, refill=MINUTE, devices=2)
    assert rate.take("dev_loop", T0).allowed
    assert rate.take("dev_a", T0).allowed
    assert not rate.take("dev_loop", T0).allowed  # seen last: kept
    assert rate.take("dev_b", T0).allowed  # dev_a forgotten
    assert len(rate) == 2
    assert not rate.take("dev_loop", T0).allowed
    assert rate.take("dev_a", T0).allowed  # back with a full budget, as an idle device


def test_a_clock_that_goes_back_refills_nothing() -> None:
    rate = HandshakeRate(burst=1, refill=MINUTE, devices=2)
    assert rate.take("dev_a", T0).allowed
    assert not rate.take("dev_a", T0 - MINUTE).allowed
    assert not rate.take("dev_a", T0 + MINUTE / 2).allowed


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        HandshakeRate(burst=0, refill=MINUTE, devices=1)
    with pytest.raises(ValueError, match="positive"):
        HandshakeRate(burst=1, refill=timedelta(0), devices=1)
