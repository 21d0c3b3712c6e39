"""OTA campaigns on the admin surface (``/admin/v1/ota/campaigns``): engineering's function.

Every route asks the PDP for ``ota:manage_campaign`` on the platform itself (policy
``engineer-ota``); it is a function, so anyone else (a platform admin, a support agent) is
refused with 403, whatever the campaign id. Writes need a recent multi-factor sign-in: a
campaign that becomes active changes the software of every vehicle of its model. Campaigns
carry no personal data; their reach is reported as a count of vehicles, never as ids.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Final

from fastapi import Depends, Request
from pydantic import BaseModel, StringConstraints

from fleetward.api.auth import Caller, StepUp, authenticate
from fleetward.api.authorize import authorize
from fleetward.api.bodies import StrictBody
from fleetward.api.objects import (
    Cursor,
    Limit,
    Page,
    cut_page,
    decode_cursor,
    encode_cursor,
    object_entry,
    page_size,
    platform_of,
)
from fleetward.api.routing import surface_router
from fleetward.audit.recorder import Actor
from fleetward.authz.decision import THE_PLATFORM
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, Impact, catalogued
from fleetward.core.surfaces import Surface
from fleetward.ota.campaigns import CampaignService, CampaignSpec
from fleetward.ota.models import CampaignStatus, OtaCampaign
from fleetward.services import ServiceContext

OWNER: Final = "ota-team"
PERMISSION: Final = Permission.OTA_MANAGE_CAMPAIGN
PLATFORM: Final = THE_PLATFORM

# Printable ASCII without leading or trailing space: names end up in logs and audit records.
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=100, pattern=r"^[!-~](?:[ -~]*[!-~])?$")
]
Version = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
]

router = surface_router(Surface.ADMIN)
engineer = Depends(authenticate(Surface.ADMIN))
stepped_up_engineer = Depends(authenticate(Surface.ADMIN, step_up=StepUp()))


class CampaignView(BaseModel):
    id: str
    name: str
    target_model: str
    from_version: str | None
    to_version: str
    status: CampaignStatus
    # How many registered vehicles are of the target model: a count, never ids.
    target_vehicles: int
    created_at: datetime
    updated_at: datetime


class CampaignBody(StrictBody):
    name: Name
    target_model: Name
    from_version: Version | None = None
    to_version: Version


class StatusBody(StrictBody):
    status: CampaignStatus


def _entry(purpose: str, *, writes: bool = False) -> CatalogEntry:
    impact = {Impact.OPERATIONAL} | ({Impact.SAFETY} if writes else set())
    return object_entry(
        Surface.ADMIN,
        purpose,
        PERMISSION,
        DataClass.INTERNAL,
        owner=OWNER,
        objects=("ota_campaign",),
        tags=("ota",),
        caller=CallerType.ADMIN,
        impact=frozenset(impact),
        rate=10 if writes else 60,
    )


async def _require_engineer(request: Request, caller: Caller, ctx: ServiceContext) -> None:
    await authorize(request, caller, PERMISSION, PLATFORM, object_route=False, ctx=ctx)


def _actor(caller: Caller) -> Actor:
    return Actor.user(caller.claims.sub, caller.claims.tenant)


async def _views(service: CampaignService, campaigns: list[OtaCampaign]) -> list[CampaignView]:
    counts = await service.target_counts([c.target_model for c in campaigns])
    return [
        CampaignView(
            id=c.id,
            name=c.name,
            target_model=c.target_model,
            from_version=c.from_version,
            to_version=c.to_version,
            status=c.status,
            target_vehicles=counts.get(c.target_model, 0),
            created_at=c.created_at,
            updated_at=c.updated_at,
        )
        for c in campaigns
    ]


@router.get("/ota/campaigns", name="admin:ota:campaigns:list", response_model=Page[CampaignView])
@catalogued(_entry("the OTA campaigns, a page at a time, with the size of their target"))
async def list_campaigns(
    request: Request,
    caller: Caller = engineer,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CampaignView]:
    platform = platform_of(request)
    size = page_size(platform, limit)
    after = decode_cursor(cursor)
    async with platform.services() as (uow, ctx):
        await _require_engineer(request, caller, ctx)
        service = CampaignService(ctx)
        page, more = cut_page(await service.page(after, size), size)
        items = await _views(service, page)
        await uow.commit()
    return Page[CampaignView](items=items, next_cursor=encode_cursor(page[-1].id) if more else None)


@router.post(
    "/ota/campaigns",
    name="admin:ota:campaigns:create",
    status_code=201,
    response_model=CampaignView,
)
@catalogued(_entry("creates an OTA campaign (as a draft) for a vehicle model", writes=True))
async def create_campaign(
    body: CampaignBody, request: Request, caller: Caller = stepped_up_engineer
) -> CampaignView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require_engineer(request, caller, ctx)
        service = CampaignService(ctx)
        spec = CampaignSpec(
            name=body.name,
            target_model=body.target_model,
            from_version=body.from_version,
            to_version=body.to_version,
        )
        campaign = await service.create(spec, creator_id=caller.claims.sub, actor=_actor(caller))
        (view,) = await _views(service, [campaign])
        await uow.commit()
    return view


@router.get(
    "/ota/campaigns/{campaign_id}", name="admin:ota:campaigns:read", response_model=CampaignView
)
@catalogued(_entry("one OTA campaign and the size of its target"))
async def read_campaign(
    campaign_id: str, request: Request, caller: Caller = engineer
) -> CampaignView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require_engineer(request, caller, ctx)
        service = CampaignService(ctx)
        (view,) = await _views(service, [await service.get(campaign_id)])
        await uow.commit()
    return view


@router.patch(
    "/ota/campaigns/{campaign_id}",
    name="admin:ota:campaigns:status",
    response_model=CampaignView,
)
@catalogued(
    _entry(
        "moves a campaign along its lifecycle (draft->active, active<->paused, ->completed)",
        writes=True,
    )
)
async def change_status(
    campaign_id: str, body: StatusBody, request: Request, caller: Caller = stepped_up_engineer
) -> CampaignView:
    platform = platform_of(request)
    async with platform.services() as (uow, ctx):
        await _require_engineer(request, caller, ctx)
        service = CampaignService(ctx)
        campaign = await service.get(campaign_id)
        await service.change_status(campaign, body.status, actor=_actor(caller))
        (view,) = await _views(service, [campaign])
        await uow.commit()
    return view


__all__ = ["router"]
