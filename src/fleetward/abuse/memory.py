"""Buckets in this process: the embedded default, and the local fallback when Redis is down.

Memory is bounded. A bucket that has refilled completely is the same as no bucket, so it is
dropped: buckets are kept in least-recently-drawn order and each call sweeps a few of the
oldest that are full again. If the table still holds ``max_buckets`` (many distinct
subjects inside one window), the least recently drawn bucket is dropped even though it is
not full; that gives its subject back what it had spent, which is bounded by one window's
capacity and is preferred to refusing every caller once the table fills.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from datetime import datetime
from typing import Final

from fleetward.abuse.bucket import State, decide, ms_until_full
from fleetward.abuse.quotas import Charge, QuotaVerdict, check_request, epoch_ms

DEFAULT_MAX_BUCKETS: Final = 200_000
_SWEEP_PER_CALL: Final = 8


class InMemoryQuotaStore:
    """A :class:`~fleetward.abuse.store.QuotaStore` in a dict. ``consume`` never awaits, so
    it is atomic on its event loop; it is not thread-safe (one event loop per process)."""

    def __init__(self, *, max_buckets: int = DEFAULT_MAX_BUCKETS) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be positive")
        self._max = max_buckets
        # key -> (credit, at_ms, full_at_ms); oldest draw first.
        self._buckets: OrderedDict[str, tuple[int, int, int]] = OrderedDict()
        self.evicted_live = 0  # buckets dropped before they were full (table at its bound)

    def __len__(self) -> int:
        return len(self._buckets)

    async def consume(self, charges: Sequence[Charge], cost: int, *, now: datetime) -> QuotaVerdict:
        check_request(charges, cost)
        now_ms = epoch_ms(now)
        self._sweep(now_ms)
        buckets = self._buckets
        states: list[State | None] = []
        for charge in charges:
            found = buckets.get(charge.key)
            states.append(None if found is None else (found[0], found[1]))
        verdict, written = decide(charges, cost, states, now_ms)
        if written is not None:
            for charge, (credit, at_ms) in zip(charges, written, strict=True):
                key = charge.key
                buckets[key] = (credit, at_ms, at_ms + ms_until_full(credit, charge.limit))
                buckets.move_to_end(key)
            while len(buckets) > self._max:
                _key, (_credit, _at, full_at) = buckets.popitem(last=False)
                if full_at > now_ms:
                    self.evicted_live += 1
        return verdict

    def _sweep(self, now_ms: int) -> None:
        buckets = self._buckets
        for _ in range(_SWEEP_PER_CALL):
            if not buckets:
                return
            key = next(iter(buckets))
            if buckets[key][2] > now_ms:
                return
            del buckets[key]
