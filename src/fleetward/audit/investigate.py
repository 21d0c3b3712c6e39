"""Investigation queries over the audit log: from one request to everything it caused, and
from one compromised credential, source address or network (or window) to every vehicle,
command and read it reached.

Read-only, on columns (never on JSON), so they answer from the covering indexes of
``audit_events`` (see models.py). Results are values the CLI and the admin API render as a
table, JSON or CSV.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar, Final, Self

from sqlalchemy import ColumnElement, String, case, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.models import AuditRecord, address_key
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
# A blast radius's vehicles: one page of at most this many (``VehicleCursor``).
_VEHICLES_LISTED = 10_000
# The widest network a source-address blast radius answers for: anything wider is a fishing
# query over other people's traffic (an IPv4 /16 is 65,536 addresses; an IPv6 /48 one site).
MAX_IPV4_NETWORK: Final = 16
MAX_IPV6_NETWORK: Final = 48
_V4_MAPPED: Final = ipaddress.IPv6Network("::ffff:0:0/96")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# What a subject's id may be (the admin API's query parameter takes the same): every id the
# audit columns hold fits, and no JWT (three base64url parts, well over 128 characters) does.
MAX_SUBJECT_ID: Final = 128
_SUBJECT_ID: Final = re.compile(rf"[A-Za-z0-9._:@/-]{{1,{MAX_SUBJECT_ID}}}")


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
    SOURCE_IP = "source-ip"  # an address or a CIDR network: what the records' source_ip held
    WINDOW = "window"


def source_network(value: str) -> Network:
    """The network a source-address blast radius asks for: an IP address (a network of one)
    or a CIDR network with its host bits clear, no wider than ``MAX_IPV4_NETWORK`` /
    ``MAX_IPV6_NETWORK``. An IPv4-mapped IPv6 network is the IPv4 one it maps.
    Anything else is a ``ValueError`` saying what is wrong."""
    try:
        if "%" in value:  # a scope (fe80::1%eth0) names a link of one host, not an address
            raise ValueError(value)
        network = ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise ValueError(
            "a source-ip is an IP address or a CIDR network with its host bits clear "
            "(203.0.113.7, 203.0.113.0/24, 2001:db8::/64)"
        ) from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_V4_MAPPED):
        # The IPv4 network it maps (one address, seen through an IPv6 socket or not).
        low = int(network.network_address) & 0xFFFFFFFF
        network = ipaddress.IPv4Network((low, network.prefixlen - _V4_MAPPED.prefixlen))
    prefix, widest = network.prefixlen, MAX_IPV6_NETWORK
    if isinstance(network, ipaddress.IPv4Network):
        widest = MAX_IPV4_NETWORK
    elif network.supernet_of(_V4_MAPPED):
        prefix = 0  # it holds every IPv4 address
    if prefix < widest:
        raise ValueError(
            f"a source network wider than /{MAX_IPV4_NETWORK} (IPv4) or /{MAX_IPV6_NETWORK} "
            "(IPv6) is refused: name the attacker's address or a narrower network"
        )
    return network


@dataclass(frozen=True, slots=True)
class BlastQuery:
    subject: Subject
    value: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    network: Network | None = field(default=None, init=False, compare=False)

    def __post_init__(self) -> None:
        # The value is recorded as asked (audit:investigation:run): it must be what the
        # subject names, an id, never a credential pasted in its place (docs/operations.md).
        if self.subject is Subject.WINDOW:
            if self.since is None and self.until is None:
                raise ValueError("a window needs --since or --until")
            if self.value is not None:
                raise ValueError("a window takes no id: name a subject, or bound the window")
        elif not self.value:
            what = "an address or a network" if self.subject is Subject.SOURCE_IP else "an id"
            raise ValueError(f"a {self.subject.value} subject needs {what}")
        elif self.subject is not Subject.SOURCE_IP and not _SUBJECT_ID.fullmatch(self.value):
            raise ValueError(
                f"a {self.subject.value} subject is an id of at most {MAX_SUBJECT_ID} letters, "
                "digits and ._:@/- (a token's id is its jti: never the token itself)"
            )
        elif self.subject is Subject.SOURCE_IP:
            network = source_network(self.value)
            # Asked and recorded in its canonical form (an address alone, without /32).
            single = network.num_addresses == 1
            canonical = str(network.network_address) if single else str(network)
            object.__setattr__(self, "network", network)
            object.__setattr__(self, "value", canonical)

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
        if self.network is not None:
            # The records' address as 16 bytes (models.address_key): a network is one range.
            low = address_key(self.network.network_address)
            high = address_key(self.network.broadcast_address)
            key = AuditRecord.source_key
            where.append(key == low if low == high else key.between(low, high))
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


# What makes a spreadsheet read a cell as a formula (OWASP "CSV injection").
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")


def _cell(text: str) -> str:
    """A CSV cell that a spreadsheet shows as the text it is. A vehicle id in the log is the
    id as asked: a refused attempt on "=HYPERLINK(...)" is recorded, and listed, as that, so
    one that starts like a formula is written with a leading ' (the OWASP escape)."""
    return f"'{text}" if text.startswith(_FORMULA_START) else text


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


class _TieredCursor:
    """``<tier>.<seq>``: a listing ordered by tier, then by record ``seq``; a subclass names
    its tiers (single digits)."""

    __slots__ = ("seq", "tier")
    TIERS: ClassVar[tuple[int, ...]] = ()

    def __init__(self, tier: int, seq: int) -> None:
        self.tier, self.seq = tier, seq

    def __str__(self) -> str:
        return f"{self.tier}.{self.seq}"

    @classmethod
    def parse(cls, value: str) -> Self:
        """The cursor a previous page returned; anything else is a ``ValueError``."""
        tier, sep, seq = value.partition(".")
        if not sep or tier not in {str(t) for t in cls.TIERS}:
            raise ValueError("not a cursor this listing returned")
        return cls(int(tier), _seq(seq))


class VehicleCursor(_TieredCursor):
    """Where a page of a blast radius's vehicles ends: the tier of its last vehicle (0
    touched, 1 attempted only) and the ``seq`` of that vehicle's first record in the answer
    (vehicles are listed touched first, then in the order they were first met)."""

    __slots__ = ()
    TIERS = (0, 1)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who acted in the records of a blast radius: a typed id, never a name."""

    type: str
    id: str


@dataclass(slots=True)
class Summary:
    """The distinct values of one column over every record of a blast radius, in the order
    they were first met: at most ``_SUMMARY_LISTED`` of ``total`` (``truncated`` if fewer)."""

    values: list[Any] = field(default_factory=list)
    total: int = 0

    @property
    def truncated(self) -> bool:
        return len(self.values) < self.total

    def listing(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "listed": len(self.values),
            "truncated": self.truncated,
            "next_cursor": None,
        }


_SUMMARIES: Final = ("principals", "clients", "tokens", "token_families", "source_ips")
# Sweeps rather than incidents: tens of thousands of records, whose summaries cost a store
# lookup per record (2-4x the rest of the query at 1,000,000 events, docs/benchmarks.md).
# They are computed for these only when asked; for every other subject unless declined.
BROAD_SUBJECTS: Final = frozenset({Subject.WINDOW, Subject.CLIENT, Subject.PARTNER})


@dataclass(slots=True)
class BlastRadius:
    """``reads`` is complete; ``vehicles`` is one page of at most ``vehicles_limit``
    vehicles, touched first (``vehicles_truncated`` says more follow, from
    ``vehicles_next_cursor``); ``commands`` one page of at most ``limit`` command requests,
    in order (``commands_truncated``, ``commands_next_cursor``). The summaries (principals,
    clients, tokens, token families, source addresses) hold up to ``_SUMMARY_LISTED``
    values each. Every count and total covers every record, whatever the page."""

    query: BlastQuery
    vehicles: list[VehicleImpact]
    commands: list[CommandSent]
    reads: dict[str, int]  # allowed reads by permission
    events: int
    denied: int
    vehicles_total: int = 0
    vehicles_touched: int = 0
    vehicles_truncated: bool = False
    vehicles_next_cursor: str | None = None
    commands_total: int = 0
    commands_truncated: bool = False
    commands_next_cursor: str | None = None
    principals: Summary = field(default_factory=Summary)
    clients: Summary = field(default_factory=Summary)
    tokens: Summary = field(default_factory=Summary)
    token_families: Summary = field(default_factory=Summary)
    source_ips: Summary = field(default_factory=Summary)
    # False: the summaries were not computed (a broad sweep not asked for them).
    summarised: bool = True
    elapsed_ms: float = 0.0

    @property
    def truncated(self) -> bool:
        """True when any list of the answer is cut."""
        return (
            self.vehicles_truncated
            or self.commands_truncated
            or any(getattr(self, name).truncated for name in _SUMMARIES)
        )

    @property
    def touched(self) -> list[str]:
        """The touched vehicles of this page (``vehicles_touched`` counts them all)."""
        return sorted(v.vehicle_id for v in self.vehicles if v.touched)

    @property
    def attempted_only(self) -> list[str]:
        """The attempted-only vehicles of this page."""
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
                "vehicles_touched": self.vehicles_touched,
                "vehicles_attempted_only": self.vehicles_total - self.vehicles_touched,
                "commands_sent": self.commands_total,
                "data_reads": sum(self.reads.values()),
            },
            # What each list holds of its whole: nothing is cut without saying so.
            "truncated": self.truncated,
            "lists": {
                "vehicles": {
                    "total": self.vehicles_total,
                    "listed": len(self.vehicles),
                    "truncated": self.vehicles_truncated,
                    "next_cursor": self.vehicles_next_cursor,
                },
                "commands": {
                    "total": self.commands_total,
                    "listed": len(self.commands),
                    "truncated": self.commands_truncated,
                    "next_cursor": self.commands_next_cursor,
                },
                **{
                    name: getattr(self, name).listing() if self.summarised else None
                    for name in _SUMMARIES
                },
            },
            # Not computed (None) is never shown as an empty list: "nobody" would be a claim.
            "summarised": self.summarised,
            **self._summary_values(),
            "vehicles": [asdict(v) | {"touched": v.touched} for v in self.vehicles],
            "commands": [
                asdict(c) | {"requested_at": c.requested_at.isoformat()} for c in self.commands
            ],
            "reads": dict(sorted(self.reads.items())),
            "elapsed_ms": round(self.elapsed_ms, 3),
        }

    def _summary_values(self) -> dict[str, Any]:
        if not self.summarised:
            return dict.fromkeys(_SUMMARIES)
        return {
            "principals": [asdict(p) for p in self.principals.values],
            "clients": self.clients.values,
            "tokens": self.tokens.values,
            "token_families": self.token_families.values,
            "source_ips": self.source_ips.values,
        }

    def to_csv(self) -> str:
        """One row per vehicle of the page (the list an incident responder acts on)."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ["vehicle_id", "touched", "events", "allowed", "denied", "commands", "reads"]
        )
        for v in self.vehicles:
            writer.writerow(
                [_cell(v.vehicle_id), v.touched, v.events, v.allowed, v.denied, v.commands, v.reads]
            )
        return out.getvalue()

    def to_table(self) -> str:
        counts = self.to_json()["counts"]
        lines = [" ".join(f"{k}={v}" for k, v in counts.items())]
        if not self.summarised:
            lines.append("who acted: not listed (a sweep: --summaries to list it)")
        for p in self.principals.values:
            lines.append(f"principal {p.type} {p.id}")
        for name in _SUMMARIES[1:]:
            values = getattr(self, name).values
            if values:
                lines.append(f"{name}: {' '.join(values)}")
        for name in _SUMMARIES:
            summary = getattr(self, name)
            if summary.truncated:
                lines.append(f"{name} cut: {len(summary.values)} listed of {summary.total}")
        lines.append(
            f"{'vehicle':<32} {'touched':>7} {'events':>7} {'denied':>7} "
            f"{'commands':>8} {'reads':>6}"
        )
        for v in self.vehicles:
            lines.append(
                f"{v.vehicle_id:<32} {'yes' if v.touched else 'no':>7} {v.events:>7} "
                f"{v.denied:>7} {v.commands:>8} {v.reads:>6}"
            )
        if self.vehicles_truncated:
            lines.append(
                f"vehicles truncated: {len(self.vehicles)} listed of {self.vehicles_total}; "
                f"the next page: --vehicles-cursor {self.vehicles_next_cursor}"
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


_ALLOWED: Final = AuditRecord.decision == Decision.ALLOWED
_READ: Final = (
    _ALLOWED
    & (AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value)
    & (AuditRecord.action.in_(sorted(READ_ACTIONS)))
)


async def blast_radius(
    session: AsyncSession,
    query: BlastQuery,
    *,
    cursor: CommandCursor | None = None,
    limit: int = _MAX_LISTED,
    vehicles_cursor: VehicleCursor | None = None,
    vehicles_limit: int | None = None,
    summaries: bool | None = None,
) -> BlastRadius:
    """Every data read (complete), one page of at most ``vehicles_limit`` vehicles touched
    or attempted (touched first, then in the order they were first met), one page of at
    most ``limit`` commands sent, in order, and who acted (principals, clients, tokens, token
    families, source addresses). A page that does not end its list says so, with the
    cursor of the next (pass it back as ``vehicles_cursor`` or ``cursor``). The counts
    cover every record, whatever the page. A listing is stable under new records only if
    the query has an ``until`` in the past. ``summaries``: whether to list who acted (None:
    yes, except for the sweeps of ``BROAD_SUBJECTS``)."""
    vehicles_limit = _VEHICLES_LISTED if vehicles_limit is None else vehicles_limit
    if limit < 1 or vehicles_limit < 1:
        raise ValueError("limit must be positive")
    where = query.conditions()
    # Counted in the store over the covering index: one row per vehicle in a subquery, then
    # the totals of those rows (a window of tens of thousands of events returns one row).
    per_vehicle = (
        select(
            AuditRecord.vehicle_id.label("vehicle_id"),
            func.count().label("events"),
            func.sum(case((_ALLOWED, 1), else_=0)).label("allowed"),
            func.sum(case((AuditRecord.name == _COMMAND_SENT, 1), else_=0)).label("sent"),
        )
        .where(*where)
        .group_by(AuditRecord.vehicle_id)
        .subquery()
    )
    totals = (
        await session.execute(
            select(
                func.sum(per_vehicle.c.events),
                func.sum(per_vehicle.c.allowed),
                func.sum(per_vehicle.c.sent),
                func.count(per_vehicle.c.vehicle_id),
                func.sum(
                    case(
                        (per_vehicle.c.vehicle_id.is_not(None) & (per_vehicle.c.allowed > 0), 1),
                        else_=0,
                    )
                ),
            )
        )
    ).one()
    events, allowed = int(totals[0] or 0), int(totals[1] or 0)
    vehicles, vehicles_next = await _vehicles(session, where, vehicles_cursor, vehicles_limit)
    by_action = await session.execute(
        select(AuditRecord.action, func.count()).where(*where, _READ).group_by(AuditRecord.action)
    )
    reads = {action: int(count) for action, count in by_action.all()}
    commands, next_cursor = await _commands(session, where, cursor, limit)
    result = BlastRadius(
        query=query,
        vehicles=vehicles,
        commands=commands,
        reads=reads,
        events=events,
        denied=events - allowed,
        vehicles_total=int(totals[3] or 0),
        vehicles_touched=int(totals[4] or 0),
        vehicles_truncated=vehicles_next is not None,
        vehicles_next_cursor=vehicles_next,
        commands_total=int(totals[2] or 0),
        commands_truncated=next_cursor is not None,
        commands_next_cursor=next_cursor,
    )
    result.summarised = summaries if summaries is not None else query.subject not in BROAD_SUBJECTS
    if events and result.summarised:
        await _summaries(session, where, result)
    return result


async def _vehicles(
    session: AsyncSession,
    where: list[ColumnElement[bool]],
    cursor: VehicleCursor | None,
    limit: int,
) -> tuple[list[VehicleImpact], str | None]:
    """One page of at most ``limit`` vehicles, touched first, then by their first record,
    and the cursor of the next page (None when this one ends the list)."""
    allowed = func.sum(case((_ALLOWED, 1), else_=0))
    tier = case((allowed > 0, 0), else_=1)
    first = func.min(AuditRecord.seq)
    page = (
        select(
            AuditRecord.vehicle_id,
            func.count(),
            allowed,
            func.sum(case((AuditRecord.name == _COMMAND_SENT, 1), else_=0)),
            func.sum(case((_READ, 1), else_=0)),
            tier,
            first,
        )
        .where(*where, AuditRecord.vehicle_id.is_not(None))
        .group_by(AuditRecord.vehicle_id)
    )
    if cursor is not None:
        page = page.having(or_(tier > cursor.tier, (tier == cursor.tier) & (first > cursor.seq)))
    rows = (await session.execute(page.order_by(tier, first).limit(limit + 1))).all()
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = str(VehicleCursor(int(rows[-1][5]), int(rows[-1][6])))
    vehicles = []
    for vehicle_id, count, allowed_count, sent, reads_count, _tier, _first in rows:
        count, allowed_count = int(count), int(allowed_count or 0)
        vehicles.append(
            VehicleImpact(
                vehicle_id,
                events=count,
                allowed=allowed_count,
                denied=count - allowed_count,
                commands=int(sent or 0),
                reads=int(reads_count or 0),
            )
        )
    return vehicles, next_cursor


_SUMMARY_COLUMNS: Final[tuple[tuple[str, tuple[InstrumentedAttribute[Any], ...]], ...]] = (
    ("principals", (AuditRecord.actor_type, AuditRecord.actor_id)),
    ("clients", (AuditRecord.client_id,)),
    ("tokens", (AuditRecord.token_id,)),
    ("token_families", (AuditRecord.token_family,)),
    ("source_ips", (AuditRecord.source_ip,)),
)


def _distinct_count(columns: tuple[InstrumentedAttribute[Any], ...]) -> ColumnElement[int]:
    # A principal is counted as "<type>:<id>": a type holds no colon, so no two collide.
    value = columns[0] if len(columns) == 1 else cast(columns[0], String) + ":" + columns[1]
    return func.count(func.distinct(value))


async def _summaries(
    session: AsyncSession, where: list[ColumnElement[bool]], result: BlastRadius
) -> None:
    """Who acted in the records, and from where: each list in the order first met, capped
    at ``_SUMMARY_LISTED`` values, with the count of all of them. The counts are one pass
    in the store; the lists one streamed pass over the records in order that ends as soon
    as every list holds all its values or is full (often long before the last record)."""
    totals = (
        await session.execute(
            select(*(_distinct_count(columns) for _, columns in _SUMMARY_COLUMNS)).where(*where)
        )
    ).one()
    wanted = {
        name: min(int(total or 0), _SUMMARY_LISTED)
        for (name, _), total in zip(_SUMMARY_COLUMNS, totals, strict=True)
    }
    # Each list keyed by its raw values (a principal by its (type, id) pair), in first-met
    # order; ``open_lists`` holds the positions of the lists still short of their values.
    listed: list[dict[Any, None]] = [{} for _ in _SUMMARY_COLUMNS]
    want = list(wanted.values())
    open_lists = [i for i, count in enumerate(want) if count > 0]
    if open_lists:
        connection = await session.connection()
        if connection.dialect.name == "postgresql":
            # A cursor is planned for its first rows by default (the primary key walked in
            # order, the filter applied to every record of the table): this one is read
            # through, so plan it for all of them (the transaction's cursors only).
            await connection.exec_driver_sql("SET LOCAL cursor_tuple_fraction = 1.0")
        principal = (cast(AuditRecord.actor_type, String), AuditRecord.actor_id)
        rows = await session.stream(
            select(*principal, *(columns[0] for _, columns in _SUMMARY_COLUMNS[1:]))
            .where(*where)
            .order_by(AuditRecord.seq)
            .execution_options(yield_per=10_000)
        )
        try:
            async for partition in rows.partitions():
                for kind, actor, *values in partition:
                    keys = ((kind, actor), *values)
                    for i in open_lists:
                        key = keys[i]
                        if key is not None:
                            listed[i].setdefault(key, None)
                open_lists = [i for i in open_lists if len(listed[i]) < want[i]]
                if not open_lists:
                    break  # every list is whole or full: the other records add nothing
        finally:
            await rows.close()
    for i, ((name, _), total) in enumerate(zip(_SUMMARY_COLUMNS, totals, strict=True)):
        values = list(listed[i])[: want[i]]
        if name == "principals":
            values = [Principal(str(kind), str(actor)) for kind, actor in values]
        setattr(result, name, Summary(values, int(total or 0)))


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


class TraceCursor(_TieredCursor):
    """Where a page of a trace's records ends (see :func:`trace_request`)."""

    __slots__ = ()
    TIERS = (0, 1, 2)  # the tiers of _TIER (decisive records first)


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
