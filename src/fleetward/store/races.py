"""A transaction that lost a race is run once more from the top.

Two transactions read the same row and both write: the later one's write fails (a unique
index, an ORM version column, a conditional UPDATE that changed no row) and nothing of it is
written. Run again, it reads what the winner committed and is judged against that (a replay,
a refusal, the decision made on the new state). Only the named exceptions are races; the
last attempt's race propagates to the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def judged_again(
    attempt: Callable[[], Awaitable[T]], *races: type[Exception], tries: int = 2
) -> T:
    """``attempt()``, and again (up to ``tries`` times in all) while it loses one of
    ``races``. Each attempt must be a whole transaction of its own."""
    if tries < 1:
        raise ValueError("tries must be at least 1")
    for _ in range(tries - 1):
        try:
            return await attempt()
        except races:
            continue
    return await attempt()


__all__ = ["judged_again"]
