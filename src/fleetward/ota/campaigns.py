"""OTA campaigns: create, look up, page through and move through their checked lifecycle.

A campaign names a vehicle model and software versions, never a vehicle or a person; what it
reports about its reach is a count of vehicles of the model, not their ids. Status moves only
along :data:`TRANSITIONS` (anything else is a 409 and changes nothing), and every change is
audited in the caller's transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.exc import StaleDataError

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import Conflict, InvalidInput, NotFound
from fleetward.core.ids import new_id
from fleetward.ota.models import CampaignStatus, OtaCampaign
from fleetward.services import ServiceContext
from fleetward.store.constraints import violates_unique
from fleetward.vehicles.models import Vehicle

_S = CampaignStatus

# Where each status may go next. COMPLETED is final; DRAFT is never re-entered.
TRANSITIONS: Final[Mapping[CampaignStatus, frozenset[CampaignStatus]]] = {
    _S.DRAFT: frozenset({_S.ACTIVE}),
    _S.ACTIVE: frozenset({_S.PAUSED, _S.COMPLETED}),
    _S.PAUSED: frozenset({_S.ACTIVE, _S.COMPLETED}),
    _S.COMPLETED: frozenset(),
}


class CampaignNotFound(NotFound):
    code = "campaign-not-found"
    title = "Campaign not found"


class DuplicateCampaign(Conflict):
    code = "duplicate-campaign"
    title = "Campaign name already taken"


class TransitionRefused(Conflict):
    code = "campaign-transition-refused"
    title = "Campaign status change refused"


class InvalidCampaign(InvalidInput):
    code = "invalid-campaign"
    title = "Invalid campaign"


@dataclass(frozen=True, slots=True)
class CampaignSpec:
    name: str
    target_model: str
    to_version: str
    from_version: str | None = None


class CampaignService:
    """One transaction's campaign operations (the session's thread-safety rules apply)."""

    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def create(self, spec: CampaignSpec, *, creator_id: str, actor: Actor) -> OtaCampaign:
        if spec.from_version is not None and spec.from_version == spec.to_version:
            raise InvalidCampaign(
                "a campaign must move vehicles to another version", reason="same-version"
            )
        session = self._ctx.session
        taken = await session.scalar(select(OtaCampaign.id).where(OtaCampaign.name == spec.name))
        if taken is not None:
            raise DuplicateCampaign("a campaign of that name exists", reason="name")
        now = self._ctx.clock.now()
        campaign = OtaCampaign(
            id=new_id("ota"),
            name=spec.name,
            target_model=spec.target_model,
            from_version=spec.from_version,
            to_version=spec.to_version,
            status=CampaignStatus.DRAFT,
            created_by_user_id=creator_id,
            created_at=now,
            updated_at=now,
        )
        session.add(campaign)
        self._ctx.audit.record(
            session,
            EventName.OTA_CAMPAIGN_CREATED,
            actor=actor,
            target=Target("ota_campaign", campaign.id),
            details={"target_model": spec.target_model, "to_version": spec.to_version},
        )
        try:
            await session.flush()
        except IntegrityError as error:
            if not violates_unique(error, OtaCampaign.__table__.c.name):
                raise  # any other integrity failure is not a duplicate name
            # A concurrent create took the name after the check above.
            raise DuplicateCampaign("a campaign of that name exists", reason="name") from None
        return campaign

    async def get(self, campaign_id: str) -> OtaCampaign:
        found = await self._ctx.session.get(OtaCampaign, campaign_id)
        if found is None:
            raise CampaignNotFound("no such campaign")
        return found

    async def page(self, after: str | None, size: int) -> Sequence[OtaCampaign]:
        """Up to ``size + 1`` campaigns after the id ``after``, in id order."""
        query = select(OtaCampaign)
        if after is not None:
            query = query.where(OtaCampaign.id > after)
        rows = await self._ctx.session.scalars(query.order_by(OtaCampaign.id).limit(size + 1))
        return list(rows)

    async def change_status(
        self, campaign: OtaCampaign, status: CampaignStatus, *, actor: Actor
    ) -> OtaCampaign:
        before = campaign.status
        if status not in TRANSITIONS[before]:
            raise TransitionRefused(
                f"a {before.value} campaign cannot become {status.value}",
                reason=f"{before.value}->{status.value}",
            )
        campaign.status = status
        campaign.updated_at = self._ctx.clock.now()
        self._ctx.audit.record(
            self._ctx.session,
            EventName.OTA_CAMPAIGN_STATUS_CHANGED,
            actor=actor,
            target=Target("ota_campaign", campaign.id),
            details={"from": before.value, "to": status.value},
        )
        try:
            await self._ctx.session.flush()
        except StaleDataError:
            raise TransitionRefused(
                "the campaign changed meanwhile; ask again", reason="changed"
            ) from None
        return campaign

    async def target_counts(self, models: Sequence[str]) -> dict[str, int]:
        """How many registered vehicles each model has: counts only, never ids."""
        wanted = sorted(set(models))
        if not wanted:
            return {}
        rows = await self._ctx.session.execute(
            select(Vehicle.model, func.count(Vehicle.id))
            .where(Vehicle.model.in_(wanted))
            .group_by(Vehicle.model)
        )
        counts = dict.fromkeys(wanted, 0)
        counts.update({model: int(count) for model, count in rows})
        return counts


__all__ = [
    "TRANSITIONS",
    "CampaignNotFound",
    "CampaignService",
    "CampaignSpec",
    "DuplicateCampaign",
    "InvalidCampaign",
    "TransitionRefused",
]
