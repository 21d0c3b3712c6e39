"""How often one device may open a session: a per-device budget of successful handshakes.

A session's opening and closing are store writes and audit records, and a new session
supersedes the device's silent one; nothing bounded how often a device (a stolen key, a TCU
in a loop) could open one, over WebSocket or, without even a new connection, over MQTT. So
each device identity has a token bucket: ``burst`` openings at once, refilled by one every
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


@dataclass(slots=True)
class _Bucket:
    credit: float
    at: datetime
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
        if bucket.credit >= 1:
            bucket.credit -= 1
            bucket.breached = False
            return ALLOWED
        first = not bucket.breached
        bucket.breached = True
        self.refused += 1
        wait = self.refill * (1 - bucket.credit)
        # Whole seconds, rounded up: what a device is told to wait is never too short.
        seconds = -(-wait // timedelta(seconds=1))
        return Verdict(False, timedelta(seconds=seconds), first)

    def give_back(self, device_id: str) -> None:
        """A handshake that took an opening and did not open a session returns it."""
        bucket = self._buckets.get(device_id)
        if bucket is not None:
            bucket.credit = min(float(self.burst), bucket.credit + 1)

    def _current(self, device_id: str, now: datetime) -> _Bucket:
        bucket = self._buckets.get(device_id)
        if bucket is None:
            while len(self._buckets) >= self._devices:
                self._buckets.popitem(last=False)
            bucket = self._buckets[device_id] = _Bucket(float(self.burst), now)
            return bucket
        self._buckets.move_to_end(device_id)
        if now > bucket.at:  # a clock that went back refills nothing
            earned = (now - bucket.at) / self.refill
            bucket.credit = min(float(self.burst), bucket.credit + earned)
            bucket.at = now
        return bucket
