"""The quota domain: limits, charges, the cost rule and the verdict.

A :class:`Limit` is a token bucket: ``capacity`` units, refilled continuously and fully over
``window`` (600 per minute = one unit back every 100 ms, a full minute's worth available at
once after a quiet minute).

Why a token bucket and not GCRA: both admit the same traffic, and GCRA stores one number
instead of two. But GCRA's emission interval (``window / capacity``) is fractional in
general, and Redis runs Lua with double-precision numbers: ``7 * (60000 / 7)`` can land a
hair above 60000 and refuse the capacity-th request of a burst. Here a bucket's credit is
counted in units of ``1 / window_ms`` of a token, so a full bucket holds
``capacity * window_ms`` credit, one millisecond refills exactly ``capacity`` credit, and
every quantity is an integer below 2**53 (exact in a double) by the bounds checked in
:class:`Limit`. The Python store and the Lua script compute the same integers.

Cost rule (:func:`request_cost`): a request costs the number of objects it targets, at
least 1. The cost is capped at :data:`MAX_COST`, one more than any limit's capacity, so a
capped cost still exceeds every limit: capping can never undercharge, it only keeps the
arithmetic bounded.

All or nothing: a request carries several charges (user, client, tenant, ...); a store
consumes from all of them or from none (see :class:`~fleetward.abuse.store.QuotaStore`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final

MAX_CAPACITY: Final = 10_000_000
MAX_WINDOW: Final = timedelta(days=1)
# One more than any capacity: a request capped here is refused by every limit.
MAX_COST: Final = MAX_CAPACITY + 1
# Charges in one request: a bulk command to 10,000 vehicles carries one per vehicle.
MAX_CHARGES: Final = 20_000
MAX_SUBJECT_LENGTH: Final = 256

# Limit names travel in problem bodies and as RateLimit structured-field strings, and form
# part of store keys: a closed, header-safe alphabet without the key separator "|".
_NAME = re.compile(r"[a-z0-9][a-z0-9_.:-]{0,63}")
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


class Dimension(StrEnum):
    """What a charge is counted against."""

    USER = "user"
    CLIENT = "client"
    VEHICLE = "vehicle"
    DEVICE = "device"  # a device identity (the telemetry quotas, telemetry/leased_quotas.py)
    TENANT = "tenant"
    COMMAND = "command"  # per command type and actor
    FLOW = "flow"  # per sensitive flow (unlock attempts, transfers, ...) and actor
    GLOBAL = "global"


@dataclass(frozen=True, slots=True)
class Limit:
    """``capacity`` units per ``window``, as a token bucket (see the module docstring)."""

    name: str
    capacity: int
    window: timedelta
    # Derived once (checked on every charge of every request): the window in whole
    # milliseconds and the credit of a full bucket, ``capacity * window_ms`` (< 2**53).
    window_ms: int = field(init=False, repr=False, compare=False)
    full_credit: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"limit name {self.name!r} must match {_NAME.pattern}")
        if type(self.capacity) is not int or not 1 <= self.capacity <= MAX_CAPACITY:
            raise ValueError(f"limit capacity must be an integer in 1..{MAX_CAPACITY}")
        seconds = self.window.total_seconds()
        if not (1 <= seconds <= MAX_WINDOW.total_seconds() and seconds == int(seconds)):
            raise ValueError("limit window must be whole seconds, between 1 second and 1 day")
        window_ms = self.window // _MS
        object.__setattr__(self, "window_ms", window_ms)
        object.__setattr__(self, "full_credit", self.capacity * window_ms)

    def with_capacity(self, capacity: int) -> Limit:
        return Limit(self.name, capacity, self.window)


@dataclass(frozen=True, slots=True)
class Charge:
    """One bucket a request draws from: ``limit`` counted for ``subject`` in ``dimension``.

    ``fixed_cost`` is ``None`` for charges that pay the request's cost (the number of
    targets); a per-object charge (one per targeted vehicle) pays how many times the request
    targets that object, usually 1.
    """

    dimension: Dimension
    subject: str
    limit: Limit
    fixed_cost: int | None = None
    # The stable store key. The limit's parameters are part of it, so changing a limit (or
    # using a raised one) counts in a fresh bucket rather than misreading old credit. The
    # subject comes last and no earlier part may contain "|": the key is unambiguous.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 1 <= len(self.subject) <= MAX_SUBJECT_LENGTH or not self.subject.isprintable():
            raise ValueError(f"charge subject must be 1..{MAX_SUBJECT_LENGTH} printable chars")
        if self.fixed_cost is not None and (
            type(self.fixed_cost) is not int or not 1 <= self.fixed_cost <= MAX_COST
        ):
            raise ValueError(f"a fixed cost must be an integer in 1..{MAX_COST}")
        limit = self.limit
        key = f"{self.dimension}|{limit.name}|{limit.capacity}|{limit.window_ms}|{self.subject}"
        object.__setattr__(self, "key", key)

    def cost_for(self, request_cost: int) -> int:
        return request_cost if self.fixed_cost is None else self.fixed_cost


@dataclass(frozen=True, slots=True)
class QuotaVerdict:
    """The answer for one request.

    Denied: ``limit`` is the first charge (in the request's order) that the request would
    exceed, ``remaining`` what that bucket holds now, and ``retry_after`` how long until the
    whole request could pass if nothing else drew on its buckets. ``retryable`` is false when
    the request costs more than some limit's capacity: waiting never helps, only a smaller
    request or a raised quota.

    Allowed: ``limit`` is the charge with the fewest whole units left after this request,
    ``remaining`` that count, ``retry_after`` zero.

    ``reset_after`` is how long until the reported bucket is full again. ``degraded`` says
    the answer came from the process-local fallback because the shared store was down.
    """

    allowed: bool
    limit: Limit
    remaining: int
    retry_after: timedelta
    reset_after: timedelta
    retryable: bool = True
    degraded: bool = False

    @property
    def limit_name(self) -> str:
        return self.limit.name


def request_cost(targets: int) -> int:
    """The cost rule: the number of objects a request targets, at least 1, capped at
    :data:`MAX_COST` (a capped cost still exceeds every limit)."""
    if type(targets) is not int:
        raise TypeError("the number of targets must be an int")
    if targets < 0:
        raise ValueError("the number of targets cannot be negative")
    return min(max(targets, 1), MAX_COST)


def epoch_ms(now: datetime) -> int:
    """Whole milliseconds since the Unix epoch, computed exactly (no float rounding)."""
    if now.tzinfo is None:
        raise ValueError("quota times must be aware datetimes")
    return (now - _EPOCH) // _MS


def check_request(charges: Sequence[Charge], cost: int) -> None:
    """What every store requires of a consume call; a violation is a programming error."""
    if type(cost) is not int or not 1 <= cost <= MAX_COST:
        raise ValueError(f"cost must be an integer in 1..{MAX_COST} (see request_cost)")
    if not 1 <= len(charges) <= MAX_CHARGES:
        raise ValueError(f"a request needs 1..{MAX_CHARGES} charges")
    if len({charge.key for charge in charges}) != len(charges):
        # The same bucket twice would be checked against its credit twice, then drawn twice.
        raise ValueError("a request's charges must name distinct buckets")
