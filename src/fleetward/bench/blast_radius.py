"""Blast radius over a large audit log (issue 8 target: <= 1 s over 1,000,000 events, on the
embedded store and on PostgreSQL).

A synthetic month of audit events (users with a few token families each, vehicles per user,
clients, reads, commands, denials) is bulk-loaded into a fresh store; then each kind of
blast-radius query is timed (median of ``repeats``), next to a ceiling measured in the same
run: the bare indexed count of the same selection.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from sqlalchemy import func, insert, select
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.investigate import BlastQuery, Subject, blast_radius
from fleetward.audit.models import AuditRecord
from fleetward.authz.permissions import Permission
from fleetward.settings import Settings
from fleetward.store.engine import create_engine
from fleetward.store.migrate import upgrade

TARGET_SECONDS: Final = 1.0
START: Final = datetime(2026, 11, 1, tzinfo=UTC)
_BATCH: Final = 10_000
_READS: Final = (
    Permission.VEHICLE_READ_STATUS.value,
    Permission.VEHICLE_READ_LOCATION.value,
    Permission.VEHICLE_READ_TRIPS.value,
)


def _rows(count: int, users: int, seed: int) -> list[dict[str, Any]]:
    rng = random.Random(seed)  # noqa: S311 - synthetic benchmark data, reproducible by seed
    rows = []
    for i in range(count):
        user = rng.randrange(users)
        family = f"fam_{user:06d}_{rng.randrange(4)}"
        at = START + timedelta(seconds=rng.randrange(30 * 86_400))
        vehicle = f"veh_{user * 5 + rng.randrange(5):08d}"
        roll = rng.random()
        if roll < 0.1:
            name, action = EventName.COMMAND_REQUESTED.value, "requested"
            details: dict[str, Any] = {"job_id": f"job_{i:010d}", "command": "lock"}
        else:
            name = EventName.AUTHZ_DECISION_MADE.value
            action = _READS[i % 3] if roll < 0.8 else Permission.VEHICLE_LOCK.value
            details = {}
        rows.append(
            {
                "id": f"evt_{i:012d}",
                "occurred_at": at,
                "name": name,
                "actor_type": ActorType.USER,
                "actor_id": f"usr_{user:06d}",
                "tenant_id": f"ten_{user % 200:04d}",
                "object_type": "vehicle",
                "object_id": vehicle,
                "action": action,
                "decision": Decision.DENIED if rng.random() < 0.05 else Decision.ALLOWED,
                "details": details,
                "client_id": f"cli_{user % 20:02d}",
                "token_id": f"jti_{family}_{at.strftime('%d%H')}",
                "token_family": family,
                "source_ip": f"198.51.{user % 256}.{rng.randrange(256)}",
                "vehicle_id": vehicle,
            }
        )
    return rows


async def _load(engine: AsyncEngine, events: int, users: int) -> float:
    started = time.perf_counter()
    done = 0
    while done < events:
        size = min(_BATCH, events - done)
        rows = _rows(size, users, seed=done)
        for offset, row in enumerate(rows):
            row["id"] = f"evt_{done + offset:012d}"
        async with engine.begin() as connection:
            await connection.execute(insert(AuditRecord), rows)
        done += size
    # After a bulk load: planner statistics, and on PostgreSQL the visibility map that lets it
    # answer from the covering indexes alone (what autovacuum gives a production table; a
    # freshly loaded one has none). VACUUM runs outside a transaction. No SQLAlchemy
    # construct for either.
    statement = "VACUUM ANALYZE" if engine.dialect.name == "postgresql" else "ANALYZE"
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql(statement)
    return time.perf_counter() - started


async def _time(engine: AsyncEngine, query: BlastQuery, repeats: int) -> dict[str, Any]:
    timings, ceiling = [], []
    result = None
    for _ in range(repeats):
        async with AsyncSession(engine) as session:
            started = time.perf_counter()
            result = await blast_radius(session, query)
            timings.append(time.perf_counter() - started)
            started = time.perf_counter()
            await session.scalar(
                select(func.count()).select_from(AuditRecord).where(*query.conditions())
            )
            ceiling.append(time.perf_counter() - started)
    counts = result.to_json()["counts"] if result else {}
    median = statistics.median(timings)
    bare = statistics.median(ceiling)
    return {
        "median_s": round(median, 4),
        "max_s": round(max(timings), 4),
        "ceiling_bare_count_s": round(bare, 4),
        "ratio_to_ceiling": round(median / bare, 2) if bare else None,
        "within_target": max(timings) <= TARGET_SECONDS,
        "counts": counts,
    }


def _queries(users: int, token: str) -> dict[str, BlastQuery]:
    user = users // 3
    return {
        "token_family": BlastQuery(Subject.TOKEN_FAMILY, f"fam_{user:06d}_1"),
        "token": BlastQuery(Subject.TOKEN, token),
        "user": BlastQuery(Subject.USER, f"usr_{user:06d}"),
        "client (1/20 of all events)": BlastQuery(Subject.CLIENT, "cli_07"),
        "source address": BlastQuery(Subject.SOURCE_IP, f"198.51.{user % 256}.7"),
        "source network /24": BlastQuery(Subject.SOURCE_IP, f"198.51.{user % 256}.0/24"),
        "window 1 hour": BlastQuery(
            Subject.WINDOW,
            since=START + timedelta(days=10),
            until=START + timedelta(days=10, hours=1),
        ),
        "window 1 day": BlastQuery(
            Subject.WINDOW, since=START + timedelta(days=10), until=START + timedelta(days=11)
        ),
        "user in 1 day": BlastQuery(
            Subject.USER,
            f"usr_{user:06d}",
            since=START + timedelta(days=10),
            until=START + timedelta(days=11),
        ),
    }


@asynccontextmanager
async def _store(database_url: str | None) -> AsyncIterator[AsyncEngine]:
    if database_url is None:
        with tempfile.TemporaryDirectory() as directory:
            engine = create_engine(f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}")
            try:
                yield engine
            finally:
                await engine.dispose()
        return
    server = Settings(database_url=database_url).resolved_database_url
    name = f"fleetward_bench_{secrets.token_hex(6)}"  # [a-z0-9_]: safe to quote as is
    admin = create_async_engine(server, isolation_level="AUTOCOMMIT")
    try:
        # CREATE/DROP DATABASE have no SQLAlchemy construct.
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        engine = create_engine(make_url(server).set(database=name).render_as_string(False))
        try:
            yield engine
        finally:
            await engine.dispose()
    finally:
        async with admin.connect() as connection:
            await connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.dispose()


async def _run(events: int, users: int, repeats: int, database_url: str | None) -> dict[str, Any]:
    async with _store(database_url) as engine:
        await upgrade(engine)
        load_s = await _load(engine, events, users)
        async with AsyncSession(engine) as session:
            # A token that was used: one of the chosen user's (a jti lives one hour).
            token = await session.scalar(
                select(AuditRecord.token_id)
                .where(AuditRecord.token_family == f"fam_{users // 3:06d}_1")
                .limit(1)
            )
        queries = _queries(users, token or "none")
        results = {label: await _time(engine, query, repeats) for label, query in queries.items()}
        backend = engine.dialect.name
    return {
        "backend": backend,
        "events": events,
        "users": users,
        "vehicles": users * 5,
        "load_s": round(load_s, 1),
        "target_s": TARGET_SECONDS,
        "queries": results,
        "all_within_target": all(r["within_target"] for r in results.values()),
    }


def run(
    events: int = 1_000_000, users: int = 10_000, repeats: int = 5, database_url: str | None = None
) -> dict[str, Any]:
    return asyncio.run(_run(events, users, repeats, database_url))
