"""``executed`` becomes ``confirmed`` when the vehicle's own telemetry, received after its
signed result, shows the command's effect (``CommandSpec.effect``: the lock signal for lock
and unlock, the charging signal for charging). Commands without an observable effect end at
``executed``."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from fleetward.commands import jobs
from fleetward.commands.families import BY_PERMISSION
from fleetward.commands.models import CommandJob, JobState
from fleetward.services import ServiceContext
from fleetward.telemetry.models import TelemetryMessage


async def confirm_effects(
    ctx: ServiceContext, now: datetime, *, window: timedelta, batch: int
) -> list[str]:
    """Confirm executed jobs whose effect shows in telemetry received after their result;
    the ids of the jobs confirmed. The caller commits."""
    # Only commands whose effect telemetry can show, newest answers first: a job of another
    # family, or one past the window, is never read again.
    observable = [p for p, spec in BY_PERMISSION.items() if spec.effect is not None]
    executed = list(
        await ctx.session.scalars(
            select(CommandJob)
            .where(
                CommandJob.state == JobState.EXECUTED,
                CommandJob.command.in_(observable),
                CommandJob.result_at >= now - window,
            )
            .order_by(CommandJob.result_at.desc())
            .limit(batch)
        )
    )
    # The confirmations' time is read after the jobs: an answer recorded between the sweep's
    # start (``now``) and that read would otherwise be followed by a confirmation dated before
    # it (its transitions out of order).
    at = ctx.clock.now()
    confirmed: list[str] = []
    for job in executed:
        spec = BY_PERMISSION.get(job.command)
        expected = spec.expected(job.parameters) if spec is not None else None
        if expected is None or job.result_at is None:
            continue
        signal, value = expected
        latest = await ctx.session.scalar(
            select(TelemetryMessage.signals)
            .where(
                TelemetryMessage.vehicle_id == job.vehicle_id,
                TelemetryMessage.received_at >= job.result_at,
            )
            .order_by(TelemetryMessage.device_time.desc(), TelemetryMessage.sequence.desc())
            .limit(1)
        )
        if latest is not None and latest.get(signal) is value:
            jobs.move(
                ctx.session,
                ctx.audit,
                job,
                JobState.CONFIRMED,
                reason=f"telemetry:{signal.rsplit('.', 1)[-1]}",
                at=max(at, job.updated_at),
            )
            confirmed.append(job.id)
    return confirmed
