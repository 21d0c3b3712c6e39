"""Read the whole store back, to prove that a refused operation changed nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.store.registry import metadata


async def snapshot(session: AsyncSession) -> dict[str, list[tuple[Any, ...]]]:
    await session.flush()
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for table in metadata.sorted_tables:
        rows = (await session.execute(select(table))).all()
        tables[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return tables
