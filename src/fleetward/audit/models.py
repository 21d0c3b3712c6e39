"""The audit event table and its seal table. No secrets and no needless personal data are
ever stored here: token *ids* (jti) and family ids, never tokens; a client IP as a risk
signal, never a name or an e-mail address.

The client IP is kept as the request saw it (``source_ip``, its canonical text), and again
as ``source_key``: the same address as 16 bytes (an IPv4 address as its IPv4-mapped IPv6
form), derived at insert time, so that an investigation asks for a network as one range of
an index on both SQLite and PostgreSQL (text forms do not sort as addresses)."""

from __future__ import annotations

import functools
import ipaddress
from datetime import datetime
from typing import Any, Final

from sqlalchemy import JSON, BigInteger, Boolean, Index, Integer, LargeBinary, String
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.audit.events import ActorType, Decision
from fleetward.store.base import Base, str_enum

_V4_MAPPED: Final = b"\x00" * 10 + b"\xff\xff"


def address_key(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bytes:
    """An address as the 16 bytes ``source_key`` holds: IPv6 as is, IPv4 IPv4-mapped (so
    ``192.0.2.1`` and ``::ffff:192.0.2.1``, one client seen through two socket families,
    are one key). Bytes compare as the addresses do, on both backends."""
    if isinstance(address, ipaddress.IPv4Address):
        return _V4_MAPPED + address.packed
    return address.packed


def source_key_of(text: str | None) -> bytes | None:
    """The key of a recorded ``source_ip``; None for none, or for text that is no address."""
    if not text:
        return None
    return _parsed_key(text)


@functools.lru_cache(maxsize=4096)
def _parsed_key(text: str) -> bytes | None:
    # ~8 us to parse an address, for each record a request writes (a command writes seven,
    # all from one client): a pure function of the text, so remembered.
    try:
        return address_key(ipaddress.ip_address(text))
    except ValueError:
        return None


def _source_key(context: DefaultExecutionContext) -> bytes | None:
    # Derived from the row's own ``source_ip`` when it is written (the recorder's rows, and
    # rows a caller corrected before they were: ``devices.admission`` clears the address).
    source_ip = context.get_current_parameters().get("source_ip")  # type: ignore[no-untyped-call]
    return source_key_of(source_ip if isinstance(source_ip, str) else None)


def _big_id() -> BigInteger:
    # BigInteger so PostgreSQL never wraps; SQLite only auto-increments an INTEGER key.
    return BigInteger().with_variant(Integer, "sqlite")


class AuditRecord(Base):
    __tablename__ = "audit_events"
    __table_args__ = (
        Index("ix_audit_events_object", "object_type", "object_id"),
        Index("ix_audit_events_actor", "actor_type", "actor_id"),
        # Blast-radius queries filter on the first column and group by vehicle, event name,
        # action and decision: covering them keeps the queries off the table pages.
        Index(
            "ix_audit_events_token_family_vehicle",
            "token_family",
            "vehicle_id",
            "name",
            "action",
            "decision",
        ),
        Index(
            "ix_audit_events_token_vehicle", "token_id", "vehicle_id", "name", "action", "decision"
        ),
        Index(
            "ix_audit_events_client_vehicle",
            "client_id",
            "vehicle_id",
            "name",
            "action",
            "decision",
        ),
        Index(
            "ix_audit_events_actor_vehicle", "actor_id", "vehicle_id", "name", "action", "decision"
        ),
        Index(
            "ix_audit_events_source_vehicle",
            "source_key",
            "vehicle_id",
            "name",
            "action",
            "decision",
        ),
        Index(
            "ix_audit_events_time_vehicle",
            "occurred_at",
            "vehicle_id",
            "name",
            "action",
            "decision",
        ),
    )

    # Insertion order within one database (not commit order: see audit/chain.py).
    seq: Mapped[int] = mapped_column(_big_id(), primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), unique=True, insert_sentinel=True)
    occurred_at: Mapped[datetime]  # indexed first in ix_audit_events_time_vehicle
    name: Mapped[str] = mapped_column(String(64), index=True)
    actor_type: Mapped[ActorType] = mapped_column(str_enum(ActorType, "audit_actor_type"))
    actor_id: Mapped[str] = mapped_column(String(64))
    actor_tenant_id: Mapped[str | None] = mapped_column(String(40))
    tenant_id: Mapped[str | None] = mapped_column(String(40), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    decision: Mapped[Decision] = mapped_column(str_enum(Decision, "audit_decision"))
    reason: Mapped[str | None] = mapped_column(String(128))
    request_id: Mapped[str | None] = mapped_column(String(64), index=True)
    trace_id: Mapped[str | None] = mapped_column(String(32), index=True)
    details: Mapped[dict[str, Any]] = mapped_column(JSON)
    # Facts of the verified token and the request (bound in api/auth.authenticate), so an
    # investigator filters on columns, not JSON. All nullable: a system event has none.
    client_id: Mapped[str | None] = mapped_column(String(128))  # indexed first in a composite
    token_id: Mapped[str | None] = mapped_column(String(64))  # indexed first in a composite
    token_family: Mapped[str | None] = mapped_column(String(64))  # indexed first in a composite
    workload_id: Mapped[str | None] = mapped_column(String(128))
    acr: Mapped[str | None] = mapped_column(String(64))
    amr: Mapped[str | None] = mapped_column(String(64))  # space-separated methods
    scope: Mapped[str | None] = mapped_column(String(1024))  # the token's granted scope
    surface: Mapped[str | None] = mapped_column(String(16))
    endpoint: Mapped[str | None] = mapped_column(String(128))  # the route name
    policy_version: Mapped[str | None] = mapped_column(String(64))
    # Not indexed on its own: an address is looked up by ``source_key``, whose composite
    # index replaced this column's (revision 0016; one index fewer on every audit insert).
    source_ip: Mapped[str | None] = mapped_column(String(45))
    # ``source_ip`` as 16 bytes (``address_key``): not sealed on its own (chain.py), it is
    # derived from the sealed ``source_ip``. Indexed first in a composite.
    source_key: Mapped[bytes | None] = mapped_column(LargeBinary(16), default=_source_key)
    vehicle_id: Mapped[str | None] = mapped_column(String(40), index=True)


class AuditSeal(Base):
    """One link of the hash chain: written by the sealer after the record committed.

    No foreign key to ``audit_events`` on purpose: a deleted record must leave its seal
    behind (that is how verify names it), not be refused or cascade.
    """

    __tablename__ = "audit_seals"
    __table_args__ = (
        Index("uq_audit_seals_partition_position", "partition", "position", unique=True),
    )

    event_seq: Mapped[int] = mapped_column(_big_id(), primary_key=True, autoincrement=False)
    event_id: Mapped[str] = mapped_column(String(40))
    partition: Mapped[str] = mapped_column(String(10))  # the record's UTC day, YYYY-MM-DD
    position: Mapped[int] = mapped_column(BigInteger)  # 0-based within the partition
    prev_hash: Mapped[str] = mapped_column(String(64))
    record_hash: Mapped[str] = mapped_column(String(64))
    chain_hash: Mapped[str] = mapped_column(String(64))
    sealed_at: Mapped[datetime]
    # Committed after the sealer had moved past its seq (a transaction longer than the lag).
    late: Mapped[bool] = mapped_column(Boolean)
