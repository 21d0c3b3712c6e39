"""Command jobs, their transitions, bulk requests and per-vehicle envelope counters.

A job is the only record that a command was asked for; what the vehicle did is a transition,
never an HTTP status. Every transition is stored with its time and reason (``states``).

Invariants held in SQL as well as in code:

* an idempotency key binds one accepted job per requester (unique ``(requested_by,
  idempotency_key)``; NULLs, the keys of rejected attempts and bulk children, never collide);
* at most one security-relevant job is in flight per vehicle: ``exclusive_vehicle`` holds the
  vehicle id while such a job is not final and NULL otherwise, under a unique index, so two
  racing requests (a lock and an unlock) resolve deterministically: the first to commit wins;
* envelope counters only grow (one row per vehicle, incremented in the delivering transaction).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Index, String
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
    CANCELLED = "cancelled"


class BulkState(StrEnum):
    AWAITING_APPROVAL = "awaiting_approval"
    DISPATCHED = "dispatched"
    REJECTED = "rejected"
    EXPIRED = "expired"


class CommandJob(Base):
    __tablename__ = "command_jobs"
    __table_args__ = (
        Index("ix_command_jobs_vehicle_created", "vehicle_id", "created_at"),
        Index("ix_command_jobs_state_vehicle", "state", "vehicle_id"),
        Index("uq_command_jobs_idempotency", "requested_by", "idempotency_key", unique=True),
        Index("uq_command_jobs_exclusive_vehicle", "exclusive_vehicle", unique=True),
    )

    id: Mapped[str] = id_column()
    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    # A vehicle:* permission value: the command family.
    command: Mapped[str] = mapped_column(String(40))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[JobState] = mapped_column(str_enum(JobState, "job_state"))
    # Every ORM UPDATE of a job holds only while its state is the one this session read
    # (``WHERE id = ? AND state = ?``): two transactions that read the same job and both move
    # it (the sweep giving up on it while its answer is recorded, a cancel racing its
    # delivery) cannot both win; the later one fails with StaleDataError and changes nothing.
    # The state is the version: ``jobs.move`` sets it, nothing generates it.
    __mapper_args__ = {
        "version_id_col": state,
        "version_id_generator": False,
    }
    # Who asked: the token's subject and client.
    requested_by: Mapped[str] = mapped_column(String(ID_LENGTH), index=True)
    client_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    # --- added with the commands issue (migration 0008) ---
    # The client's Idempotency-Key (accepted jobs only) and the SHA-256 of the request body.
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # What the token said when the job was asked for: delivery re-checks the same grant.
    surface: Mapped[str | None] = mapped_column(String(16))
    subject_type: Mapped[str | None] = mapped_column(String(16))
    token_id: Mapped[str | None] = mapped_column(String(64), index=True)
    token_tenant_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    token_scopes: Mapped[list[str] | None] = mapped_column(JSON)
    acr: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[datetime | None]
    # The authorization chain, link by link: [{"link", "ok", "detail"}]; a rejection names
    # the failing link in ``rejected_link`` too.
    chain: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    rejected_link: Mapped[str | None] = mapped_column(String(32))
    exclusive_vehicle: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    bulk_id: Mapped[str | None] = mapped_column(ForeignKey("command_bulks.id"), index=True)
    # Delivery: the envelope's counter and digest (SHA-256 hex of the signed frame).
    counter: Mapped[int | None] = mapped_column(BigInteger)
    envelope_digest: Mapped[str | None] = mapped_column(String(64))
    delivered_at: Mapped[datetime | None]
    delivered_device_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    # The vehicle's signed answer.
    result_reason: Mapped[str | None] = mapped_column(String(64))
    result_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # --- migration 0012 ---
    # The refresh-token family the asking token came from: revoking the family (a replayed
    # refresh token, a client's revocation request) stops the job's delayed delivery too.
    token_family: Mapped[str | None] = mapped_column(String(40))


class JobTransition(Base):
    __tablename__ = "command_job_transitions"

    id: Mapped[str] = id_column()
    job_id: Mapped[str] = mapped_column(ForeignKey("command_jobs.id"), index=True)
    from_state: Mapped[JobState | None] = mapped_column(str_enum(JobState, "job_transition_from"))
    to_state: Mapped[JobState] = mapped_column(str_enum(JobState, "job_transition_to"))
    at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(64))


class CommandBulk(Base):
    """One fleet request aimed at many vehicles: one job per vehicle once it may go."""

    __tablename__ = "command_bulks"
    __table_args__ = (
        Index("uq_command_bulks_idempotency", "requested_by", "idempotency_key", unique=True),
    )

    id: Mapped[str] = id_column()
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    command: Mapped[str] = mapped_column(String(40))
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON)
    vehicle_ids: Mapped[list[str]] = mapped_column(JSON)
    state: Mapped[BulkState] = mapped_column(str_enum(BulkState, "bulk_state"))
    # As for jobs, the state is the version: an approval and a rejection (or two approvals)
    # that read the same waiting bulk cannot both be written; the later fails with
    # StaleDataError and nothing of it (its jobs included) is written.
    __mapper_args__ = {
        "version_id_col": state,
        "version_id_generator": False,
    }
    requested_by: Mapped[str] = mapped_column(String(ID_LENGTH))
    client_id: Mapped[str] = mapped_column(String(128))
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_hash: Mapped[str] = mapped_column(String(64))
    token_id: Mapped[str | None] = mapped_column(String(64))
    token_scopes: Mapped[list[str]] = mapped_column(JSON)
    acr: Mapped[str] = mapped_column(String(64))
    auth_time: Mapped[datetime]
    created_at: Mapped[datetime]
    # An approval request expires: a second admin cannot approve a week-old bulk unlock.
    approval_expires_at: Mapped[datetime]
    approved_by: Mapped[str | None] = mapped_column(String(ID_LENGTH))
    approved_at: Mapped[datetime | None]
    decided_reason: Mapped[str | None] = mapped_column(String(64))
    # --- migration 0012 --- (as on jobs; the bulk's jobs inherit it)
    token_family: Mapped[str | None] = mapped_column(String(40))
    # --- migration 0014 --- The request's TTL (seconds; None: the command's own lifetime),
    # for the jobs an approval creates later.
    ttl_seconds: Mapped[int | None]
    # --- migration 0015 --- The fleet group the request was decided on (None: the whole
    # fleet), so that its approval can decide again whether the requester may still send it.
    group_id: Mapped[str | None] = mapped_column(String(ID_LENGTH))


class VehicleCommandCounter(Base):
    """The last envelope counter issued to a vehicle; envelopes carry strictly larger ones."""

    __tablename__ = "vehicle_command_counters"

    vehicle_id: Mapped[str] = mapped_column(ForeignKey("vehicles.id"), primary_key=True)
    counter: Mapped[int] = mapped_column(BigInteger)
