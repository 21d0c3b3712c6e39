"""remembered OAuth consent records the surface and the tenant it was given for

Consent was remembered per person and client: a multi-surface client that a person allowed a
scope on one surface (the mobile app) got the same scope names on another surface, or for
another tenant the person acts for, without the consent screen. Rows from before this
revision have neither and match no request (those people see the consent screen again).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_consents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("surface", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("tenant_id", sa.String(length=40), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_oauth_consents_tenant_id_tenants"), "tenants", ["tenant_id"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("oauth_consents", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_oauth_consents_tenant_id_tenants"), type_="foreignkey"
        )
        batch_op.drop_column("tenant_id")
        batch_op.drop_column("surface")
