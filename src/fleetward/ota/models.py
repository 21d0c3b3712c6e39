"""OTA campaigns target vehicles by model and software version, never by person."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import Base, id_column, str_enum


class CampaignStatus(StrEnum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


class OtaCampaign(Base):
    __tablename__ = "ota_campaigns"

    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(100), unique=True)
    target_model: Mapped[str] = mapped_column(String(100))
    # The version vehicles move from (None: any) and to.
    from_version: Mapped[str | None] = mapped_column(String(64))
    to_version: Mapped[str] = mapped_column(String(64))
    status: Mapped[CampaignStatus] = mapped_column(str_enum(CampaignStatus, "campaign_status"))
    # The status is the version: a change is written only while the campaign is still as it
    # was read (two admins pausing and completing it at once cannot both win).
    __mapper_args__ = {
        "version_id_col": status,
        "version_id_generator": False,
    }
    created_by_user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
