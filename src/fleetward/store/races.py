"""A transaction that lost a race is run once more from the top.

Two transactions read the same row and both write: the later one's write fails (a unique
index, an ORM version column, a conditional UPDATE that changed no row) and nothing of it is
written. Run again, it reads what the winner committed and is judged against that (a replay,
a refusal, the decision made on the new state). Only the named exceptions are races; the
last attempt's race propagates to the caller.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, CursorResult, update
from sqlalchemy.ext.asyncio import AsyncSession

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


async def written_if(
    session: AsyncSession, row: Any, still: ColumnElement[bool], **values: Any
) -> bool:
    """Write ``values`` to ``row`` only while ``still`` holds in the store: one Core UPDATE on
    the row's id and the state that was judged (docs/decisions.md, "A state is written only
    while it is still the state that was judged"). The row is read back either way; True
    only for the one request whose UPDATE matched (the others wrote nothing)."""
    model = type(row)
    result = await session.execute(
        update(model)
        .where(model.id == row.id, still)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    await session.refresh(row)
    return isinstance(result, CursorResult) and result.rowcount == 1
