"""Applications, workloads and the grants they hold: clients, authorization codes, refresh
token families, device authorizations, consents and revocation epochs.

Codes and tokens are stored as SHA-256 hashes only.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, Boolean, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import Base, id_column, str_enum


class ClientType(StrEnum):
    PUBLIC_MOBILE = "public_mobile"  # PKCE + DPoP, no secret
    CONFIDENTIAL_WEB = "confidential_web"  # private_key_jwt
    DEALER_TOOL = "dealer_tool"  # private_key_jwt
    PARTNER = "partner"  # private_key_jwt, bound to its tenant
    FIRST_PARTY_CLI = "first_party_cli"  # public, PKCE or device authorization
    WORKLOAD = "workload"  # client credentials with private_key_jwt, no human permissions


class Client(Base):
    __tablename__ = "oauth_clients"

    # The client_id: public, so it is never a credential on its own.
    id: Mapped[str] = id_column()
    name: Mapped[str] = mapped_column(String(200))
    client_type: Mapped[ClientType] = mapped_column(str_enum(ClientType, "client_type"))
    # Partners and workloads are bound to one tenant; tokens carry it.
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"))
    redirect_uris: Mapped[list[str]] = mapped_column(JSON)
    grant_types: Mapped[list[str]] = mapped_column(JSON)
    scopes: Mapped[list[str]] = mapped_column(JSON)
    # Surfaces (token audiences) this client may ask for.
    surfaces: Mapped[list[str]] = mapped_column(JSON)
    # Public JWKS for private_key_jwt client authentication (confidential clients).
    jwks: Mapped[dict[str, object] | None] = mapped_column(JSON)
    require_dpop: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime]
    disabled_at: Mapped[datetime | None]


class AuthorizationCode(Base):
    __tablename__ = "oauth_authorization_codes"

    id: Mapped[str] = id_column()
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    redirect_uri: Mapped[str] = mapped_column(String(500))
    scope: Mapped[str] = mapped_column(String(1000))
    surface: Mapped[str] = mapped_column(String(16))
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(8))
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[datetime]
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class RefreshToken(Base):
    """One refresh token of a family. Rotation marks it used and issues the next; presenting
    a used one revokes the whole family."""

    __tablename__ = "oauth_refresh_tokens"

    id: Mapped[str] = id_column()
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    family_id: Mapped[str] = mapped_column(String(40), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    scope: Mapped[str] = mapped_column(String(1000))
    surface: Mapped[str] = mapped_column(String(16))
    dpop_jkt: Mapped[str | None] = mapped_column(String(64))
    auth_time: Mapped[datetime]
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    revoked_reason: Mapped[str | None] = mapped_column(String(64))


class DeviceAuthorizationStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    USED = "used"


class DeviceAuthorization(Base):
    __tablename__ = "oauth_device_authorizations"

    id: Mapped[str] = id_column()
    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id"))
    scope: Mapped[str] = mapped_column(String(1000))
    surface: Mapped[str] = mapped_column(String(16))
    status: Mapped[DeviceAuthorizationStatus] = mapped_column(
        str_enum(DeviceAuthorizationStatus, "device_authorization_status")
    )
    # The status is the version: an approval written only while the row is still as the
    # page read it (pending), so an approval racing a client revocation (denied) or the code's
    # use (used) fails with StaleDataError instead of writing over it.
    __mapper_args__ = {
        "version_id_col": status,
        "version_id_generator": False,
    }
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"))
    auth_time: Mapped[datetime | None]
    acr: Mapped[str | None] = mapped_column(String(64))
    amr: Mapped[list[str] | None] = mapped_column(JSON)
    interval_seconds: Mapped[int] = mapped_column(Integer)
    last_polled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]


class ConsentGrant(Base):
    """A person's consent to a client for a set of scopes on one surface, acting for one
    tenant (the consent screen's answer). Rows from before surface and tenant were recorded
    (both NULL) match no request: those people are asked again."""

    __tablename__ = "oauth_consents"

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id"))
    surface: Mapped[str | None] = mapped_column(String(16))
    tenant_id: Mapped[str | None] = mapped_column(ForeignKey("tenants.id"))
    scopes: Mapped[list[str]] = mapped_column(JSON)
    granted_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class RevocationKind(StrEnum):
    USER = "user"
    CLIENT = "client"
    TENANT = "tenant"
    FAMILY = "family"
    JTI = "jti"


class RevocationEpoch(Base):
    """Durable record of a revocation: tokens of ``subject`` issued at or before ``epoch`` are
    dead. Loaded into the fast revocation store at start-up and on change."""

    __tablename__ = "revocation_epochs"
    # Asked at every delayed command delivery (commands/dispatch.py): by kind and subject.
    __table_args__ = (Index("ix_revocation_epochs_kind_subject", "kind", "subject"),)

    id: Mapped[str] = id_column()
    kind: Mapped[RevocationKind] = mapped_column(str_enum(RevocationKind, "revocation_kind"))
    subject: Mapped[str] = mapped_column(String(64))
    epoch: Mapped[datetime]
    # For a jti: when the token would have expired anyway (the row can be purged after).
    until: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
