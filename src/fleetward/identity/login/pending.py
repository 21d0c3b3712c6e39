"""Pending logins: the server-side state between a correct password and the second factor.

The browser holds 256 random bits in the ``fw_pending`` cookie (HttpOnly, SameSite=Strict,
Path=/login, five minutes); only its SHA-256 is stored, with the user, where to return, the
client and the acr asked for. A pending login is not a session: nothing but the
second-factor steps reads it, and the one that succeeds consumes it with a conditional
UPDATE, so it yields at most one session even if two replicas race.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update

from fleetward.core.ids import new_id
from fleetward.identity.credential_models import PendingLogin
from fleetward.identity.login.request import LoginRequest
from fleetward.identity.models import User
from fleetward.services import ServiceContext

COOKIE_NAME = "fw_pending"
COOKIE_PATH = "/login"
LIFETIME = timedelta(minutes=5)
_MAX_COOKIE = 128


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("ascii")).hexdigest()


class PendingLogins:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def start(self, user: User, request: LoginRequest) -> tuple[str, PendingLogin]:
        """A new pending login; returns the cookie value (give it to the browser only)."""
        now = self._ctx.clock.now()
        value = secrets.token_urlsafe(32)
        pending = PendingLogin(
            id=new_id("pnd"),
            token_hash=_digest(value),
            user_id=user.id,
            return_to=request.return_to,
            client_id=request.client_id,
            required_acr=request.required_acr.value if request.required_acr else None,
            created_at=now,
            expires_at=now + LIFETIME,
            completed_at=None,
        )
        self._ctx.session.add(pending)
        await self._ctx.session.flush()
        return value, pending

    async def current(self, cookie_value: str | None) -> PendingLogin | None:
        """The live pending login for a cookie, or None (absent, unknown, expired, used)."""
        if not cookie_value or len(cookie_value) > _MAX_COOKIE or not cookie_value.isascii():
            return None
        found = await self._ctx.session.scalar(
            select(PendingLogin).where(PendingLogin.token_hash == _digest(cookie_value))
        )
        if found is None or found.completed_at is not None:
            return None
        return found if found.expires_at > self._ctx.clock.now() else None

    async def complete(self, pending: PendingLogin) -> bool:
        """Consume it; False if another request already did (or it has expired)."""
        now = self._ctx.clock.now()
        result = await self._ctx.session.execute(
            update(PendingLogin)
            .where(
                PendingLogin.id == pending.id,
                PendingLogin.completed_at.is_(None),
                PendingLogin.expires_at > now,
            )
            .values(completed_at=now)
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) == 1
