"""The command hints of :mod:`fleetward.commands.bus` over Redis publish/subscribe.

Redis is already the replicas' shared fast path (revocations, replay caches, quotas), and its
publish/subscribe is what a hint needs: fan-out to every replica, nothing stored, at most
once. A replica that is not subscribed at that moment (starting, reconnecting) misses the
hint and finds the job at its next sweep, which is what happens without a bus.

Publishing never waits on Redis in the caller's path: hints go to a bounded queue that one
task drains, several per round trip (a pipeline). When Redis is down or slow, the queue fills
and further hints are dropped (counted, logged once per outage): commands still flow, at the
sweep's pace. The subscriber reconnects with a growing pause (up to ``_MAX_PAUSE_S``).
Neither logs the Redis URL (it may hold a password) nor a message's content.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Final

from redis.asyncio import Redis

from fleetward.commands.bus import Hint, OnHint, decode, encode, new_origin
from fleetward.observability.logging import get_logger

logger = get_logger(__name__)

_QUEUE: Final = 10_000
_BATCH: Final = 256
_MAX_PAUSE_S: Final = 5.0


class RedisCommandBus:
    def __init__(self, redis: Redis, channel: str, *, origin: str | None = None) -> None:
        self._redis = redis
        self._channel = channel
        self.origin = origin or new_origin()
        self._outbox: asyncio.Queue[bytes] = asyncio.Queue(maxsize=_QUEUE)
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped = 0  # hints not published (queue full: Redis down or slow)
        self.refused = 0  # messages read that were not hints
        self.listen_failures = 0  # subscriptions lost or refused (each followed by a retry)

    @classmethod
    def from_url(cls, url: str, channel: str) -> RedisCommandBus:
        # Connections are made when started, not here.
        return cls(Redis.from_url(url, socket_timeout=5.0, socket_connect_timeout=2.0), channel)

    async def start(self, on_hint: OnHint) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._publish_forever(), name="command-bus-publish"),
                asyncio.create_task(self._listen_forever(on_hint), name="command-bus-listen"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._redis.aclose()

    def queued(self, vehicle_id: str, job_id: str) -> None:
        hint = Hint(self.origin, job_id, vehicle_id)
        if not self._tasks:
            return  # not started (or stopped): nobody would publish it
        try:
            self._outbox.put_nowait(encode(hint))
        except asyncio.QueueFull:
            if self.dropped == 0:
                logger.warning("commands.bus_backlog_full", queue=_QUEUE)
            self.dropped += 1

    async def _publish_forever(self) -> None:
        failing = False
        while True:
            batch = [await self._outbox.get()]
            while len(batch) < _BATCH and not self._outbox.empty():
                batch.append(self._outbox.get_nowait())
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for message in batch:
                        pipe.publish(self._channel, message)
                    await pipe.execute()
                if failing:
                    logger.info("commands.bus_publishing_again")
                failing = False
            except Exception as exc:  # Redis down: these hints are lost (the sweep stands)
                # And those queued behind them: by the time Redis answers again the sweep
                # has found their jobs, and a burst of stale hints would only cost the
                # other replicas a store read each.
                while not self._outbox.empty():
                    batch.append(self._outbox.get_nowait())
                self.dropped += len(batch)
                if not failing:
                    logger.warning("commands.bus_publish_failed", error=type(exc).__name__)
                failing = True
                await asyncio.sleep(0.5)

    async def _listen_forever(self, on_hint: OnHint) -> None:
        pause = 0.25
        failing = False  # logged once an outage, not at every retry
        while True:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                pause = 0.25
                if failing:
                    logger.info("commands.bus_listening_again")
                failing = False
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is None or message.get("type") != "message":
                        continue
                    data = message.get("data")
                    hint = decode(data) if isinstance(data, bytes) else None
                    if hint is None:
                        self.refused += 1
                        continue
                    if hint.origin == self.origin:
                        continue  # this replica's own: acted on when it was published
                    try:
                        on_hint(hint)
                    except Exception as exc:  # a handler's bug must not end the listening
                        logger.error("commands.bus_hint_failed", error=type(exc).__name__)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect: hints meanwhile are missed (the sweep)
                self.listen_failures += 1
                if not failing:
                    logger.warning("commands.bus_listen_failed", error=type(exc).__name__)
                failing = True
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(pause)
            pause = min(_MAX_PAUSE_S, pause * 2)


__all__ = ["RedisCommandBus"]
