"""Command jobs and their transitions.

A job is the only record that a command was asked for; what the vehicle did is a transition,
never an HTTP status. Every transition is stored with its time and reason.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import ID_LENGTH, Base, id_column, str_enum


class JobState(StrEnum):
    REQUESTED = "requested"
    AUTHORIZED = "authorized"
    REJECTED = "rejected"
    QUEUED = "queued"
    DELIVERED = "delivered"
    EXECUTED = "executed"
    FAILED = "failed"
    REJECTED_BY_VEHICLE = "rejected_by_vehicle"
    CONFIRMED = "confirmed"
    EXPIRED = "expired"
    OUTCOME_UNKNOWN = "outcome_unknown"


class CommandJob(Base):
    __tablename__ = "command_jobs"
    __table_args__ = (Index("ix_command_jobs_vehicle_created", "vehicle_id", "created_at"),)

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    # A vehicle:* permission value: the command family.
    command: Mapped[str] = mapped_column(String(40))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[JobState] = mapped_column(str_enum(JobState, "job_state"))
    # Who asked: the token's subject and client.
    requested_by: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    client_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class JobTransition(Base):
    __tablename__ = "command_job_transitions"

    id: Mapped[str] = id_column()
    job_id: Mapped[str] = mapped_column(ForeignKey("command_jobs.id"), index=True)
    from_state: Mapped[JobState | None] = mapped_column(str_enum(JobState, "job_transition_from"))
    to_state: Mapped[JobState] = mapped_column(str_enum(JobState, "job_transition_to"))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(64))
