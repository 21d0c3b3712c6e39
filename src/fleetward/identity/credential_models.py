"""People's authentication factors and interactive login sessions.

Secrets are never stored in the clear: TOTP seeds are encrypted with the platform's data key,
recovery codes and session cookies are stored as hashes.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import JSON, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import Base, id_column, str_enum


class TotpFactor(Base):
    __tablename__ = "totp_factors"

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), unique=True)
    # The base32 seed, encrypted (AES-GCM) with the platform data key.
    encrypted_secret: Mapped[bytes] = mapped_column(LargeBinary)
    # The last accepted time step: a code is accepted once, never replayed.
    last_used_step: Mapped[int | None] = mapped_column(Integer)
    confirmed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class WebAuthnCredential(Base):
    __tablename__ = "webauthn_credentials"

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    credential_id: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    sign_count: Mapped[int] = mapped_column(Integer)
    transports: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class RecoveryCode(Base):
    __tablename__ = "recovery_codes"

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class LoginSession(Base):
    """A browser's authenticated session at the authorization server (cookie ``fw_login``)."""

    __tablename__ = "login_sessions"

    id: Mapped[str] = id_column()
    # SHA-256 of the cookie value; the value itself exists only in the browser.
    cookie_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    auth_time: Mapped[datetime]
    acr: Mapped[str] = mapped_column(String(64))
    amr: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]


class LoginThrottle(Base):
    """Failure counters for login, TOTP and recovery, per key (account, IP, client)."""

    __tablename__ = "login_throttles"

    id: Mapped[str] = id_column()
    # e.g. "login:account:usr_…", "totp:ip:203.0.113.7"; one row per key.
    key: Mapped[str] = mapped_column(String(200), unique=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_started_at: Mapped[datetime]
    blocked_until: Mapped[datetime | None]


class PendingLogin(Base):
    """Between a correct password and the second factor (cookie ``fw_pending``, 5 minutes).

    Holding one proves only the password: it is never a session, and it is consumed
    (``completed_at``) by the one second-factor step that succeeds.
    """

    __tablename__ = "pending_logins"

    id: Mapped[str] = id_column()
    # SHA-256 of the cookie value; the value itself exists only in the browser.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    return_to: Mapped[str] = mapped_column(String(2048))
    client_id: Mapped[str | None] = mapped_column(String(64))
    # The acr the authorization endpoint asked for, if any (an Acr value).
    required_acr: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


class WebAuthnCeremony(StrEnum):
    REGISTRATION = "registration"
    AUTHENTICATION = "authentication"


class WebAuthnChallenge(Base):
    """A WebAuthn challenge, single use, bound to a pending login or a login session."""

    __tablename__ = "webauthn_challenges"

    id: Mapped[str] = id_column()
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    ceremony: Mapped[WebAuthnCeremony] = mapped_column(
        str_enum(WebAuthnCeremony, "webauthn_ceremony")
    )
    # The PendingLogin (authentication) or LoginSession (registration) id it belongs to.
    bound_to: Mapped[str] = mapped_column(String(40), index=True)
    challenge: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
