"""Two transactions at once on PostgreSQL, in a known order.

A race test holds one transaction open and starts the other as a task. Whether that task can
finish before the first commits depends on the code under test: it runs to the end when
nothing serializes the two, and waits for a row lock when something does. ``settled`` waits
for whichever happens (the task done, or a transaction of the test's database waiting for a
lock), so the test can then commit the first and read what the pair left behind, without
guessing how long either takes.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from fleetward.platform import Platform

_WAITING = text(
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
)


async def settled(platform: Platform, task: asyncio.Task[Any]) -> None:
    """Until ``task`` is done or a transaction of this database waits for a lock."""
    async with platform.engine.connect() as connection:
        while not task.done():
            # A fresh transaction each time: pg_stat_activity is read once per transaction.
            waiting = await connection.scalar(_WAITING)
            await connection.rollback()
            if waiting:
                return
            await asyncio.sleep(0.005)


__all__ = ["settled"]
