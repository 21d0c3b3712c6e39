"""How often one device may open a session: a per-device budget of successful handshakes.

A session's opening and closing are store writes and audit records, and a new session
supersedes the device's silent one; nothing bounded how often a device (a stolen key, a TCU
in a loop) could open one, over WebSocket or, without even a new connection, over MQTT. So
each device identity has a token bucket (the quotas' own arithmetic, ``abuse.bucket``):
``burst`` openings at once, refilled by one every
``refill`` (defaults 10 and 60 s: a reconnect storm after a network drop is a few openings,
an ignition cycle or a tunnel one each; a TCU that follows ``docs/vehicle-protocol.md`` never
comes near). A handshake that finds the bucket empty is refused before the store is touched
(:meth:`HandshakeRate.take`); one that fails after taking its credit gives it back
(:meth:`HandshakeRate.give_back`): only sessions that open are counted.

The first refusal after the device's last opening is a *breach* (``first``): the gateway
records it as a security event (``device:session:churn``) once, and every refusal, that one
included, goes through the refusal budget like any other (counted, not written row by row).

In memory, per process (with several replicas each counts its own: a device spread over
``n`` replicas by the load balancer may open ``n`` times as often). Bounded: at most
``devices`` identities are tracked, the least recently seen dropped first; a dropped entry
comes back full, which is what an idle device's bucket is anyway, and a device in a loop is
always among the most recent. Only a holder of a device key reaches this check (it follows
the proof of possession), so entries cannot be bought with addresses.

For one event loop (no awaits inside).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from fleetward.abuse.bucket import ceil_div, refilled
from fleetward.abuse.quotas import Limit


@dataclass(slots=True)
class _Bucket:
    # abuse.bucket's state: credit in the limit's integer units as of at_ms.
    credit: int
    at_ms: int
    breached: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a device may open a session now. When it may not: ``retry_after``, how long
    until its next credit, and ``first``, whether this is the first refusal since its last
    opening (the one to record as a breach)."""

    allowed: bool
    retry_after: timedelta = timedelta(0)
    first: bool = False


ALLOWED = Verdict(True)


class HandshakeRate:
    def __init__(self, *, burst: int, refill: timedelta, devices: int) -> None:
        if burst < 1 or devices < 1 or refill <= timedelta(0):
            raise ValueError("a handshake rate needs a positive burst, refill and size")
        self.burst = burst
        self.refill = refill
        # The quotas' token bucket (abuse.bucket): ``burst`` openings per ``burst`` refills,
        # one opening costing one refill's worth of credit (its window in ms).
        self._limit = Limit("gateway-handshakes", burst, refill * burst)
        self._cost = self._limit.window_ms
        self._devices = devices
        # Least recently seen first.
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        # Handshakes refused here since the process started (an operator's running total).
        self.refused = 0

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, device_id: str, now: datetime) -> Verdict:
        """Take one opening from ``device_id``'s budget at ``now``, or refuse."""
        bucket = self._current(device_id, now)
        if bucket.credit >= self._cost:
            bucket.credit -= self._cost
            bucket.breached = False
            return ALLOWED
        first = not bucket.breached
        bucket.breached = True
        self.refused += 1
        wait_ms = ceil_div(self._cost - bucket.credit, self._limit.capacity)
        # Whole seconds, rounded up: what a device is told to wait is never too short.
        return Verdict(False, timedelta(seconds=ceil_div(wait_ms, 1000)), first)

    def give_back(self, device_id: str) -> None:
        """A handshake that took an opening and did not open a session returns it."""
        bucket = self._buckets.get(device_id)
        if bucket is not None:
            bucket.credit = min(self._limit.full_credit, bucket.credit + self._cost)

    def _current(self, device_id: str, now: datetime) -> _Bucket:
        now_ms = int(now.timestamp() * 1000)
        bucket = self._buckets.get(device_id)
        if bucket is None:
            while len(self._buckets) >= self._devices:
                self._buckets.popitem(last=False)
            credit, at_ms = refilled(None, self._limit, now_ms)
            bucket = self._buckets[device_id] = _Bucket(credit, at_ms)
            return bucket
        self._buckets.move_to_end(device_id)
        # A clock that went back refills nothing (abuse.bucket keeps the later time).
        bucket.credit, bucket.at_ms = refilled((bucket.credit, bucket.at_ms), self._limit, now_ms)
        return bucket
