"""Stage 3: freshness. The counter rises strictly within a session; the device's timestamp is
judged against the server's clock, which alone decides validity.

* counter: each authentic frame consumes its counter before anything else in it is judged,
  its other header fields included (:func:`~fleetward.telemetry.envelope.check_header`, run
  here for that reason), so a frame can never be played twice in a session (a replay is
  refused as one, whatever else is wrong with the frame) and a counter can never be reused
  for different content. Gaps are allowed (a lost frame must not wedge the session).
* live message: ``|device time - server time| <= skew``, else ``clock-drift``. A TCU that
  held a message longer than the skew sends it flagged store-and-forward.
* store-and-forward message: not ahead of the server by more than the skew (``clock-drift``)
  and not older than ``store_forward_max_age`` (``out-of-window``).

Every ``clock-drift`` is reported (device, session, measured drift) to ``on_drift`` so that a
TCU with a wrong clock is visible to operators; the reply carries the server's time, which
the device uses to correct its clock.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from fleetward.gateway.session import DeviceSession
from fleetward.telemetry.envelope import VerifiedFrame, check_header
from fleetward.telemetry.errors import Rejected, Status

DEFAULT_SKEW = timedelta(seconds=30)
DEFAULT_STORE_FORWARD_MAX_AGE = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class DriftReport:
    device_id: str
    session_id: str
    # Device time minus server time: positive when the device's clock is ahead.
    drift_ms: int
    store_and_forward: bool


DriftObserver = Callable[[DriftReport], None]


class FreshnessGuard:
    """Per-session counters. Not thread-safe: one event loop. ``check`` never awaits, so two
    frames of one session handled concurrently cannot both pass with one counter."""

    def __init__(
        self,
        *,
        skew: timedelta = DEFAULT_SKEW,
        store_forward_max_age: timedelta = DEFAULT_STORE_FORWARD_MAX_AGE,
        on_drift: DriftObserver,
    ) -> None:
        if not timedelta(0) < skew <= timedelta(minutes=10):
            raise ValueError("skew must be positive and at most 10 minutes")
        if store_forward_max_age < skew:
            raise ValueError("store_forward_max_age must be at least the skew")
        self._skew_ms = skew // timedelta(milliseconds=1)
        self._max_age_ms = store_forward_max_age // timedelta(milliseconds=1)
        self._on_drift = on_drift
        self._last_counter: dict[str, int] = {}

    def check(self, session: DeviceSession, frame: VerifiedFrame, now_ms: int) -> None:
        """Spend the frame's counter (or refuse it: a replay, a counter reused), then judge
        its other header fields, then its time."""
        last = self._last_counter.get(session.session_id, 0)
        if frame.counter <= last:
            raise Rejected(Status.STALE_COUNTER, "counter not above the last one seen")
        self._last_counter[session.session_id] = frame.counter
        check_header(frame)

        drift = frame.device_time_ms - now_ms
        if drift > self._skew_ms or (not frame.store_and_forward and drift < -self._skew_ms):
            self._on_drift(
                DriftReport(session.device_id, session.session_id, drift, frame.store_and_forward)
            )
            raise Rejected(Status.CLOCK_DRIFT, f"device clock off by {drift} ms")
        if drift < -self._max_age_ms:
            raise Rejected(Status.OUT_OF_WINDOW, "older than the store-and-forward window")

    def forget(self, session_id: str) -> None:
        self._last_counter.pop(session_id, None)
