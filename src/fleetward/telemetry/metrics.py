"""Fleet-wide telemetry metrics over sliding windows, so a sudden fleet-wide change shows.

Per catalogued signal: how many accepted messages carried it and the mean of its values
(booleans as 0/1) per window. Per status: how many frames were refused. Clock drift reports
are counted too. Counts go into one-second buckets kept for the longest window; a snapshot
sums the buckets of each window. A signal whose short-window rate departs from its
long-window rate (a fleet going quiet, or a flood of door-unlock events) is visible as the
``change`` ratio.

A window's rate is its count over the part of the window the process has been counting
(``MetricsSnapshot.covered``), not over the whole window: a process started 30 s ago saw
30 s of a 300 s window, and dividing by 300 would put a steady fleet's long-window rate at a
tenth of its short-window rate, the shape of a flood, after every restart (a false
``telemetry-volume`` alert each time the fleet reconnected). The price: a flood already under
way when the process starts is its own baseline until the long window holds normal traffic.

Recording takes the validated signals as a tuple in catalogue order (absent ones UNSET) and
costs two list updates per present signal. Not thread-safe: one event loop.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from msgspec import UNSET

from fleetward.telemetry.errors import Status
from fleetward.telemetry.freshness import DriftReport

Monotonic = Callable[[], float]
DEFAULT_WINDOWS = (10, 60, 300)


# Devices counted per second for their quota refusals (a bound on a flood of identities).
MAX_QUOTA_DEVICES: Final = 10_000


class _Bucket:
    __slots__ = ("counts", "drift", "index", "quota_devices", "refused", "sums")

    def __init__(self, index: int, signals: int) -> None:
        self.index = index
        self.counts = [0] * signals
        self.sums = [0.0] * signals
        self.refused: dict[str, int] = {}
        self.quota_devices: dict[str, int] = {}
        self.drift = 0


@dataclass(frozen=True, slots=True)
class SignalWindow:
    messages_per_s: float
    mean: float | None


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    windows: tuple[int, ...]
    # path -> window seconds -> rate and mean.
    signals: Mapping[str, Mapping[int, SignalWindow]] = field(default_factory=dict)
    # status slug -> window seconds -> refusals per second.
    refused: Mapping[str, Mapping[int, float]] = field(default_factory=dict)
    drift_reports: Mapping[int, int] = field(default_factory=dict)
    # path -> rate over the shortest window / rate over the longest (1.0 = steady).
    change: Mapping[str, float] = field(default_factory=dict)
    # device id -> frames refused for its quota over the shortest window (a device sending
    # above its rate: the per-device half of abnormal volume).
    quota_devices: Mapping[str, int] = field(default_factory=dict)
    # window seconds -> the seconds of it the process has counted (the rates' divisor).
    covered: Mapping[int, int] = field(default_factory=dict)


class TelemetryMetrics:
    def __init__(
        self,
        paths: Sequence[str],
        *,
        windows: tuple[int, ...] = DEFAULT_WINDOWS,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        if not windows or min(windows) < 1:
            raise ValueError("windows are whole seconds, at least one")
        self._paths = tuple(paths)
        self._windows = tuple(sorted(set(windows)))
        self._horizon = self._windows[-1]
        self._now = monotonic
        self._started = int(monotonic())
        self._buckets: deque[_Bucket] = deque()

    def _bucket(self) -> _Bucket:
        index = int(self._now())
        buckets = self._buckets
        if buckets and buckets[-1].index == index:
            return buckets[-1]
        bucket = _Bucket(index, len(self._paths))
        buckets.append(bucket)
        while buckets[0].index <= index - self._horizon:
            buckets.popleft()
        return bucket

    def accepted(self, values: Sequence[object]) -> None:
        """Count one accepted message: ``values`` in catalogue order, absent ones UNSET."""
        bucket = self._bucket()
        counts, sums = bucket.counts, bucket.sums
        for position, value in enumerate(values):
            if value is not UNSET:
                counts[position] += 1
                sums[position] += value  # type: ignore[operator]

    def refused(self, status: Status, device_id: str | None = None) -> None:
        bucket = self._bucket()
        refused = bucket.refused
        refused[status.slug] = refused.get(status.slug, 0) + 1
        if status is Status.QUOTA_EXCEEDED and device_id is not None:
            devices = bucket.quota_devices
            if device_id in devices or len(devices) < MAX_QUOTA_DEVICES:
                devices[device_id] = devices.get(device_id, 0) + 1

    def drift(self, _report: DriftReport) -> None:
        self._bucket().drift += 1

    def snapshot(self) -> MetricsSnapshot:
        now_index = int(self._now())
        # Whole seconds counted of each window, the current one included.
        counted = now_index - self._started + 1
        covered = {window: max(1, min(window, counted)) for window in self._windows}
        counts: dict[str, dict[int, int]] = {}
        sums: dict[str, dict[int, float]] = {}
        refused: dict[str, dict[int, float]] = {}
        drift = dict.fromkeys(self._windows, 0)
        quota_devices: dict[str, int] = {}
        for bucket in self._buckets:
            age = now_index - bucket.index
            if age < self._windows[0]:
                for device_id, count in bucket.quota_devices.items():
                    quota_devices[device_id] = quota_devices.get(device_id, 0) + count
            for window in self._windows:
                if age >= window:
                    continue
                for path, count, total in zip(self._paths, bucket.counts, bucket.sums, strict=True):
                    if not count:
                        continue
                    per_window = counts.setdefault(path, {})
                    per_window[window] = per_window.get(window, 0) + count
                    sum_window = sums.setdefault(path, {})
                    sum_window[window] = sum_window.get(window, 0.0) + total
                for slug, count in bucket.refused.items():
                    refused_window = refused.setdefault(slug, {})
                    refused_window[window] = refused_window.get(window, 0) + count / covered[window]
                drift[window] += bucket.drift
        signals = {
            path: {
                window: SignalWindow(
                    messages_per_s=per_window.get(window, 0) / covered[window],
                    mean=(sums[path][window] / per_window[window])
                    if window in per_window
                    else None,
                )
                for window in self._windows
            }
            for path, per_window in counts.items()
        }
        short, long = self._windows[0], self._windows[-1]
        change = {
            path: (stats[short].messages_per_s / stats[long].messages_per_s)
            for path, stats in signals.items()
            if stats[long].messages_per_s > 0
        }
        return MetricsSnapshot(
            self._windows, signals, refused, drift, change, quota_devices, covered
        )
