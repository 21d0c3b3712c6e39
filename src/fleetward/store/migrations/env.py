"""Alembic environment: always runs on a connection handed over by fleetward.store.migrate."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from fleetward.store.registry import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError("run migrations with 'fleetward migrate', not the alembic command")

context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
