"""A confirmation is never dated before the answer it confirms: an answer recorded between a
sweep's start and its read of executed jobs is followed by a confirmation read after it."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from fleetward.commands.confirm import confirm_effects
from fleetward.commands.families import BY_PERMISSION
from fleetward.commands.models import CommandJob, JobState, JobTransition
from fleetward.core.clock import FrozenClock
from fleetward.identity.models import TenantKind
from fleetward.platform import Platform
from support.factories import WorldFactory, accepted_message


async def test_a_confirmation_follows_an_answer_recorded_after_the_sweep_began(
    platform: Platform, clock: FrozenClock
) -> None:
    sweep_began = clock.now()
    answered = sweep_began + timedelta(seconds=1)  # recorded while the sweep was under way
    signal, value = BY_PERMISSION["vehicle:lock"].expected({}) or ("", False)
    async with platform.services() as (uow, ctx):
        world = WorldFactory(ctx)
        tenant = await world.tenant(TenantKind.CONSUMER)
        vehicle = await world.vehicle(tenant)
        job = CommandJob(
            id="job_confirmtest00000000000000",
            vehicle_id=vehicle.id,
            tenant_id=tenant.id,
            command="vehicle:lock",
            parameters={},
            state=JobState.EXECUTED,
            requested_by="usr_x",
            client_id="fleetward-mobile",
            created_at=sweep_began - timedelta(seconds=5),
            expires_at=sweep_began + timedelta(minutes=1),
            updated_at=answered,
            result_at=answered,
        )
        ctx.session.add(job)
        ctx.session.add(
            JobTransition(
                id="jtr_confirmtest0000000000000",
                job_id=job.id,
                from_state=JobState.DELIVERED,
                to_state=JobState.EXECUTED,
                at=answered,
                reason="ok",
            )
        )
        reported = answered + timedelta(milliseconds=50)
        ctx.session.add(
            accepted_message(
                vehicle, reported, {signal: value}, received_after=timedelta(milliseconds=50)
            )
        )
        await uow.commit()
    clock.set(answered + timedelta(seconds=1))
    async with platform.services() as (uow, ctx):
        confirmed = await confirm_effects(ctx, sweep_began, window=timedelta(minutes=5), batch=10)
        await uow.commit()
    assert confirmed == [job.id]
    async with platform.unit_of_work() as uow:
        moves = {
            t.to_state: t.at
            for t in await uow.session.scalars(
                select(JobTransition).where(JobTransition.job_id == job.id)
            )
        }
    assert moves[JobState.CONFIRMED] >= moves[JobState.EXECUTED]
