"""Tenants, people and their memberships (roles inside a tenant, with validity windows)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import Base, id_column, str_enum


class TenantKind(StrEnum):
    CONSUMER = "consumer"
    FLEET = "fleet"
    DEALER = "dealer"
    PARTNER = "partner"
    OPERATOR = "operator"


class Role(StrEnum):
    CUSTOMER = "customer"
    FLEET_ADMIN = "fleet_admin"
    FLEET_OPERATOR = "fleet_operator"
    DEALER_TECHNICIAN = "dealer_technician"
    PARTNER_ADMIN = "partner_admin"
    SUPPORT_AGENT = "support_agent"
    PLATFORM_ADMIN = "platform_admin"
    ENGINEER = "engineer"


# A role only exists inside the kind of tenant it belongs to: a dealer cannot appoint a
# platform admin, a consumer tenant cannot hold fleet roles.
ROLES_BY_TENANT_KIND: dict[TenantKind, frozenset[Role]] = {
    TenantKind.CONSUMER: frozenset({Role.CUSTOMER}),
    TenantKind.FLEET: frozenset({Role.FLEET_ADMIN, Role.FLEET_OPERATOR}),
    TenantKind.DEALER: frozenset({Role.DEALER_TECHNICIAN}),
    TenantKind.PARTNER: frozenset({Role.PARTNER_ADMIN}),
    TenantKind.OPERATOR: frozenset({Role.SUPPORT_AGENT, Role.PLATFORM_ADMIN, Role.ENGINEER}),
}

# Roles whose holders must use phishing-resistant or one-time-code MFA (identity issue).
HIGH_RISK_ROLES: frozenset[Role] = frozenset(
    {
        Role.FLEET_ADMIN,
        Role.DEALER_TECHNICIAN,
        Role.SUPPORT_AGENT,
        Role.PLATFORM_ADMIN,
        Role.ENGINEER,
    }
)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = id_column()
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[TenantKind] = mapped_column(str_enum(TenantKind, "tenant_kind"))
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = id_column()
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200))
    home_tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    # argon2id PHC string; never logged, never returned by any API.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (Index("ix_memberships_user_tenant", "user_id", "tenant_id"),)

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    role: Mapped[Role] = mapped_column(str_enum(Role, "membership_role"))
    valid_from: Mapped[datetime]
    valid_until: Mapped[datetime | None]
    ended_reason: Mapped[str | None] = mapped_column(String(64))


__all__ = ["Membership", "Role", "Tenant", "TenantKind", "User"]
