"""The background task the app's lifespan starts: evaluate new audit events, sample the
telemetry pipeline's fleet-wide rates, sleep, again. It never stops on an error (it logs the
error's type and tries again next round); stopping it cancels it between steps."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable

from starlette.routing import BaseRoute

from fleetward.catalog.entry import Lifecycle
from fleetward.catalog.inventory import inventory
from fleetward.detection import cursor, raising
from fleetward.detection.config import CONFIG_FILE, DetectionConfig, load
from fleetward.detection.evaluator import Evaluator
from fleetward.detection.rules import build_rules
from fleetward.detection.telemetry import FleetRates, FleetTelemetryVolume
from fleetward.observability.logging import get_logger
from fleetward.platform import Platform
from fleetward.telemetry.metrics import MetricsSnapshot

_log = get_logger("fleetward.detection")

MetricsSource = Callable[[], MetricsSnapshot]


def deprecated_routes(routes: Iterable[BaseRoute]) -> frozenset[str]:
    """Names of the routes whose catalog entry is deprecated (audit events carry the name)."""
    items = inventory(list(routes))
    return frozenset(i.name for i in items if i.entry.lifecycle is Lifecycle.DEPRECATED)


class DetectionRuntime:
    def __init__(
        self,
        platform: Platform,
        config: DetectionConfig,
        *,
        metrics: MetricsSource | None = None,
    ) -> None:
        self._platform = platform
        self._config = config
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        # Route names whose catalog entry is deprecated: known once every route is mounted.
        self._deprecated: frozenset[str] = frozenset()
        self.evaluator = Evaluator(
            platform.unit_of_work,
            platform.clock,
            platform.audit,
            lambda: build_rules(config.rules, self._deprecated),
            config.evaluator,
        )
        self._fleet = FleetTelemetryVolume(config.rules.telemetry_volume)

    @classmethod
    def build(cls, platform: Platform, metrics: MetricsSource | None = None) -> DetectionRuntime:
        """Thresholds from ``<data_dir>/detection.toml`` when present (an invalid file refuses
        to start: :class:`fleetward.detection.config.ConfigInvalid`)."""
        config = load(platform.settings.data_dir / CONFIG_FILE)
        return cls(platform, config, metrics=metrics)

    def watch_routes(self, routes: Iterable[BaseRoute]) -> None:
        """Know which of ``routes`` are deprecated (rules built from now on use them)."""
        self._deprecated = deprecated_routes(routes)
        self.evaluator.rebuild()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self, routes: Iterable[BaseRoute] = ()) -> None:
        """Follow the audit log in a background task (started once)."""
        self.watch_routes(routes)
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="fleetward-detection")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def round(self) -> None:
        """One round: every new event evaluated, then one telemetry sample."""
        await self.evaluator.run_until_idle()
        await self.sample_telemetry()

    async def sample_telemetry(self) -> int:
        """Judge the pipeline's rates once there is a baseline to judge them against:
        :func:`baseline_seconds` of traffic counted in the long window (the metrics know how
        long they have counted: ``telemetry/metrics.py``). Alerts raised or counted."""
        rules = self._config.rules.telemetry_volume
        if self._metrics is None or not rules.enabled:
            return 0
        rates = FleetRates.of(self._metrics())
        if rates.counted < baseline_seconds(rates, rules.rate_factor):
            return 0
        findings = self._fleet.sample(rates, self._platform.clock.now())
        if not findings:
            return 0
        # Alerts are read, counted and written back: this takes its turn with the other
        # replicas' samples and evaluator steps (the cursor's lock, as a step does), or two
        # at once would both count from the same value and one sample would be lost.
        async with self._platform.unit_of_work(write_lock=True) as uow:
            await cursor.read(uow.session, lock=True)
            await raising.apply(
                uow.session,
                self._platform.audit,
                findings,
                evidence_cap=self._config.evaluator.evidence_cap,
            )
            await uow.commit()
        return len(findings)

    async def _run(self) -> None:
        while True:
            try:
                await self.round()
            except Exception as exc:  # keep following; the next round retries from the cursor
                _log.error("detection round failed", error_type=type(exc).__name__)
            await asyncio.sleep(self._config.evaluator.poll_seconds)


def baseline_seconds(rates: FleetRates, rate_factor: float) -> float:
    """How long after start the fleet-wide rule can judge: the long window, or as soon as it
    holds ``2 * rate_factor`` short windows if that is sooner (100 s with the defaults, where
    waiting for the whole window left every restart blind to a flood for 300 s). Over a
    baseline of B seconds, the short window's share is at most B / short of it, so a baseline
    shorter than ``rate_factor`` short windows could never show a surge; at twice that, a
    flood of ~9x the fleet's rate shows at once, ~6x once the window has filled."""
    return min(float(rates.long_window), 2 * rate_factor * rates.short_window)
