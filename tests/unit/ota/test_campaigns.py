"""OTA campaign service: the lifecycle is a closed table, every change is audited, nothing
about a campaign names a vehicle or a person."""

from __future__ import annotations

from itertools import product

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.identity.models import Role, TenantKind
from fleetward.ota.campaigns import (
    TRANSITIONS,
    CampaignNotFound,
    CampaignService,
    CampaignSpec,
    DuplicateCampaign,
    InvalidCampaign,
    TransitionRefused,
)
from fleetward.ota.models import CampaignStatus, OtaCampaign
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from support.factories import WorldFactory

S = CampaignStatus
ALLOWED = {
    (S.DRAFT, S.ACTIVE),
    (S.ACTIVE, S.PAUSED),
    (S.PAUSED, S.ACTIVE),
    (S.ACTIVE, S.COMPLETED),
    (S.PAUSED, S.COMPLETED),
}
# The path that reaches each status from a fresh draft.
PATH_TO = {
    S.DRAFT: [],
    S.ACTIVE: [S.ACTIVE],
    S.PAUSED: [S.ACTIVE, S.PAUSED],
    S.COMPLETED: [S.ACTIVE, S.COMPLETED],
}


async def _engineer(ctx: ServiceContext) -> tuple[str, Actor]:
    world = WorldFactory(ctx)
    ops = await world.tenant(TenantKind.OPERATOR)
    user = await world.user(ops, Role.ENGINEER)
    return user.id, Actor.user(user.id, ops.id)


def _spec(name: str = "hauler-2.1", **changes: str | None) -> CampaignSpec:
    values: dict[str, str | None] = {
        "name": name,
        "target_model": "Test",
        "from_version": "2.0.0",
        "to_version": "2.1.0",
    } | changes
    return CampaignSpec(
        name=str(values["name"]),
        target_model=str(values["target_model"]),
        from_version=values["from_version"],
        to_version=str(values["to_version"]),
    )


def test_the_transition_table_is_exactly_the_documented_one() -> None:
    # A lifecycle bug (e.g. a completed campaign re-activated) would push software again.
    table = {(a, b) for a, targets in TRANSITIONS.items() for b in targets}
    assert table == ALLOWED
    assert set(TRANSITIONS) == set(CampaignStatus)


@pytest.mark.parametrize(("start", "target"), list(product(CampaignStatus, CampaignStatus)))
async def test_every_transition_is_checked(
    ctx: ServiceContext, start: CampaignStatus, target: CampaignStatus
) -> None:
    creator, actor = await _engineer(ctx)
    service = CampaignService(ctx)
    campaign = await service.create(_spec(), creator_id=creator, actor=actor)
    for step in PATH_TO[start]:
        await service.change_status(campaign, step, actor=actor)
    assert campaign.status is start
    if (start, target) in ALLOWED:
        await service.change_status(campaign, target, actor=actor)
        assert campaign.status is target
    else:
        # Refused transitions (including "stay where you are") change nothing.
        before = campaign.updated_at
        with pytest.raises(TransitionRefused):
            await service.change_status(campaign, target, actor=actor)
        assert campaign.status is start
        assert campaign.updated_at == before


async def test_create_starts_as_a_draft_and_is_audited(ctx: ServiceContext) -> None:
    creator, actor = await _engineer(ctx)
    service = CampaignService(ctx)
    campaign = await service.create(_spec(), creator_id=creator, actor=actor)
    await service.change_status(campaign, S.ACTIVE, actor=actor)
    assert campaign.created_by_user_id == creator
    events = (
        await ctx.session.scalars(
            select(AuditRecord)
            .where(AuditRecord.object_id == campaign.id)
            .order_by(AuditRecord.occurred_at, AuditRecord.name)
        )
    ).all()
    assert {e.name for e in events} == {
        EventName.OTA_CAMPAIGN_CREATED.value,
        EventName.OTA_CAMPAIGN_STATUS_CHANGED.value,
    }
    change = next(e for e in events if e.name == EventName.OTA_CAMPAIGN_STATUS_CHANGED.value)
    assert change.details == {"from": "draft", "to": "active"}
    assert all(e.actor_id == creator for e in events)


async def test_a_duplicate_name_is_refused(ctx: ServiceContext) -> None:
    # Two campaigns of one name would be confused by whoever activates them.
    creator, actor = await _engineer(ctx)
    service = CampaignService(ctx)
    await service.create(_spec(), creator_id=creator, actor=actor)
    with pytest.raises(DuplicateCampaign):
        await service.create(_spec(to_version="9.9.9"), creator_id=creator, actor=actor)
    count = len((await ctx.session.scalars(select(OtaCampaign))).all())
    assert count == 1


async def test_a_name_taken_by_a_concurrent_create_is_a_duplicate(ctx: ServiceContext) -> None:
    """The name is free when checked, taken when written (another request committed it in
    between): the unique index refuses the row, and that is the duplicate answer."""
    creator, actor = await _engineer(ctx)
    service = CampaignService(ctx)
    first = await service.create(_spec(), creator_id=creator, actor=actor)
    first.name = "renamed-for-the-check"  # the check looks for the name in the store ...
    await ctx.session.flush()
    real_scalar = ctx.session.scalar

    async def name_looks_free(statement: object, *args: object, **kwargs: object) -> object:
        first.name = "hauler-2.1"  # ... and the row takes it back before the new one is written
        await ctx.session.flush()
        return None

    ctx.session.scalar = name_looks_free  # type: ignore[method-assign]
    try:
        with pytest.raises(DuplicateCampaign):
            await service.create(_spec(to_version="9.9.9"), creator_id=creator, actor=actor)
    finally:
        ctx.session.scalar = real_scalar  # type: ignore[method-assign]


async def test_another_integrity_failure_is_not_called_a_duplicate(ctx: ServiceContext) -> None:
    # A creator that is no user breaks the foreign key, not the name's uniqueness.
    _creator, actor = await _engineer(ctx)
    with pytest.raises(IntegrityError):
        await CampaignService(ctx).create(_spec(), creator_id="usr_nobody", actor=actor)


async def test_a_campaign_to_the_same_version_is_refused(ctx: ServiceContext) -> None:
    # A no-op campaign would reflash every vehicle of the model for nothing.
    creator, actor = await _engineer(ctx)
    with pytest.raises(InvalidCampaign):
        await CampaignService(ctx).create(
            _spec(from_version="2.1.0", to_version="2.1.0"), creator_id=creator, actor=actor
        )


async def test_unknown_campaign_is_not_found(ctx: ServiceContext) -> None:
    with pytest.raises(CampaignNotFound):
        await CampaignService(ctx).get("ota_aaaaaaaaaaaaaaaaaaaaaaaaaa")


async def test_target_counts_are_counts_per_model(ctx: ServiceContext) -> None:
    # The reach of a campaign is reported as a number: no vehicle ids leave the service.
    world = WorldFactory(ctx)
    fleet = await world.tenant(TenantKind.FLEET)
    for _ in range(3):
        await world.vehicle(fleet)
    counts = await CampaignService(ctx).target_counts(["Test", "Nothing", "Test"])
    assert counts == {"Test": 3, "Nothing": 0}
    assert await CampaignService(ctx).target_counts([]) == {}


async def test_pages_are_in_id_order_and_complete(ctx: ServiceContext) -> None:
    creator, actor = await _engineer(ctx)
    service = CampaignService(ctx)
    made = {
        (await service.create(_spec(f"c-{i}"), creator_id=creator, actor=actor)).id
        for i in range(5)
    }
    seen: list[str] = []
    after: str | None = None
    while True:
        rows = list(await service.page(after, 2))
        page = rows[:2]
        seen += [c.id for c in page]
        if len(rows) <= 2:
            break
        after = page[-1].id
    assert seen == sorted(made)


async def test_a_change_racing_another_is_refused(ctx: ServiceContext, platform: Platform) -> None:
    # An admin completes an active campaign after another admin's request read it: the
    # other's pause must not write over "completed" (a finished campaign made resumable).
    creator, actor = await _engineer(ctx)
    service = CampaignService(ctx)
    campaign = await service.create(_spec(), creator_id=creator, actor=actor)
    await service.change_status(campaign, S.ACTIVE, actor=actor)
    await ctx.session.commit()
    await ctx.session.refresh(campaign)  # read as active
    campaign_id = campaign.id
    async with platform.services() as (uow, other):
        theirs = await CampaignService(other).get(campaign_id)
        await CampaignService(other).change_status(theirs, S.COMPLETED, actor=actor)
        await uow.commit()
    with pytest.raises(TransitionRefused) as refused:
        await service.change_status(campaign, S.PAUSED, actor=actor)
    assert refused.value.reason == "changed"
    await ctx.session.rollback()
    stored = await ctx.session.scalar(
        select(OtaCampaign.status).where(OtaCampaign.id == campaign_id)
    )
    assert stored is S.COMPLETED
