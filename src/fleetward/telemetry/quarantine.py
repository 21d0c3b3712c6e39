"""Quarantine: a device that keeps sending malformed or suspicious frames is set apart.

:class:`QuarantinePolicy` scores each device's refused frames over a sliding window (weights
below); at the threshold the device is quarantined in this process at once and reported
through :class:`DeviceStatusPort` (the devices capability owns the device's status flag and
its audit event). With replicas (``redis_url``) the score is also shared
(:mod:`fleetward.telemetry.shared_scores`): frames refused on every replica add up, and the
replica whose frame reaches the threshold decides. Each process keeps its own score as well,
so a Redis error never makes a device harder to quarantine than one process alone would.
Other replicas learn of the quarantine from the device's status flag (their gateway's
credential sweep, or the admission of the device's next session there).

Once it is, every authentic, fresh frame of the device goes to a :class:`QuarantineSink`
with the verdict it would have had, never to ``telemetry_messages``.

The device is not told: its replies are the ones an unquarantined device would get (``accepted``
means "durably stored", which holds for the quarantine table too), so a compromised TCU gets
no signal that it was noticed while its traffic is kept for investigation.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Protocol

from fleetward.core.ids import new_id
from fleetward.observability.logging import EveryInterval, get_logger
from fleetward.telemetry.errors import Status
from fleetward.telemetry.models import QuarantinedMessage
from fleetward.telemetry.persist import BatchWriter, Target
from fleetward.telemetry.quotas import DEFAULT_DEVICE_RATE, Rate, TokenBucket
from fleetward.telemetry.shared_scores import ScoresUnavailable, SharedScores

_log = get_logger("fleetward.telemetry.quarantine")

Monotonic = Callable[[], float]
WallMs = Callable[[], int]

# Stable reasons handed to the device status port.
REASON_REPEATED = "telemetry-repeated-rejections"
REASON_FOREIGN_IDENTITY = "telemetry-foreign-identity"

DEFAULT_THRESHOLD = 10
# A slow devices capability must not hold a frame's reply for long; the call is retried.
STATUS_PORT_TIMEOUT_S = 2.0
DEFAULT_WINDOW = timedelta(seconds=60)

# How suspicious each refusal is. A payload naming another vehicle is an impersonation
# attempt: one is enough. Forged tags and replays weigh more than sloppy data. Quota
# refusals and store failures say nothing about the device and weigh nothing.
WEIGHTS: Mapping[Status, int] = MappingProxyType(
    {
        Status.FOREIGN_IDENTITY: DEFAULT_THRESHOLD,
        Status.BAD_MAC: 2,
        Status.STALE_COUNTER: 2,
        Status.TOO_LARGE: 1,
        Status.MALFORMED_FRAME: 1,
        Status.CLOCK_DRIFT: 1,
        Status.OUT_OF_WINDOW: 1,
        Status.MALFORMED_PAYLOAD: 1,
        Status.UNKNOWN_SIGNAL: 1,
        Status.WRONG_TYPE: 1,
        Status.OUT_OF_RANGE: 1,
    }
)


class DeviceStatusPort(Protocol):
    """Implemented by the devices capability: flag the device as quarantined (with an audit
    event). Must be idempotent; may be called again for a device already flagged if an
    earlier call failed. Called from the event loop; must not block it."""

    async def quarantine(self, device_id: str, reason: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Quarantined:
    """One frame of a quarantined device, as kept for investigation."""

    device_id: str
    vehicle_id: str
    tenant_id: str
    session_id: str
    certificate_serial: str
    software_version: str
    vehicle_config: str
    received_at: datetime
    device_time: datetime
    sequence: int
    store_and_forward: bool
    verdict: Status
    quarantine_reason: str
    payload: bytes


class QuarantineSink(Protocol):
    """Where a quarantined device's frames go. ``put`` returns once the frame is durably
    stored and raises :class:`~fleetward.telemetry.persist.StoreUnavailable` otherwise.
    Safe to call concurrently from one event loop."""

    async def put(self, message: Quarantined) -> None: ...


QUARANTINE_TARGET = Target(QuarantinedMessage.__table__)  # type: ignore[arg-type]


class StoreQuarantineSink:
    """Writes ``quarantined_messages`` through the pipeline's batch writer."""

    def __init__(self, writer: BatchWriter) -> None:
        self._writer = writer

    async def put(self, message: Quarantined) -> None:
        row = {
            "id": new_id("qtm"),
            "device_id": message.device_id,
            "vehicle_id": message.vehicle_id,
            "tenant_id": message.tenant_id,
            "session_id": message.session_id,
            "certificate_serial": message.certificate_serial,
            "software_version": message.software_version,
            "vehicle_config": message.vehicle_config,
            "received_at": message.received_at,
            "device_time": message.device_time,
            "sequence": message.sequence,
            "store_and_forward": message.store_and_forward,
            "verdict": message.verdict.slug,
            "quarantine_reason": message.quarantine_reason,
            "payload": message.payload,
        }
        await self._writer.submit(QUARANTINE_TARGET, row)


class QuarantinePolicy:
    """Not thread-safe: one event loop."""

    def __init__(
        self,
        status: DeviceStatusPort,
        *,
        threshold: int = DEFAULT_THRESHOLD,
        window: timedelta = DEFAULT_WINDOW,
        already_quarantined: Iterable[str] = (),
        monotonic: Monotonic = time.monotonic,
        keep_rate: Rate = DEFAULT_DEVICE_RATE,
        shared: SharedScores | None = None,
        wall_ms: WallMs = lambda: time.time_ns() // 1_000_000,  # the shared scores' clock
    ) -> None:
        if threshold < 1 or window <= timedelta(0):
            raise ValueError("threshold and window must be positive")
        # How many refused frames of a quarantined device are kept: a budget of their own,
        # never the device's quota (see keeps_refused).
        self._keep_rate = keep_rate
        self._kept: dict[str, TokenBucket] = {}
        self._status = status
        self._threshold = threshold
        self._window = window.total_seconds()
        self._now = monotonic
        self._scores: dict[str, deque[tuple[float, int]]] = {}
        # Device id -> reason. Seeded by the composition root from the devices' status flags.
        self._quarantined: dict[str, str] = dict.fromkeys(already_quarantined, REASON_REPEATED)
        self._unreported: set[str] = set()
        # Scores shared by replicas (owned: closed by close()), on the wall clock they share.
        self._shared = shared
        self._wall_ms = wall_ms
        self._unshared = EveryInterval()  # a Redis outage is logged at most once a minute
        self._forgetting: set[asyncio.Task[None]] = set()

    def reason(self, device_id: str) -> str | None:
        """Why the device is quarantined, or None."""
        return self._quarantined.get(device_id)

    def mark(self, device_id: str, reason: str) -> None:
        """Set the device's frames apart from now on (the devices side quarantined it, e.g.
        after a cloned-credential finding); its status flag is already set there."""
        self._quarantined.setdefault(device_id, reason)

    def release(self, device_id: str) -> None:
        """Lift the quarantine (after an operator cleared the device's status flag)."""
        self._quarantined.pop(device_id, None)
        self._scores.pop(device_id, None)
        self._unreported.discard(device_id)
        self._kept.pop(device_id, None)
        if self._shared is not None:
            self._forget_shared(device_id)

    def keeps_refused(self, device_id: str) -> bool:
        """Whether a refused frame of a quarantined device is kept for investigation: at most
        at the device's rate. The budget is not the device's quota: a refused frame never
        spends an unquarantined device's quota, and spending a quarantined one's would change
        the replies to its next frames (quota-exceeded), telling a compromised TCU that it
        was noticed."""
        now = self._now()
        bucket = self._kept.get(device_id)
        if bucket is None:
            bucket = self._kept[device_id] = TokenBucket(self._keep_rate, now)
        if bucket.available(now) < 1:
            return False
        bucket.take(1)
        return True

    async def record(self, device_id: str, status: Status) -> None:
        """Count a refused frame; quarantine the device when its score reaches the threshold."""
        weight = min(WEIGHTS.get(status, 0), self._threshold)
        if weight and device_id not in self._quarantined:
            crossed = self._score_here(device_id, weight)
            if not crossed and self._shared is not None:
                crossed = await self._score_shared(self._shared, device_id, weight)
            if crossed and device_id not in self._quarantined:
                reason = (
                    REASON_FOREIGN_IDENTITY
                    if status is Status.FOREIGN_IDENTITY
                    else REASON_REPEATED
                )
                self._quarantined[device_id] = reason
                self._scores.pop(device_id, None)
                self._unreported.add(device_id)
                _log.warning("device quarantined", device_id=device_id, reason=reason)
        await self.report(device_id)

    def _score_here(self, device_id: str, weight: int) -> bool:
        """Add to this process's score; whether it reached the threshold."""
        now = self._now()
        events = self._scores.setdefault(device_id, deque())
        events.append((now, weight))
        while events and events[0][0] <= now - self._window:
            events.popleft()
        return sum(w for _t, w in events) >= self._threshold

    async def _score_shared(self, shared: SharedScores, device_id: str, weight: int) -> bool:
        """Add to the replicas' score; whether this frame reached the threshold there. On a
        Redis error, False: the decision rests on this process's score (already counted)."""
        try:
            return await shared.add(
                device_id,
                weight,
                now_ms=self._wall_ms(),
                threshold=self._threshold,
                window_ms=int(self._window * 1000),
            )
        except ScoresUnavailable as exc:
            self._warn_unshared(exc)
            return False

    def _forget_shared(self, device_id: str) -> None:
        """A released device starts from nothing on every replica too (in the background:
        release() is called synchronously from the gateway)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop, no connection to use; the score expires within a window
        task = loop.create_task(self._forget(device_id))
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)

    async def _forget(self, device_id: str) -> None:
        if self._shared is None:
            return
        try:
            await self._shared.forget(device_id)
        except ScoresUnavailable as exc:  # the score expires within a window
            self._warn_unshared(exc)

    def _warn_unshared(self, exc: ScoresUnavailable) -> None:
        if self._unshared.due(self._now()):
            # The exception's type and message only: never the URL (it may hold a password).
            _log.warning("quarantine scores not shared, scoring in this process", error=str(exc))

    async def close(self) -> None:
        """Finish the pending releases and close the shared scores."""
        if self._forgetting:
            await asyncio.gather(*self._forgetting, return_exceptions=True)
        if self._shared is not None:
            await self._shared.close()

    async def report(self, device_id: str) -> None:
        """Tell the devices capability, retrying on the device's next frame if that failed
        (the local quarantine holds meanwhile: failing to report never lets data through)."""
        if device_id not in self._unreported:
            return
        try:
            async with asyncio.timeout(STATUS_PORT_TIMEOUT_S):
                await self._status.quarantine(device_id, self._quarantined[device_id])
        except Exception as exc:  # reported by type; retried on the device's next frame
            _log.error("device quarantine not reported", error=type(exc).__name__)
            return
        self._unreported.discard(device_id)
