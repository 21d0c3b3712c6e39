"""A transaction that lost a race runs again from the top; nothing else is retried."""

from __future__ import annotations

import pytest

from fleetward.core.digest import framed_sha256
from fleetward.store.races import judged_again


class Lost(Exception):
    pass


async def test_a_lost_race_is_run_again_and_the_last_one_propagates() -> None:
    calls: list[int] = []

    async def attempt() -> int:
        calls.append(1)
        if len(calls) < 3:
            raise Lost
        return len(calls)

    assert await judged_again(attempt, Lost, tries=3) == 3
    calls.clear()
    with pytest.raises(Lost):
        await judged_again(attempt, Lost)  # two tries: both lost
    assert len(calls) == 2


async def test_anything_but_a_race_is_not_retried() -> None:
    calls: list[int] = []

    async def attempt() -> None:
        calls.append(1)
        raise ValueError("a bug, not a race")

    with pytest.raises(ValueError, match="a bug"):
        await judged_again(attempt, Lost, tries=5)
    assert calls == [1]


def test_framing_keeps_parts_apart() -> None:
    assert framed_sha256(["ab", "c"]) != framed_sha256(["a", "bc"])
    assert framed_sha256(["ab", "c"]) == framed_sha256(iter(["ab", "c"]))
