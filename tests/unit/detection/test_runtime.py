"""The runtime's fleet-wide telemetry sample: judged only once there is a baseline (twice
rate_factor short windows, or the long window), then raised and counted as alerts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.alerts import Alert
from fleetward.detection import raising
from fleetward.detection.config import DetectionConfig
from fleetward.detection.runtime import DetectionRuntime
from fleetward.platform import Platform
from fleetward.telemetry.metrics import MetricsSnapshot, SignalWindow
from support.locks import TurnWatch


def flood(counted: int) -> MetricsSnapshot:
    """A surge, ``counted`` seconds into the metrics' 300 s window."""
    surge = {10: SignalWindow(80.0, 1.0), 60: SignalWindow(20.0, 1.0), 300: SignalWindow(4.0, 1.0)}
    covered = {10: min(10, counted), 60: min(60, counted), 300: counted}
    return MetricsSnapshot((10, 60, 300), {"doors.locked": surge}, covered=covered)


async def test_fleet_sample_waits_for_a_baseline(platform: Platform) -> None:
    counted = [99]  # 2 x rate_factor (5) x the short window (10 s) = 100 s
    runtime = DetectionRuntime(platform, DetectionConfig(), metrics=lambda: flood(counted[0]))
    assert await runtime.sample_telemetry() == 0
    counted[0] += 1
    assert await runtime.sample_telemetry() == 1
    assert await runtime.sample_telemetry() == 1
    async with platform.unit_of_work() as uow:
        (alert,) = list(await uow.session.scalars(select(Alert)))
    assert alert.rule == "telemetry-volume" and alert.subject_id == "doors.locked"
    assert alert.count == 2 and alert.evidence == []


async def test_replicas_sampling_at_once_count_every_sample(
    platform: Platform, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every replica samples its own pipeline and judges the same fleet-wide signal: two
    # samples at once must both count on the alert. The first has read the alert (count 1)
    # and is about to write count 2 when the second samples: the second must wait for it,
    # not read count 1 too and leave the alert at 2 (a lost update).
    one, two = (
        DetectionRuntime(platform, DetectionConfig(), metrics=lambda: flood(100)) for _ in range(2)
    )
    await one.evaluator.run_until_idle()  # the cursor detection's writers take turns on
    assert await one.sample_telemetry() == 1
    one_read, one_goes_on = asyncio.Event(), asyncio.Event()
    apply = raising.apply

    async def apply_held_before_writing(
        session: AsyncSession, *args: Any, **kwargs: Any
    ) -> list[Alert]:
        if not one_read.is_set():  # the first replica: held once it changed the alert
            flush = session.flush

            async def held_flush(*flush_args: Any, **flush_kwargs: Any) -> None:
                one_read.set()
                await one_goes_on.wait()
                await flush(*flush_args, **flush_kwargs)

            session.flush = held_flush  # type: ignore[method-assign]
        return await apply(session, *args, **kwargs)

    monkeypatch.setattr(raising, "apply", apply_held_before_writing)
    turns = TurnWatch(monkeypatch)
    first = asyncio.create_task(one.sample_telemetry())
    await one_read.wait()
    second = asyncio.create_task(two.sample_telemetry())
    await turns.waiting(platform, backend, second)
    one_goes_on.set()
    assert await asyncio.gather(first, second, return_exceptions=True) == [1, 1]
    async with platform.unit_of_work() as uow:
        (alert,) = list(await uow.session.scalars(select(Alert)))
    assert alert.count == 3
