"""The migrations build exactly the schema the models describe, on both backends: a model
change without its migration (or the reverse) fails here, not in production."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from fleetward.platform import Platform
from fleetward.store.registry import metadata

# A store built by the migrations themselves, not a copy of the session's template.
pytestmark = pytest.mark.fresh_migrations


async def test_migrations_match_models(platform: Platform) -> None:
    def compare(connection: Connection) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with platform.engine.connect() as connection:
        differences = await connection.run_sync(compare)
    assert differences == []
