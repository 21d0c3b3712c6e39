"""The request context's times, as the policy reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fleetward.authz.relations.cedar import seconds_since

NOW = datetime(2026, 12, 7, 9, 0, 0, 250_000, tzinfo=UTC)


@pytest.mark.parametrize(
    ("age", "seconds"),
    [
        (timedelta(0), 0),
        (timedelta(seconds=300), 300),
        (timedelta(seconds=300, microseconds=1), 301),
        (timedelta(seconds=299, microseconds=999_999), 300),
        (timedelta(microseconds=-300_000), 0),  # a sign-in a fraction of a second ahead
        (timedelta(seconds=-59, microseconds=-500_000), -59),
        (timedelta(seconds=-60), -60),
        (timedelta(days=3, seconds=1), 3 * 86_400 + 1),
    ],
)
def test_an_age_is_rounded_up_never_down(age: timedelta, seconds: int) -> None:
    assert seconds_since(NOW - age, NOW) == seconds
