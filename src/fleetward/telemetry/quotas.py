"""Stage 6: per-device and per-fleet quotas (token buckets).

A device is limited on its own so that one noisy or compromised TCU cannot crowd out the
rest, and each fleet (the session's tenant) as a whole so that one customer's fleet cannot
take the platform's ingest capacity. A frame is admitted only if both buckets hold a token;
a refusal tells the device when to try again. Quota refusals do not count towards
quarantine: a store-and-forward backlog draining fast is not an attack.

:class:`QuotaGate` is the seam; :class:`InProcessQuotas` holds the buckets in this process
(one gateway process, the default). With replicas (``redis_url``),
:class:`~fleetward.abuse.telemetry_leases.LeasedQuotas` shares them through Redis by lease.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from fleetward.gateway.session import DeviceSession

Monotonic = Callable[[], float]


@dataclass(frozen=True, slots=True)
class QuotaVerdict:
    admitted: bool
    # Which bucket refused ("device" or "fleet"); empty when admitted.
    scope: str = ""
    retry_after_ms: int = 0


ADMITTED = QuotaVerdict(admitted=True)


class QuotaGate(Protocol):
    """Implementations are safe to call from one event loop; ``admit`` either takes ``cost``
    from both buckets or from neither, and never blocks: it runs for every frame, so the shared
    (Redis) implementation leases tokens in batches in the background and admits from its
    lease, rather than making a network round trip per message (a frame that finds no lease
    is answered ``PENDING`` and the pipeline awaits one: telemetry/leasing.py)."""

    def admit(self, session: DeviceSession, cost: int = 1) -> QuotaVerdict: ...


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: float

    def __post_init__(self) -> None:
        if not (self.per_second > 0 and self.burst >= 1):
            raise ValueError("a rate needs a positive refill and a burst of at least 1")


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: Rate, now: float) -> None:
        self._rate = rate.per_second
        self._burst = rate.burst
        self._tokens = rate.burst
        self._updated = now

    def available(self, now: float) -> float:
        """The tokens held at ``now``, after refilling for the time since the last call
        (written out, not through ``min()`` and a helper: it runs twice per frame)."""
        elapsed = now - self._updated
        if elapsed > 0:
            tokens = self._tokens + elapsed * self._rate
            self._tokens = tokens if tokens < self._burst else self._burst
            self._updated = now
        return self._tokens

    def take(self, cost: float) -> None:
        self._tokens -= cost

    def wait_ms(self, cost: float) -> int:
        return max(1, math.ceil((cost - self._tokens) / self._rate * 1000))


# Defaults: a TCU reporting every second with bursts (wake-up, store-and-forward) well
# within 20/s; a fleet's ceiling near one gateway core's measured capacity.
DEFAULT_DEVICE_RATE = Rate(per_second=20, burst=200)
DEFAULT_FLEET_RATE = Rate(per_second=20_000, burst=40_000)


class InProcessQuotas:
    """Buckets in a dict per device and per fleet. Not thread-safe: one event loop."""

    def __init__(
        self,
        *,
        device: Rate = DEFAULT_DEVICE_RATE,
        fleet: Rate = DEFAULT_FLEET_RATE,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self._device_rate = device
        self._fleet_rate = fleet
        self._now = monotonic
        self._devices: dict[str, TokenBucket] = {}
        self._fleets: dict[str, TokenBucket] = {}

    def admit(self, session: DeviceSession, cost: int = 1) -> QuotaVerdict:
        now = self._now()
        device = self._devices.get(session.device_id)
        if device is None:
            device = self._devices[session.device_id] = TokenBucket(self._device_rate, now)
        fleet = self._fleets.get(session.tenant_id)
        if fleet is None:
            fleet = self._fleets[session.tenant_id] = TokenBucket(self._fleet_rate, now)
        if device.available(now) < cost:
            return QuotaVerdict(False, "device", device.wait_ms(cost))
        if fleet.available(now) < cost:
            return QuotaVerdict(False, "fleet", fleet.wait_ms(cost))
        device.take(cost)
        fleet.take(cost)
        return ADMITTED
