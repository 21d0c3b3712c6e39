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

import pytest
from sqlalchemy import text

from fleetward.platform import Platform
from fleetward.store import sqlite_driver

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


class TurnWatch:
    """Sees a second writer wait for its turn, on either store: on PostgreSQL a transaction
    waiting for a lock (``settled``), on SQLite a writer waiting at this process's write gate
    (``store.sqlite_driver``). Set up before the writers start."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._gate_waited = asyncio.Event()
        enter = sqlite_driver._enter

        async def noticed_enter(gate: asyncio.Lock) -> None:
            if gate.locked():  # SQLite: a writer waits for this process's write lock
                self._gate_waited.set()
            await enter(gate)

        monkeypatch.setattr(sqlite_driver, "_enter", noticed_enter)

    async def waiting(self, platform: Platform, backend: str, task: asyncio.Task[Any]) -> None:
        """Until ``task`` is done or waits for its turn behind another writer."""
        if backend == "postgresql":
            await settled(platform, task)
            return
        waited = asyncio.create_task(self._gate_waited.wait())
        await asyncio.wait({task, waited}, return_when=asyncio.FIRST_COMPLETED)
        waited.cancel()


__all__ = ["TurnWatch", "settled"]
