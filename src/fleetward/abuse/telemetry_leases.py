"""Telemetry quotas with replicas: the per-device and per-fleet buckets of the ingest
pipeline's quota stage (:mod:`fleetward.telemetry.quotas`) shared through Redis, by lease.

With ``redis_url`` set, a device's (and a fleet's) token bucket lives once, in Redis, in the
API quotas' store (:class:`~fleetward.abuse.redis_store.RedisQuotaStore`, exact integers, one
atomic script), so a device spreading its connections over N replicas gets one budget, not
N. A round trip per frame is not paid: each process draws a small batch of tokens from the
shared bucket (a lease) and :meth:`LeasedQuotas.admit` spends from it synchronously, never
blocking. When a lease is half spent the next batch is drawn in the background.

Why it never admits more than the shared bucket gives out: every frame admitted here spends
a token already drawn there. What a lease holds when its subject stops sending is forfeit,
never returned: replicas together admit at most what the bucket gave out. A lease expires
(a tenth of the bucket's window after its last draw), so tokens drawn long ago cannot be
spent on top of a bucket full again later: over any interval, the replicas together admit
at most what one bucket allows plus about a fifth of its burst.

A frame that finds no usable lease (the subject's first frame in this process, or a lease
that expired) is answered by ``admit`` with :data:`~fleetward.telemetry.leasing.PENDING`;
the pipeline then awaits :meth:`LeasedQuotas.lease` (one draw per bucket at a time, however
many frames wait) and asks again. A subject refused by the shared bucket is refused here
without asking Redis until its retry time.

If Redis does not answer (250 ms), or answers nonsense, this process falls back to its own
in-process buckets for one second at a time (as without Redis: one budget per process) and
logs a warning at most once a minute, with the error type only: ingestion goes on.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

from fleetward.abuse.quotas import Charge, Dimension, Limit
from fleetward.abuse.redis_store import RedisQuotaStore
from fleetward.abuse.store import QuotaUnavailable
from fleetward.core.clock import Clock
from fleetward.gateway.session import DeviceSession
from fleetward.observability.logging import EveryInterval, get_logger
from fleetward.telemetry.leasing import PENDING
from fleetward.telemetry.quotas import (
    ADMITTED,
    DEFAULT_DEVICE_RATE,
    DEFAULT_FLEET_RATE,
    InProcessQuotas,
    Monotonic,
    QuotaVerdict,
    Rate,
)

_log = get_logger("fleetward.abuse.telemetry_leases")

PREFIX: Final = "fw:tquota:"
# A batch is a fortieth of the burst (device 5, fleet 1,000 by default); a lease lives a
# tenth of the bucket's window (device 1 s, fleet 0.2 s).
BATCH_DIVISOR: Final = 40
TTL_DIVISOR: Final = 10
# After a failed draw the process counts alone this long before asking Redis again.
DEGRADED_S: Final = 1.0
DEFAULT_MAX_LEASES: Final = 100_000


@dataclass(frozen=True, slots=True)
class Terms:
    """How one kind of bucket (device or fleet) is shared."""

    dimension: Dimension
    limit: Limit
    batch: int
    ttl_s: float

    @classmethod
    def of(cls, dimension: Dimension, name: str, rate: Rate) -> Terms:
        """``ValueError`` unless the burst is whole and burst / rate is whole seconds (a
        :class:`~fleetward.abuse.quotas.Limit` of ``burst`` per window)."""
        window_s = rate.burst / rate.per_second
        if rate.burst != int(rate.burst) or window_s != int(window_s):
            raise ValueError("a shared rate needs a whole burst refilled in whole seconds")
        limit = Limit(name, int(rate.burst), timedelta(seconds=window_s))
        batch = max(1, limit.capacity // BATCH_DIVISOR)
        return cls(dimension, limit, batch, window_s / TTL_DIVISOR)


class _Lease:
    __slots__ = ("expires", "retry_at", "tokens")

    def __init__(self) -> None:
        self.tokens = 0
        self.expires = 0.0
        # Refused by the shared bucket: refused here until then, without asking again.
        self.retry_at = 0.0


def _short(lease: _Lease, scope: str, now: float, cost: int) -> QuotaVerdict | None:
    """None when ``lease`` can pay ``cost`` now; else a refusal (the shared bucket refused
    until its retry time) or :data:`PENDING` (a draw is due)."""
    if lease.tokens >= cost and now < lease.expires:
        return None
    if now < lease.retry_at:
        return QuotaVerdict(False, scope, max(1, int((lease.retry_at - now) * 1000)))
    return PENDING


class LeasedQuotas:
    """A :class:`~fleetward.telemetry.leasing.Leasing` quota gate. Not thread-safe: one
    event loop. Owns ``store`` (closed by :meth:`close`)."""

    def __init__(
        self,
        store: RedisQuotaStore,
        clock: Clock,
        *,
        device: Rate = DEFAULT_DEVICE_RATE,
        fleet: Rate = DEFAULT_FLEET_RATE,
        monotonic: Monotonic = time.monotonic,
        max_leases: int = DEFAULT_MAX_LEASES,
    ) -> None:
        self._store = store
        self._clock = clock  # the shared buckets' time (replicas NTP-synced)
        self._now = monotonic  # the leases' lifetimes
        self._device = Terms.of(Dimension.DEVICE, "telemetry-device", device)
        self._fleet = Terms.of(Dimension.TENANT, "telemetry-fleet", fleet)
        self._local = InProcessQuotas(device=device, fleet=fleet, monotonic=monotonic)
        self._max = max_leases
        # (dimension, subject) -> lease, least recently drawn first.
        self._leases: OrderedDict[tuple[Dimension, str], _Lease] = OrderedDict()
        self._drawing: dict[tuple[Dimension, str], asyncio.Task[None]] = {}
        self._degraded_until = float("-inf")
        self._unshared = EveryInterval()  # a Redis outage is logged at most once a minute

    def admit(self, session: DeviceSession, cost: int = 1) -> QuotaVerdict:
        now = self._now()
        if now < self._degraded_until:
            return self._local.admit(session, cost)
        device = self._leases.get((Dimension.DEVICE, session.device_id))
        fleet = self._leases.get((Dimension.TENANT, session.tenant_id))
        if device is None or fleet is None:
            return PENDING
        short = _short(device, "device", now, cost) or _short(fleet, "fleet", now, cost)
        if short is not None:
            return short
        device.tokens -= cost
        fleet.tokens -= cost
        if device.tokens * 2 <= self._device.batch:
            self._draw_later(self._device, session.device_id, cost)
        if fleet.tokens * 2 <= self._fleet.batch:
            self._draw_later(self._fleet, session.tenant_id, cost)
        return ADMITTED

    async def lease(self, session: DeviceSession, cost: int = 1) -> None:
        draws = [
            self._draw_later(self._device, session.device_id, cost),
            self._draw_later(self._fleet, session.tenant_id, cost),
        ]
        # Not cancelled with the waiting frame: other frames may wait on the same draw.
        await asyncio.wait(draws)

    async def close(self) -> None:
        for task in list(self._drawing.values()):
            task.cancel()
        if self._drawing:
            await asyncio.wait(list(self._drawing.values()))
        await self._store.close()

    def _draw_later(self, terms: Terms, subject: str, cost: int) -> asyncio.Task[None]:
        key = (terms.dimension, subject)
        task = self._drawing.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._draw(terms, subject, cost))
            self._drawing[key] = task
            task.add_done_callback(lambda _done: self._drawing.pop(key, None))
        return task

    async def _draw(self, terms: Terms, subject: str, cost: int) -> None:
        key = (terms.dimension, subject)
        lease = self._leases.get(key)
        now = self._now()
        if now < self._degraded_until or (
            lease is not None and now < lease.retry_at and lease.tokens < cost
        ):
            return  # counting alone for now, or refused there until its retry time
        charge = [Charge(terms.dimension, subject, terms.limit)]
        want = max(terms.batch, cost)
        try:
            verdict = await self._store.consume(charge, want, now=self._clock.now())
            if not verdict.allowed and cost <= verdict.remaining < want:
                want = verdict.remaining  # what is left, rather than nothing
                verdict = await self._store.consume(charge, want, now=self._clock.now())
        except QuotaUnavailable as exc:
            self._degrade(exc)
            return
        now = self._now()
        lease = self._leases.get(key)
        if lease is None:
            lease = self._leases[key] = _Lease()
            while len(self._leases) > self._max:
                self._leases.popitem(last=False)  # forfeit: never more than was drawn
        self._leases.move_to_end(key)
        if verdict.allowed:
            held = lease.tokens if now < lease.expires else 0
            lease.tokens = held + want
            lease.expires = now + terms.ttl_s
            lease.retry_at = 0.0
        else:
            lease.retry_at = now + max(verdict.retry_after.total_seconds(), 0.001)

    def _degrade(self, exc: QuotaUnavailable) -> None:
        now = self._now()
        self._degraded_until = now + DEGRADED_S
        if self._unshared.due(now):
            # The store's message names the error type only, never the URL.
            _log.warning("telemetry quotas not shared, counting in this process", error=str(exc))
