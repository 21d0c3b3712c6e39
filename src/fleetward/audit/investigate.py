"""Investigation queries over the audit log: from one request to everything it caused, and
from one compromised credential (or window) to every vehicle, command and read it reached.

Read-only, on columns (never on JSON), so they answer from the covering indexes of
``audit_events`` (see models.py). Results are values the CLI and the admin API render as a
table, JSON or CSV.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import ColumnElement, case, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.models import AuditRecord
from fleetward.authz.permissions import Permission
from fleetward.commands.models import CommandJob, JobTransition
from fleetward.telemetry.models import TelemetryMessage

# Data reads: the permissions that disclose data without changing anything.
READ_ACTIONS: Final = frozenset(p.value for p in Permission if ":read" in p.value) | {
    Permission.VEHICLE_DIAGNOSTICS_READ.value
}
_COMMAND_SENT: Final = EventName.COMMAND_REQUESTED.value
_MAX_LISTED: Final = 10_000
# A request chain's summaries (distinct users, clients, tokens, addresses, endpoints) and its
# telemetry: lists capped at these, and named in ``RequestTrace.cut`` when they were.
_SUMMARY_LISTED = 10_000
_TELEMETRY_LISTED = 200
_MAX_SEQ: Final = 2**63 - 1  # the largest audit record seq (a BIGINT)


def _seq(text: str) -> int:
    """An audit record seq written in a cursor; anything else (not ASCII digits, or past a
    BIGINT, which the store refuses as a bound: a 500) is a ``ValueError``."""
    if not text.isascii() or not text.isdigit() or len(text) > 19 or int(text) > _MAX_SEQ:
        raise ValueError("not a cursor this listing returned")
    return int(text)


class Subject(StrEnum):
    """What is compromised. ``window`` alone: everything in the time window."""

    USER = "user"
    TOKEN = "token"  # noqa: S105 - a subject kind, not a secret
    TOKEN_FAMILY = "token-family"  # noqa: S105 - a subject kind, not a secret
    CLIENT = "client"
    PARTNER = "partner"
    DEVICE = "device"
    WINDOW = "window"


@dataclass(frozen=True, slots=True)
class BlastQuery:
    subject: Subject
    value: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        if self.subject is Subject.WINDOW:
            if self.since is None and self.until is None:
                raise ValueError("a window needs --since or --until")
        elif not self.value:
            raise ValueError(f"a {self.subject.value} id is required")

    def conditions(self) -> list[ColumnElement[bool]]:
        column = {
            Subject.USER: AuditRecord.actor_id,
            Subject.TOKEN: AuditRecord.token_id,
            Subject.TOKEN_FAMILY: AuditRecord.token_family,
            Subject.CLIENT: AuditRecord.client_id,
            # A partner acts through its application: its client id.
            Subject.PARTNER: AuditRecord.client_id,
            Subject.DEVICE: AuditRecord.actor_id,
        }.get(self.subject)
        where: list[ColumnElement[bool]] = []
        if column is not None:
            where.append(column == self.value)
        if self.since is not None:
            where.append(AuditRecord.occurred_at >= self.since)
        if self.until is not None:
            where.append(AuditRecord.occurred_at < self.until)
        return where


@dataclass(slots=True)
class VehicleImpact:
    vehicle_id: str
    events: int = 0
    allowed: int = 0
    denied: int = 0
    commands: int = 0
    reads: int = 0

    @property
    def touched(self) -> bool:
        """Reached: at least one allowed event (denied-only vehicles were only attempted)."""
        return self.allowed > 0


@dataclass(frozen=True, slots=True)
class CommandSent:
    job_id: str | None
    vehicle_id: str | None
    command: str | None
    state: str | None
    requested_at: datetime


class CommandCursor:
    """Where a page of a blast radius's commands ends: the ``seq`` of its last record."""

    __slots__ = ("seq",)

    def __init__(self, seq: int) -> None:
        self.seq = seq

    def __str__(self) -> str:
        return str(self.seq)

    @classmethod
    def parse(cls, value: str) -> CommandCursor:
        """The cursor a previous page returned; anything else is a ``ValueError``."""
        return cls(_seq(value))


@dataclass(slots=True)
class BlastRadius:
    """``vehicles`` and ``reads`` are complete; ``commands`` is one page of at most
    ``limit`` command requests, in order: ``commands_truncated`` says more follow, from
    ``commands_next_cursor``. ``commands_total`` (and every count) covers every record."""

    query: BlastQuery
    vehicles: list[VehicleImpact]
    commands: list[CommandSent]
    reads: dict[str, int]  # allowed reads by permission
    events: int
    denied: int
    commands_total: int = 0
    commands_truncated: bool = False
    commands_next_cursor: str | None = None
    elapsed_ms: float = 0.0

    @property
    def truncated(self) -> bool:
        """True when any list of the answer is cut (only the commands ever are)."""
        return self.commands_truncated

    @property
    def touched(self) -> list[str]:
        return sorted(v.vehicle_id for v in self.vehicles if v.touched)

    @property
    def attempted_only(self) -> list[str]:
        return sorted(v.vehicle_id for v in self.vehicles if not v.touched)

    def to_json(self) -> dict[str, Any]:
        return {
            "query": {
                "subject": self.query.subject.value,
                "value": self.query.value,
                "since": _iso(self.query.since),
                "until": _iso(self.query.until),
            },
            "counts": {
                "events": self.events,
                "denied": self.denied,
                "vehicles_touched": len(self.touched),
                "vehicles_attempted_only": len(self.attempted_only),
                "commands_sent": self.commands_total,
                "data_reads": sum(self.reads.values()),
            },
            # What each list holds of its whole: nothing is cut without saying so.
            "truncated": self.truncated,
            "lists": {
                "vehicles": {
                    "total": len(self.vehicles),
                    "listed": len(self.vehicles),
                    "truncated": False,
                    "next_cursor": None,
                },
                "commands": {
                    "total": self.commands_total,
                    "listed": len(self.commands),
                    "truncated": self.commands_truncated,
                    "next_cursor": self.commands_next_cursor,
                },
            },
            "vehicles": [asdict(v) | {"touched": v.touched} for v in self.vehicles],
            "commands": [
                asdict(c) | {"requested_at": c.requested_at.isoformat()} for c in self.commands
            ],
            "reads": dict(sorted(self.reads.items())),
            "elapsed_ms": round(self.elapsed_ms, 3),
        }

    def to_csv(self) -> str:
        """One row per vehicle (the list an incident responder acts on)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["vehicle_id", "touched", "events", "allowed", "denied", "commands", "reads"]
        )
        for v in self.vehicles:
            writer.writerow(
                [v.vehicle_id, v.touched, v.events, v.allowed, v.denied, v.commands, v.reads]
            )
        return out.getvalue()

    def to_table(self) -> str:
        counts = self.to_json()["counts"]
        lines = [" ".join(f"{k}={v}" for k, v in counts.items())]
        lines.append(
            f"{'vehicle':<32} {'touched':>7} {'events':>7} {'denied':>7} "
            f"{'commands':>8} {'reads':>6}"
        )
        for v in self.vehicles:
            lines.append(
                f"{v.vehicle_id:<32} {'yes' if v.touched else 'no':>7} {v.events:>7} "
                f"{v.denied:>7} {v.commands:>8} {v.reads:>6}"
            )
        for c in self.commands:
            lines.append(
                f"command {c.command} job={c.job_id} vehicle={c.vehicle_id} "
                f"state={c.state} at={c.requested_at.isoformat()}"
            )
        if self.commands_truncated:
            lines.append(
                f"commands truncated: {len(self.commands)} listed of {self.commands_total}; "
                f"the next page: --cursor {self.commands_next_cursor}"
            )
        for action, count in sorted(self.reads.items()):
            lines.append(f"read {action}: {count}")
        return "\n".join(lines) + "\n"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def blast_radius(
    session: AsyncSession,
    query: BlastQuery,
    *,
    cursor: CommandCursor | None = None,
    limit: int = _MAX_LISTED,
) -> BlastRadius:
    """Every vehicle touched or attempted, every data read (complete), and one page of at
    most ``limit`` commands sent, in order: ``commands_truncated`` and
    ``commands_next_cursor`` when more follow (pass it as ``cursor`` for the next page).
    The counts cover every record, whatever the page."""
    if limit < 1:
        raise ValueError("limit must be positive")
    where = query.conditions()
    allowed = AuditRecord.decision == Decision.ALLOWED
    read = (
        allowed
        & (AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value)
        & (AuditRecord.action.in_(sorted(READ_ACTIONS)))
    )
    # One row per vehicle, counted in the store (conditional sums over the covering index),
    # and the reads per permission: a window of tens of thousands of events returns a row
    # per vehicle, not one per (vehicle, event, action, decision).
    per_vehicle = await session.execute(
        select(
            AuditRecord.vehicle_id,
            func.count(),
            func.sum(case((allowed, 1), else_=0)),
            func.sum(case((AuditRecord.name == _COMMAND_SENT, 1), else_=0)),
            func.sum(case((read, 1), else_=0)),
        )
        .where(*where)
        .group_by(AuditRecord.vehicle_id)
    )
    vehicles: dict[str, VehicleImpact] = {}
    events = denied = commands_total = 0
    for vehicle_id, count, allowed_count, sent, reads_count in per_vehicle.all():
        count, allowed_count = int(count), int(allowed_count or 0)
        events += count
        denied += count - allowed_count
        commands_total += int(sent or 0)
        if vehicle_id is None:
            continue
        vehicles[vehicle_id] = VehicleImpact(
            vehicle_id,
            events=count,
            allowed=allowed_count,
            denied=count - allowed_count,
            commands=int(sent or 0),
            reads=int(reads_count or 0),
        )
    by_action = await session.execute(
        select(AuditRecord.action, func.count()).where(*where, read).group_by(AuditRecord.action)
    )
    reads = {action: int(count) for action, count in by_action.all()}
    commands, next_cursor = await _commands(session, where, cursor, limit)
    return BlastRadius(
        query=query,
        vehicles=sorted(vehicles.values(), key=lambda v: (not v.touched, v.vehicle_id)),
        commands=commands,
        reads=reads,
        events=events,
        denied=denied,
        commands_total=commands_total,
        commands_truncated=next_cursor is not None,
        commands_next_cursor=next_cursor,
    )


async def _commands(
    session: AsyncSession,
    where: list[ColumnElement[bool]],
    cursor: CommandCursor | None,
    limit: int,
) -> tuple[list[CommandSent], str | None]:
    """One page of at most ``limit`` commands sent, in order, and the cursor of the next
    page (None when this one ends the list)."""
    page = select(
        AuditRecord.seq, AuditRecord.vehicle_id, AuditRecord.occurred_at, AuditRecord.details
    ).where(*where, AuditRecord.name == _COMMAND_SENT)
    if cursor is not None:
        page = page.where(AuditRecord.seq > cursor.seq)
    rows = (await session.execute(page.order_by(AuditRecord.seq).limit(limit + 1))).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = str(CommandCursor(rows[-1][0]))
    job_ids = [d.get("job_id") for _, _, _, d in rows if isinstance(d.get("job_id"), str)]
    states: dict[str, str] = {}
    for chunk in _chunks(job_ids, 500):
        result = await session.execute(
            select(CommandJob.id, CommandJob.state).where(CommandJob.id.in_(chunk))
        )
        states.update({job_id: state.value for job_id, state in result.all()})
    sent = []
    for _seq, vehicle_id, at, details in rows:
        job_id = details.get("job_id")
        command = details.get("command")
        sent.append(
            CommandSent(
                job_id=job_id if isinstance(job_id, str) else None,
                vehicle_id=vehicle_id,
                command=command if isinstance(command, str) else None,
                state=states.get(job_id) if isinstance(job_id, str) else None,
                requested_at=at,
            )
        )
    return sent, next_cursor


def _chunks(items: Sequence[str], size: int) -> list[Sequence[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# --- from one request -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobChain:
    job_id: str
    vehicle_id: str
    command: str
    state: str
    token_id: str | None
    states: list[dict[str, Any]]


class TraceCursor:
    """Where a page of a trace's records ends: ``<tier>.<seq>`` (see :func:`trace_request`)."""

    __slots__ = ("seq", "tier")

    def __init__(self, tier: int, seq: int) -> None:
        self.tier, self.seq = tier, seq

    def __str__(self) -> str:
        return f"{self.tier}.{self.seq}"

    @classmethod
    def parse(cls, value: str) -> TraceCursor:
        """The cursor a previous page returned; anything else is a ``ValueError``."""
        tier, sep, seq = value.partition(".")
        if not sep or not tier.isascii() or not tier.isdigit() or int(tier) not in _TIERS:
            raise ValueError("not a cursor this listing returned")
        return cls(int(tier), _seq(seq))


@dataclass(slots=True)
class RequestTrace:
    """Everything one request (or one trace) led to. ``events`` is one page of at most
    ``limit`` records, the decisive ones first (see :func:`trace_request`); ``truncated``
    says more follow, from ``next_cursor``. ``total`` counts every record of the key."""

    key: str
    total: int = 0
    truncated: bool = False
    next_cursor: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    clients: list[str] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)
    token_families: list[str] = field(default_factory=list)
    source_ips: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)
    vehicles: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[JobChain] = field(default_factory=list)
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    # The other lists cut at their cap (``users``, ..., ``telemetry``): never silently.
    cut: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "total": self.total,
            "listed": len(self.events),
            "truncated": self.truncated,
            "next_cursor": self.next_cursor,
            "cut": self.cut,
            "users": self.users,
            "clients": self.clients,
            "tokens": self.tokens,
            "token_families": self.token_families,
            "source_ips": self.source_ips,
            "endpoints": self.endpoints,
            "vehicles": self.vehicles,
            "jobs": [asdict(j) for j in self.jobs],
            "telemetry": self.telemetry,
            "events": self.events,
        }


_EVENT_FIELDS: Final = (
    "id",
    "occurred_at",
    "name",
    "actor_type",
    "actor_id",
    "object_type",
    "object_id",
    "action",
    "decision",
    "reason",
    "policy_version",
    "endpoint",
    "vehicle_id",
)


# A trace id is the caller's to choose (a W3C ``traceparent`` is continued), so anyone can
# add records to a trace: the padding must never hide the records that matter. Records are
# listed by tier, then in order: tier 0, everything but authorization decisions on data
# reads (commands and their jobs, changes, sign-ins, tokens, devices, detections, decisions
# on any other action); tier 1, denied reads; tier 2, allowed reads (the cheapest to make).
_READ_DECISION: Final = (AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value) & (
    AuditRecord.action.in_(sorted(READ_ACTIONS))
)
_TIER: Final = case(
    (_READ_DECISION & (AuditRecord.decision == Decision.ALLOWED), 2),
    (_READ_DECISION, 1),
    else_=0,
)
_TIERS: Final = (0, 1, 2)


async def trace_request(
    session: AsyncSession,
    key: str,
    *,
    after: timedelta = timedelta(minutes=15),
    cursor: TraceCursor | None = None,
    limit: int = _MAX_LISTED,
) -> RequestTrace:
    """``key`` is a request id or a trace id. One page of at most ``limit`` of its records,
    the decisive ones first (``_TIER``) so that no number of padding reads added under the
    same trace id pushes a command or a denial off the page; ``truncated`` and
    ``next_cursor`` when more follow (pass it as ``cursor`` for the next page). The
    summaries (users, clients, tokens, addresses, endpoints) and ``total`` cover every
    record of the key; vehicles, jobs and telemetry those of the page. Telemetry is listed
    from the request until ``after`` past the last job's end (signal names only: values
    may be personal data)."""
    if limit < 1:
        raise ValueError("limit must be positive")
    of_key = or_(AuditRecord.request_id == key, AuditRecord.trace_id == key)
    page = select(AuditRecord, _TIER).where(of_key)
    if cursor is not None:
        tier = _TIER  # a column expression (ruff reads the capitals as a constant)
        page = page.where(
            or_(tier > cursor.tier, (tier == cursor.tier) & (AuditRecord.seq > cursor.seq))
        )
    rows = (await session.execute(page.order_by(_TIER, AuditRecord.seq).limit(limit + 1))).all()
    trace = RequestTrace(key)
    trace.total = int(await session.scalar(select(func.count()).where(of_key)) or 0)
    if len(rows) > limit:
        rows = rows[:limit]
        trace.truncated = True
        last, tier = rows[-1]
        trace.next_cursor = str(TraceCursor(int(tier), last.seq))
    if trace.total == 0:
        return trace
    user = AuditRecord.actor_type == ActorType.USER
    summaries: list[tuple[str, InstrumentedAttribute[Any], tuple[ColumnElement[bool], ...]]] = [
        ("users", AuditRecord.actor_id, (of_key, user)),
        ("clients", AuditRecord.client_id, (of_key,)),
        ("tokens", AuditRecord.token_id, (of_key,)),
        ("token_families", AuditRecord.token_family, (of_key,)),
        ("source_ips", AuditRecord.source_ip, (of_key,)),
        ("endpoints", AuditRecord.endpoint, (of_key,)),
    ]
    for name, column, where in summaries:
        values = await _distinct_of(session, column, *where)
        if len(values) > _SUMMARY_LISTED:
            values = values[:_SUMMARY_LISTED]
            trace.cut.append(name)
        setattr(trace, name, values)
    records = sorted((r for r, _ in rows), key=lambda r: r.seq)
    if not records:
        return trace
    trace.events = [_event(r) for r, _ in rows]
    job_ids = _distinct(
        r.details.get("job_id") if isinstance(r.details.get("job_id"), str) else None
        for r in records
    )
    trace.jobs = await _jobs(session, job_ids)
    vehicle_ids = _distinct([r.vehicle_id for r in records] + [j.vehicle_id for j in trace.jobs])
    started = records[0].occurred_at
    trace.vehicles = [await _vehicle_state(session, v, started) for v in vehicle_ids]
    until = max([started] + [_job_end(j) for j in trace.jobs]) + after
    trace.telemetry = await _telemetry(session, vehicle_ids, started, until)
    if len(trace.telemetry) > _TELEMETRY_LISTED:
        trace.telemetry = trace.telemetry[:_TELEMETRY_LISTED]
        trace.cut.append("telemetry")
    return trace


async def _distinct_of(
    session: AsyncSession, column: InstrumentedAttribute[Any], *where: ColumnElement[bool]
) -> list[str]:
    """The distinct values of one column over every record of a trace, in first-seen order
    (one more than ``_SUMMARY_LISTED`` at most: the caller tells a cut list by its length)."""
    rows = await session.execute(
        select(column)
        .where(*where, column.is_not(None))
        .group_by(column)
        .order_by(func.min(AuditRecord.seq))
        .limit(_SUMMARY_LISTED + 1)
    )
    return _distinct(value for (value,) in rows.all())


def _event(record: AuditRecord) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _EVENT_FIELDS:
        value = getattr(record, name)
        out[name] = value.isoformat() if isinstance(value, datetime) else value
    return out


def _distinct(values: Any) -> list[str]:
    seen: dict[str, None] = {}
    for value in values:
        if isinstance(value, str) and value:
            seen.setdefault(value, None)
    return list(seen)


def _job_end(job: JobChain) -> datetime:
    return max(datetime.fromisoformat(s["at"]) for s in job.states)


async def _jobs(session: AsyncSession, job_ids: list[str]) -> list[JobChain]:
    if not job_ids:
        return []
    jobs = (
        await session.scalars(
            select(CommandJob).where(CommandJob.id.in_(job_ids)).order_by(CommandJob.created_at)
        )
    ).all()
    transitions = (
        await session.scalars(
            select(JobTransition)
            .where(JobTransition.job_id.in_(job_ids))
            .order_by(JobTransition.at, JobTransition.id)
        )
    ).all()
    by_job: dict[str, list[dict[str, Any]]] = {}
    for t in transitions:
        by_job.setdefault(t.job_id, []).append(
            {"state": t.to_state.value, "at": t.at.isoformat(), "reason": t.reason}
        )
    return [
        JobChain(
            job_id=j.id,
            vehicle_id=j.vehicle_id,
            command=j.command,
            state=j.state.value,
            token_id=j.token_id,
            states=by_job.get(
                j.id,
                [{"state": j.state.value, "at": j.created_at.isoformat(), "reason": "created"}],
            ),
        )
        for j in jobs
    ]


async def _vehicle_state(session: AsyncSession, vehicle_id: str, at: datetime) -> dict[str, Any]:
    """The software the vehicle last reported before the request (provenance of telemetry)."""
    last = (
        await session.execute(
            select(
                TelemetryMessage.device_id,
                TelemetryMessage.software_version,
                TelemetryMessage.vehicle_config,
                TelemetryMessage.received_at,
            )
            .where(TelemetryMessage.vehicle_id == vehicle_id, TelemetryMessage.received_at <= at)
            .order_by(TelemetryMessage.received_at.desc())
            .limit(1)
        )
    ).first()
    if last is None:
        return {"vehicle_id": vehicle_id, "software_version": None, "device_id": None}
    return {
        "vehicle_id": vehicle_id,
        "device_id": last[0],
        "software_version": last[1],
        "vehicle_config": last[2],
        "reported_at": last[3].isoformat(),
    }


async def _telemetry(
    session: AsyncSession, vehicle_ids: list[str], since: datetime, until: datetime
) -> list[dict[str, Any]]:
    if not vehicle_ids:
        return []
    rows = (
        await session.scalars(
            select(TelemetryMessage)
            .where(
                TelemetryMessage.vehicle_id.in_(vehicle_ids),
                TelemetryMessage.received_at >= since,
                TelemetryMessage.received_at <= until,
            )
            .order_by(TelemetryMessage.received_at)
            .limit(_TELEMETRY_LISTED + 1)  # one more: the caller tells a cut list
        )
    ).all()
    return [
        {
            "vehicle_id": m.vehicle_id,
            "device_id": m.device_id,
            "sequence": m.sequence,
            "received_at": m.received_at.isoformat(),
            "software_version": m.software_version,
            "signals": sorted(m.signals),
        }
        for m in rows
    ]
