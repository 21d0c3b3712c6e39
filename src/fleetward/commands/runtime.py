"""The command service as the app holds it: the dispatcher, the quotas, the settings.

Built by the composition root (``build_app``) once the gateway exists; routes reach it with
:func:`commands_of`. Started and stopped by the app's lifespan.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI

from fleetward.commands.dispatch import Dispatcher
from fleetward.commands.service import CommandConfig, CommandQuotas
from fleetward.commands.signing import CommandSigner


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it. One event loop."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: tuple[str, str]) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


@dataclass(frozen=True, slots=True)
class CommandRuntime:
    dispatcher: Dispatcher
    quotas: CommandQuotas
    config: CommandConfig
    # The key vehicles verify envelopes with (its public half is handed out at enrolment).
    signer: CommandSigner
    # Requests with the same (caller, Idempotency-Key) are judged one after the other in this
    # process, so a burst of retries is charged and judged once (the store's unique key
    # still holds across replicas; see docs/commands.md).
    in_progress: KeyedLocks = field(default_factory=KeyedLocks)


class CommandsNotInstalled(RuntimeError):
    """A command route on an app without the command service: a wiring error."""


def commands_of(app: FastAPI) -> CommandRuntime:
    runtime = getattr(app.state, "commands", None)
    if not isinstance(runtime, CommandRuntime):
        raise CommandsNotInstalled("the command service is not installed")
    return runtime
