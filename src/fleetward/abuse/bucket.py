"""Token-bucket arithmetic in exact integers (see :mod:`fleetward.abuse.quotas`).

A bucket's state is ``(credit, at_ms)``: its credit as of ``at_ms``. A bucket never seen is
full. The Lua script in :mod:`fleetward.abuse.redis_store` performs the same steps on the
same integers; the store conformance tests hold the two to identical verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from fleetward.abuse.quotas import Charge, Limit, QuotaVerdict

State = tuple[int, int]


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def refilled(state: State | None, limit: Limit, now_ms: int) -> State:
    """The state at ``now_ms``. A clock behind the stored time (a replica whose clock lags)
    refills nothing and keeps the later time: time never runs backwards for a bucket."""
    if state is None:
        return limit.full_credit, now_ms
    credit, at_ms = state
    if now_ms <= at_ms:
        return credit, at_ms
    elapsed = min(now_ms - at_ms, limit.window_ms)  # a full window refills everything
    return min(limit.full_credit, credit + elapsed * limit.capacity), now_ms


def ms_until_full(credit: int, limit: Limit) -> int:
    return ceil_div(limit.full_credit - credit, limit.capacity)


def decide(
    charges: Sequence[Charge], cost: int, states: Sequence[State | None], now_ms: int
) -> tuple[QuotaVerdict, list[State] | None]:
    """The verdict for consuming ``cost`` from every charge at ``now_ms``, and the states to
    write back (``None`` when denied: nothing is consumed)."""
    current = [refilled(s, c.limit, now_ms) for c, s in zip(charges, states, strict=True)]
    first: int | None = None
    wait_ms = 0
    retryable = True
    for index, (charge, (credit, _at)) in enumerate(zip(charges, current, strict=True)):
        limit = charge.limit
        need = charge.cost_for(cost) * limit.window_ms
        if credit >= need:
            continue
        if first is None:
            first = index
        if need > limit.full_credit:
            retryable = False
            wait_ms = max(wait_ms, limit.window_ms)
        else:
            wait_ms = max(wait_ms, ceil_div(need - credit, limit.capacity))
    if first is not None:
        limit = charges[first].limit
        credit = current[first][0]
        verdict = QuotaVerdict(
            allowed=False,
            limit=limit,
            remaining=credit // limit.window_ms,
            retry_after=timedelta(milliseconds=wait_ms),
            reset_after=timedelta(milliseconds=ms_until_full(credit, limit)),
            retryable=retryable,
        )
        return verdict, None
    written: list[State] = []
    tightest = 0
    tightest_left = -1
    for index, (charge, (credit, at_ms)) in enumerate(zip(charges, current, strict=True)):
        left = credit - charge.cost_for(cost) * charge.limit.window_ms
        written.append((left, at_ms))
        units = left // charge.limit.window_ms
        if tightest_left < 0 or units < tightest_left:
            tightest, tightest_left = index, units
    limit = charges[tightest].limit
    verdict = QuotaVerdict(
        allowed=True,
        limit=limit,
        remaining=tightest_left,
        retry_after=timedelta(0),
        reset_after=timedelta(milliseconds=ms_until_full(written[tightest][0], limit)),
    )
    return verdict, written
