"""Investigating by source address: what a query may ask for (an address, or a network no
wider than /16 or /48), and the 16-byte key every record keeps of its address, so that a
network is one range of an index on both backends (text forms do not sort as addresses)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.investigate import (
    BlastQuery,
    Subject,
    VehicleCursor,
    blast_radius,
    source_network,
)
from fleetward.audit.models import AuditRecord, address_key, source_key_of
from fleetward.audit.recorder import Actor, Target
from fleetward.core.context import RequestContext, set_request
from fleetward.platform import Platform
from fleetward.store.engine import create_engine
from fleetward.store.migrate import upgrade
from support.stores import sqlite_url


@pytest.mark.parametrize(
    ("value", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("203.0.113.7/32", "203.0.113.7"),
        ("203.0.0.0/16", "203.0.0.0/16"),
        ("2001:db8:1::/48", "2001:db8:1::/48"),
        ("2001:DB8:0:0::1", "2001:db8::1"),
        # IPv4-mapped IPv6 is the IPv4 address or network it maps.
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("::ffff:cb00:0/112", "203.0.0.0/16"),
    ],
)
def test_an_address_or_a_narrow_network_is_asked_in_its_canonical_form(
    value: str, canonical: str
) -> None:
    assert BlastQuery(Subject.SOURCE_IP, value).value == canonical


@pytest.mark.parametrize(
    "value",
    [
        "203.0.0.0/15",
        "0.0.0.0/0",
        "2001:db8::/47",
        "::/0",
        "::/48",  # holds ::ffff:0:0/96, every IPv4 address
        "::ffff:0:0/96",
        "::ffff:cb00:0/111",  # an IPv4 /15
    ],
)
def test_a_network_wider_than_a_16_or_a_48_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="wider than /16"):
        source_network(value)


@pytest.mark.parametrize(
    "value",
    ["203.0.113.7/24", "203.0.113", "203.0.113.256", "01.2.3.4", "fe80::1%eth0", "veh_1", " "],
)
def test_what_is_no_address_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="IP address or a CIDR network"):
        BlastQuery(Subject.SOURCE_IP, value)


def test_the_key_of_an_address_sorts_as_the_addresses_do() -> None:
    v4 = ipaddress.IPv4Address("203.0.113.7")
    assert address_key(v4) == address_key(ipaddress.IPv6Address("::ffff:203.0.113.7"))
    assert source_key_of("::ffff:cb00:7107") == address_key(v4)
    assert source_key_of("not an address") is None and source_key_of(None) is None
    addresses = ["10.0.0.2", "10.0.0.10", "9.255.255.255", "::1", "2001:db8::1", "fe80::"]
    parsed = [ipaddress.ip_address(a) for a in addresses]
    by_key = sorted(parsed, key=address_key)
    assert [str(a) for a in by_key] == [
        "::1",
        "9.255.255.255",
        "10.0.0.2",
        "10.0.0.10",
        "2001:db8::1",
        "fe80::",
    ]


@pytest.mark.parametrize("value", ["0.1", "1.9223372036854775807"])
def test_a_vehicle_cursor_reads_back(value: str) -> None:
    assert str(VehicleCursor.parse(value)) == value


@pytest.mark.parametrize(
    "value",
    ["", "1", "2.1", "x.1", "0.", "0.x", "0.-1", "0.9223372036854775808", "0.1.2", "\u0660.1"],
)
def test_a_vehicle_cursor_no_page_returned_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="not a cursor"):
        VehicleCursor.parse(value)


async def test_a_records_key_follows_its_address_as_written(platform: Platform) -> None:
    # The recorder's rows (one multi-row insert at commit), a row whose address a caller
    # cleared before it was written (devices.admission does), and a bulk insert.
    set_request(RequestContext(request_id="req-key-0001", trace_id="b" * 32, source_ip="::1"))
    try:
        async with platform.services() as (uow, ctx):
            for vehicle in ("veh_key_a", "veh_key_b"):
                ctx.audit.record(
                    ctx.session,
                    EventName.COMMAND_REQUESTED,
                    actor=Actor.user("usr_key"),
                    target=Target("vehicle", vehicle),
                )
            cleared = ctx.audit.record(
                ctx.session,
                EventName.COMMAND_REQUESTED,
                actor=Actor.user("usr_key"),
                target=Target("vehicle", "veh_key_c"),
            )
            cleared.update(source_ip=None)
            await uow.commit()
    finally:
        set_request(None)
    async with platform.unit_of_work() as uow:
        await uow.session.execute(
            insert(AuditRecord),
            [
                {
                    "id": "evt_key_bulk",
                    "occurred_at": platform.clock.now(),
                    "name": EventName.AUTHZ_DECISION_MADE.value,
                    "actor_type": ActorType.USER,
                    "actor_id": "usr_bulk",
                    "object_type": "vehicle",
                    "object_id": "veh_key_d",
                    "action": "vehicle:read_status",
                    "decision": Decision.ALLOWED,
                    "details": {},
                    "vehicle_id": "veh_key_d",
                    "source_ip": "192.0.2.1",
                }
            ],
        )
        await uow.commit()
        rows = await uow.session.execute(select(AuditRecord.vehicle_id, AuditRecord.source_key))
        keys = {vehicle: key for vehicle, key in rows.all()}
        one = await blast_radius(uow.session, BlastQuery(Subject.SOURCE_IP, "::1"))
    assert keys == {
        "veh_key_a": address_key(ipaddress.IPv6Address("::1")),
        "veh_key_b": address_key(ipaddress.IPv6Address("::1")),
        "veh_key_c": None,
        "veh_key_d": address_key(ipaddress.IPv4Address("192.0.2.1")),
    }
    assert [v.vehicle_id for v in one.vehicles] == ["veh_key_a", "veh_key_b"]


async def test_the_migration_keys_the_records_written_before_it(tmp_path: Path) -> None:
    engine = create_engine(sqlite_url(tmp_path / "before.db"))
    try:
        await upgrade(engine, "0015")
        async with engine.begin() as connection:
            for i, address in enumerate(("203.0.113.7", "2001:db8::1", "203.0.113.7", None)):
                await connection.execute(
                    text(
                        "INSERT INTO audit_events (id, occurred_at, name, actor_type, actor_id,"
                        " object_type, object_id, action, decision, details, source_ip)"
                        " VALUES (:id, '2026-12-01 00:00:00.000000', 'x', 'user', 'usr_1',"
                        " 'vehicle', 'veh_1', 'read', 'allowed', '{}', :ip)"
                    ),
                    {"id": f"evt_before_{i}", "ip": address},
                )
        await upgrade(engine)
        async with engine.connect() as connection:
            rows = (
                await connection.execute(
                    text("SELECT id, source_key FROM audit_events ORDER BY id")
                )
            ).all()
    finally:
        await engine.dispose()
    v4 = address_key(ipaddress.IPv4Address("203.0.113.7"))
    assert [bytes(key) if key is not None else None for _, key in rows] == [
        v4,
        address_key(ipaddress.IPv6Address("2001:db8::1")),
        v4,
        None,
    ]
