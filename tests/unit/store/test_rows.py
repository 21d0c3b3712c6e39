"""Held rows written by a plan (``store.rows``) store exactly what Core's INSERT stores, and
still go through SQLAlchemy's connection (its events, its transaction, its errors)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, event, exc, insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor, Target
from fleetward.commands.models import CommandJob, JobState, JobTransition
from fleetward.core.context import CallerFacts, RequestContext, set_request
from fleetward.core.ids import new_id
from fleetward.platform import Platform
from fleetward.store.pending import held
from fleetward.store.rows import insert_rows, plan_for
from support.factories import committed_vehicle

AUDIT = cast(Table, AuditRecord.__table__)
JOBS = cast(Table, CommandJob.__table__)
TRANSITIONS = cast(Table, JobTransition.__table__)


def _audit_rows(platform: Platform, source_ip: str | None) -> list[dict[str, Any]]:
    """Two records as the recorder holds them, under a request with a caller."""
    caller = CallerFacts(
        client_id="fleetward-mobile",
        token_id="tok_rows",
        token_family="fam_rows",
        subject_type="user",
        subject_id="usr_rows",
        tenant_id="ten_rows",
        acr="mfa",
        amr="pwd otp",
        scope="vehicle:read_status",
        surface="mobile",
        endpoint="vehicle-status",
    )
    context = RequestContext("req_rows", "0" * 32, source_ip, caller)
    session = AsyncSession()  # never bound: only holds the rows
    set_request(context)
    try:
        for name in (EventName.AUTHZ_DECISION_MADE, EventName.VEHICLE_REGISTERED):
            platform.audit.record(
                session,
                name,
                actor=Actor.system("rows-test"),
                target=Target("vehicle", "veh_rows", "ten_rows"),
                details={"permission": "vehicle:read_status", "nested": {"a": [1, "ü"]}},
            )
    finally:
        set_request(None)
    return [dict(row) for row in held(session, AUDIT)]


def _job_rows(platform: Platform, tenant_id: str, vehicle_id: str) -> list[dict[str, Any]]:
    now = platform.clock.now()
    return [
        {column.key: None for column in JOBS.columns}
        | {
            "id": new_id("job"),
            "vehicle_id": vehicle_id,
            "tenant_id": tenant_id,
            "command": "vehicle:horn_lights",
            "parameters": {"duration_s": 3, "pattern": "flash"},
            "state": JobState.QUEUED,
            "requested_by": "usr_rows",
            "client_id": "fleetward-mobile",
            "created_at": now,
            "expires_at": now + timedelta(seconds=30),
            "updated_at": now,
            "request_hash": "h",
            "surface": "mobile",
            "subject_type": "user",
            "token_scopes": ["vehicle:horn_lights", "vehicle:read_status"],
            "acr": "mfa",
            "auth_time": now - timedelta(seconds=5),
            "chain": None,  # JSON: Core stores the text 'null', not SQL NULL
        }
    ]


async def _stored(
    connection: AsyncConnection, table: Table, ids: list[str]
) -> list[tuple[Any, ...]]:
    """The rows as the store holds them (the driver's values, no type processing), without
    the columns that differ by construction (the id, an autoincremented key)."""
    skip = {"id", "seq"}
    names = [c.name for c in table.columns if c.name not in skip]
    if connection.dialect.paramstyle == "qmark":
        marks = ", ".join("?" for _ in ids)
    else:  # asyncpg's numbered parameters
        marks = ", ".join(f"${n + 1}" for n in range(len(ids)))
    sql = f"SELECT {', '.join(names)} FROM {table.name} WHERE id IN ({marks})"  # noqa: S608
    result = await connection.exec_driver_sql(sql, tuple(ids))
    return sorted((tuple(row) for row in result), key=repr)


@pytest.mark.parametrize("table", ["audit", "audit-no-ip", "jobs"])
async def test_a_plan_stores_what_core_stores(platform: Platform, table: str) -> None:
    if table == "jobs":
        tenant_id, vehicle_id = await committed_vehicle(platform)
        target, make = JOBS, lambda: _job_rows(platform, tenant_id, vehicle_id)
    else:
        target = AUDIT
        make = lambda: _audit_rows(platform, None if table == "audit-no-ip" else "192.0.2.7")  # noqa: E731
    planned, core = make(), make()
    async with platform.engine.begin() as connection:
        await connection.run_sync(lambda c: insert_rows(c, target, planned))
        await connection.execute(insert(target), core)
        mine = await _stored(connection, target, [row["id"] for row in planned])
        theirs = await _stored(connection, target, [row["id"] for row in core])
    assert len(mine) == len(planned)
    assert mine == theirs
    if table == "audit":
        source_key = [c.name for c in AUDIT.columns if c.name not in {"id", "seq"}].index(
            "source_key"
        )
        assert mine[0][source_key] == b"\x00" * 10 + b"\xff\xff" + bytes([192, 0, 2, 7])


async def test_the_plan_runs_as_one_driver_statement_on_sqlite(platform: Platform) -> None:
    rows = _audit_rows(platform, "198.51.100.1")
    compiled: list[bool] = []

    def seen(_conn: Any, _cursor: Any, _sql: str, _params: Any, context: Any, many: bool) -> None:
        compiled.append(context.compiled is not None)

    event.listen(platform.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with platform.engine.begin() as connection:
            await connection.run_sync(lambda c: insert_rows(c, AUDIT, rows))
    finally:
        event.remove(platform.engine.sync_engine, "before_cursor_execute", seen)
    planned = plan_for(AUDIT, tuple(rows[0]), platform.engine.dialect) is not None
    assert planned == (platform.engine.dialect.name == "sqlite")
    # One statement for both rows; a plan's is the driver's SQL (no compiled Core statement).
    assert compiled == [not planned]


async def test_rows_naming_other_columns_go_to_core(platform: Platform) -> None:
    rows = _audit_rows(platform, None)
    del rows[1]["reason"]  # a later row without a column the first one names
    with pytest.raises(exc.StatementError) as core_error:
        async with platform.engine.begin() as connection:
            await connection.run_sync(lambda c: c.execute(insert(AUDIT), rows))
    with pytest.raises(type(core_error.value)):
        async with platform.engine.begin() as connection:
            await connection.run_sync(lambda c: insert_rows(c, AUDIT, rows))


async def test_a_duplicate_is_still_an_integrity_error(platform: Platform) -> None:
    rows = _audit_rows(platform, None)
    rows[1]["id"] = rows[0]["id"]
    with pytest.raises(exc.IntegrityError):
        async with platform.engine.begin() as connection:
            await connection.run_sync(lambda c: insert_rows(c, AUDIT, rows))
    async with platform.engine.begin() as connection:
        left = await _stored(connection, AUDIT, [rows[0]["id"]])
    assert left == []  # the statement's transaction rolled back: nothing of it stays
