"""What every Fleetward store that keeps shared state in Redis does the same way.

A client made for a hot path answers within a bound or not at all (:func:`connect`: the
socket's timeouts), and a store built on it (:class:`ScriptStore`) keeps its keys under a
prefix, runs its Lua script, bounds each call by its own timeout, refuses every call once
closed (redis-py would quietly open a new connection) and turns every failure into the one
exception its callers handle (``unavailable``), named by the error's type only: never the
URL, which may hold a password.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from datetime import timedelta
from typing import Final

from redis.asyncio import Redis
from redis.exceptions import RedisError

DEFAULT_TIMEOUT: Final = timedelta(milliseconds=250)


def connect(url: str, timeout: timedelta = DEFAULT_TIMEOUT) -> Redis:
    """A client whose connects and reads give up after ``timeout``."""
    seconds = timeout.total_seconds()
    return Redis.from_url(url, socket_timeout=seconds, socket_connect_timeout=seconds)


class ScriptStore:
    """A prefix, a script and bounded calls on ``redis`` (owned: closed by :meth:`close`).
    Subclasses name what they are (``what``, for the messages) and the exception their
    callers handle (``unavailable``)."""

    what = "redis store"
    unavailable: type[Exception] = ConnectionError

    def __init__(self, redis: Redis, script: str, *, prefix: str, timeout: timedelta) -> None:
        if not prefix:
            raise ValueError(f"a key prefix is required ({self.what} keys share the database)")
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout.total_seconds()
        self._script = redis.register_script(script)
        self._closed = False

    def _refuse_if_closed(self) -> None:
        if self._closed:
            raise self.unavailable(f"{self.what} closed")

    async def _call(self, call: Awaitable[object]) -> object:
        """``call``'s reply within the timeout, else ``unavailable``."""
        try:
            async with asyncio.timeout(self._timeout):
                return await call
        except (RedisError, OSError, TimeoutError) as exc:
            raise self.unavailable(f"{self.what} unavailable: {type(exc).__name__}") from exc

    async def close(self) -> None:
        """Refuse every later call and release the connections."""
        self._closed = True
        await self._redis.aclose()
