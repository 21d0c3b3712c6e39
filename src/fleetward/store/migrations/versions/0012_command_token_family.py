"""command jobs and bulks record the refresh-token family of the token that asked

A delayed delivery asks whether the asking token was revoked meanwhile. Its id, its person,
client and tenant were recorded; a revoked refresh-token family (a replayed refresh token, a
client's revocation of a refresh token) was not, so a job asked for with an access token of a
revoked family was still delivered.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 23:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("command_jobs", "command_bulks")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(sa.Column("token_family", sa.String(length=40), nullable=True))


def downgrade() -> None:
    for table in reversed(_TABLES):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column("token_family")
