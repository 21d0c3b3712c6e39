"""The read side of command jobs (``/vehicles/{vehicle_id}/commands``) on the mobile, fleet
and dealer surfaces.

A job is visible when it is inside the caller's history window AND the caller is allowed the
job's own command family on the vehicle now: a driver allowed to lock sees lock jobs, never
unlock jobs; a technician with an open case sees the diagnostics runs of the case's vehicle
(theirs and the owner's, in the keeper's window), never its lock or unlock jobs, and nothing
once the case is closed. Families are decided one by one (there are few), and the list is
then filtered in the query to the allowed families. The decision is the plain one: a command
family that needs a recent multi-factor sign-in is only listed to a caller who has one (fail
closed).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from fastapi import APIRouter, Request
from sqlalchemy import select

from fleetward.api.auth import Caller
from fleetward.api.authorize import not_found
from fleetward.api.history_records import NONE, Cursor, Limit, entry, may, window
from fleetward.api.history_views import JobDetail, JobView, job_detail, job_view
from fleetward.api.objects import (
    Page,
    cut_page,
    decode_cursor,
    encode_cursor,
    page_size,
    platform_of,
)
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import DataClass, catalogued
from fleetward.commands.models import CommandJob, JobTransition
from fleetward.commands.states import RANK
from fleetward.core.surfaces import Surface
from fleetward.services import ServiceContext

_COMMANDS: Final = {p.value: p for p in Permission if p.value.startswith("vehicle:")}


async def _visible_commands(
    request: Request, caller: Caller, vehicle_id: str, since: datetime, ctx: ServiceContext
) -> list[str]:
    """The command families of the vehicle's jobs (in the window) that the caller is allowed
    now: a driver allowed to lock sees lock jobs, never unlock jobs. One decision per family."""
    present = await ctx.session.scalars(
        select(CommandJob.command)
        .where(CommandJob.vehicle_id == vehicle_id, CommandJob.created_at >= since)
        .distinct()
    )
    families = sorted({_COMMANDS[c] for c in present if c in _COMMANDS})  # unknown: hidden
    visible: list[str] = []
    for family in families:
        if await may(request, caller, family, vehicle_id, ctx):
            visible.append(family.value)
    return visible


async def list_jobs(
    request: Request, caller: Caller, vehicle_id: str, limit: int, cursor: str | None
) -> Page[JobView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        since = await window(request, caller, Permission.VEHICLE_READ_STATUS, vehicle_id, ctx, NONE)
        rows: list[CommandJob] = []
        more = False
        if since is not None:
            visible = await _visible_commands(request, caller, vehicle_id, since, ctx)
            query = select(CommandJob).where(
                CommandJob.vehicle_id == vehicle_id,
                CommandJob.created_at >= since,
                CommandJob.command.in_(visible),
            )
            if after is not None:
                query = query.where(CommandJob.id > after)
            found = await ctx.session.scalars(query.order_by(CommandJob.id).limit(size + 1))
            rows, more = cut_page(list(found), size)
        await uow.commit()
    return Page[JobView](
        items=[job_view(job, caller.claims.sub) for job in rows],
        next_cursor=encode_cursor(rows[-1].id) if more else None,
    )


async def read_job(request: Request, caller: Caller, vehicle_id: str, job_id: str) -> JobDetail:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        since = await window(request, caller, Permission.VEHICLE_READ_STATUS, vehicle_id, ctx, NONE)
        if since is None:
            raise not_found()
        job = await ctx.session.scalar(
            select(CommandJob).where(
                CommandJob.id == job_id,
                CommandJob.vehicle_id == vehicle_id,
                CommandJob.created_at >= since,
            )
        )
        family = _COMMANDS.get(job.command) if job is not None else None
        if job is None or family is None:
            raise not_found()
        if not await may(request, caller, family, vehicle_id, ctx):
            await uow.commit()  # the denial's audit record
            raise not_found()
        transitions = sorted(
            await ctx.session.scalars(select(JobTransition).where(JobTransition.job_id == job.id)),
            key=lambda t: (t.at, RANK[t.to_state]),
        )
        await uow.commit()
    return job_detail(job, caller.claims.sub, transitions)


def job_routes(router: APIRouter, surface: Surface, authenticated: Any) -> None:
    """List and read of a vehicle's command jobs on ``surface``."""
    s = surface.value
    status_read = Permission.VEHICLE_READ_STATUS

    @router.get(
        "/vehicles/{vehicle_id}/commands",
        name=f"{s}:commands:list",
        response_model=Page[JobView],
    )
    @catalogued(
        entry(
            surface,
            "a vehicle's command jobs of the families the caller may send, in their window",
            status_read,
            DataClass.VEHICLE_STATE,
            ("command_job",),
        )
    )
    async def list_commands(
        vehicle_id: str,
        request: Request,
        caller: Caller = authenticated,
        limit: Limit = 50,
        cursor: Cursor = None,
    ) -> Page[JobView]:
        return await list_jobs(request, caller, vehicle_id, limit, cursor)

    @router.get(
        "/vehicles/{vehicle_id}/commands/{job_id}",
        name=f"{s}:commands:read",
        response_model=JobDetail,
    )
    @catalogued(
        entry(
            surface,
            "one command job of a vehicle and its transitions",
            status_read,
            DataClass.VEHICLE_STATE,
            ("command_job",),
        )
    )
    async def read_command(
        vehicle_id: str, job_id: str, request: Request, caller: Caller = authenticated
    ) -> JobDetail:
        return await read_job(request, caller, vehicle_id, job_id)


__all__ = ["job_routes"]
