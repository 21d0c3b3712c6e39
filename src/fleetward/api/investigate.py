"""Investigation on the admin surface (``/admin/v1/investigations``): the chain of one
request, the blast radius of a compromised credential or source address, governance figures.

Each route asks the PDP for ``admin:investigate`` on the platform itself (policy
``platform-admin``): the audit log spans every tenant, so this is a platform function and
anyone else is refused with 403. Every blast-radius query is itself an audit event.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

from fastapi import Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse

from fleetward.api.auth import Caller, authenticate
from fleetward.api.authorize import authorize
from fleetward.api.objects import Instant, object_entry, platform_of
from fleetward.api.routing import surface_router
from fleetward.audit.governance import command_figures, data_figures, route_figures
from fleetward.audit.investigate import (
    BlastQuery,
    CommandCursor,
    Subject,
    TraceCursor,
    VehicleCursor,
    trace_request,
)
from fleetward.audit.operations import investigate
from fleetward.audit.recorder import Actor
from fleetward.authz.decision import THE_PLATFORM
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, Impact, catalogued
from fleetward.catalog.inventory import inventory
from fleetward.core.errors import InvalidInput
from fleetward.core.surfaces import Surface

OWNER: Final = "security-team"
PERMISSION: Final = Permission.ADMIN_INVESTIGATE
PLATFORM: Final = THE_PLATFORM

Key = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
Cursor = Annotated[str | None, Query(min_length=3, max_length=24, pattern=r"^[0-9]+\.[0-9]+$")]
CommandsCursor = Annotated[str | None, Query(min_length=1, max_length=19, pattern=r"^[0-9]+$")]
VehiclesCursor = Annotated[
    str | None, Query(min_length=3, max_length=21, pattern=r"^[0-9]\.[0-9]+$")
]
# An id, or for ``source-ip`` an address or a CIDR network (checked by BlastQuery).
Value = Annotated[str | None, Query(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@/-]+$")]

router = surface_router(Surface.ADMIN)
investigator = Depends(authenticate(Surface.ADMIN))


def _entry(purpose: str) -> CatalogEntry:
    return object_entry(
        Surface.ADMIN,
        purpose,
        PERMISSION,
        DataClass.INTERNAL,
        owner=OWNER,
        objects=("audit_log",),
        tags=("investigation",),
        caller=CallerType.ADMIN,
        impact=frozenset({Impact.OPERATIONAL, Impact.PRIVACY}),
        rate=30,
    )


@router.get("/investigations/requests/{key}", name="admin:investigations:request")
@catalogued(_entry("the chain of one request or trace: caller, token, vehicles, jobs, telemetry"))
async def request_chain(
    key: Key, request: Request, cursor: Cursor = None, caller: Caller = investigator
) -> Any:
    # A page of the records, the decisive ones first; ``truncated`` and ``next_cursor`` when
    # more follow (a trace id is the caller's to choose: anyone may add records to it).
    try:
        after = TraceCursor.parse(cursor) if cursor is not None else None
    except ValueError as exc:
        raise InvalidInput(str(exc), reason="cursor") from None
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await authorize(request, caller, PERMISSION, PLATFORM, object_route=False, ctx=ctx)
        trace = await trace_request(ctx.session, key, cursor=after)
        await uow.commit()
    return trace.to_json()


@router.get("/investigations/blast-radius", name="admin:investigations:blast_radius")
@catalogued(
    _entry("every vehicle, command and read of a compromised credential, address or window")
)
async def blast(
    request: Request,
    subject: Subject,
    value: Value = None,
    since: Instant | None = None,
    until: Instant | None = None,
    output: Literal["json", "csv"] = "json",
    cursor: CommandsCursor = None,
    vehicles_cursor: VehiclesCursor = None,
    summaries: bool | None = None,
    caller: Caller = investigator,
) -> Any:
    # Reads are complete; vehicles and commands are pages, with ``truncated`` and
    # ``lists.<list>.next_cursor`` when more follow (``?vehicles_cursor=`` and ``?cursor=``
    # for the next page of each). A CSV (the vehicles) says so in its headers. Who acted
    # (principals, clients, tokens, families, addresses) is listed unless ?summaries=false,
    # and for the broad sweeps (window, client, partner) only with ?summaries=true.
    try:
        query = BlastQuery(subject, value, since, until)
    except ValueError as exc:
        raise InvalidInput(str(exc), reason=_reason(subject)) from None
    try:
        after = CommandCursor.parse(cursor) if cursor is not None else None
        vehicles_after = (
            VehicleCursor.parse(vehicles_cursor) if vehicles_cursor is not None else None
        )
    except ValueError as exc:
        raise InvalidInput(str(exc), reason="cursor") from None
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await authorize(request, caller, PERMISSION, PLATFORM, object_route=False, ctx=ctx)
        result = await investigate(
            ctx,
            query,
            actor=Actor.user(caller.claims.sub, caller.claims.tenant),
            cursor=after,
            vehicles_cursor=vehicles_after,
            summaries=summaries,
        )
        await uow.commit()
    if output == "csv":
        headers = {"Fleetward-Vehicles-Total": str(result.vehicles_total)}
        if result.vehicles_next_cursor is not None:
            headers["Fleetward-Vehicles-Next-Cursor"] = result.vehicles_next_cursor
        return PlainTextResponse(result.to_csv(), media_type="text/csv", headers=headers)
    return result.to_json()


def _reason(subject: Subject) -> str | None:
    return "source-ip" if subject is Subject.SOURCE_IP else None


@router.get("/investigations/figures", name="admin:investigations:figures")
@catalogued(_entry("governance figures from the catalog, policies and audit log"))
async def figures(request: Request, caller: Caller = investigator) -> Any:
    platform = platform_of(request)
    items = inventory(request.app.router.routes)
    async with platform.services() as (uow, ctx):
        await authorize(request, caller, PERMISSION, PLATFORM, object_route=False, ctx=ctx)
        data = await data_figures(ctx.session, items, now=platform.clock.now())
        await uow.commit()
    return {"routes": route_figures(items, None), "commands": command_figures(), "audit": data}


__all__ = ["router"]
