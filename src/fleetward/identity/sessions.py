"""Interactive login sessions at the authorization server.

The login pages create one after the password and any second factor succeed; the
authorization endpoint reads it (cookie ``fw_login``) and re-authenticates when it is absent,
too old for ``max_age`` or too weak for the requested ``acr``. The cookie value is 256 random
bits; only its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select

from fleetward.core.ids import new_id
from fleetward.identity.acr import Acr, Amr
from fleetward.identity.credential_models import LoginSession
from fleetward.identity.models import User
from fleetward.services import ServiceContext

COOKIE_NAME = "fw_login"
SESSION_LIFETIME = timedelta(hours=8)


def _digest(cookie_value: str) -> str:
    return hashlib.sha256(cookie_value.encode("utf-8")).hexdigest()


class LoginSessions:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def start(
        self, user: User, *, acr: Acr, amr: Sequence[Amr], auth_time: datetime | None = None
    ) -> tuple[str, LoginSession]:
        """A new session; returns the cookie value (give it to the browser, store nothing)."""
        now = self._ctx.clock.now()
        cookie_value = secrets.token_urlsafe(32)
        session = LoginSession(
            id=new_id("lgn"),
            cookie_hash=_digest(cookie_value),
            user_id=user.id,
            auth_time=auth_time or now,
            acr=acr.value,
            amr=[a.value for a in amr],
            created_at=now,
            expires_at=now + SESSION_LIFETIME,
            ended_at=None,
        )
        self._ctx.session.add(session)
        await self._ctx.session.flush()
        return cookie_value, session

    async def current(self, cookie_value: str | None) -> LoginSession | None:
        """The live session for a cookie, or None (absent, unknown, expired or ended)."""
        if not cookie_value or len(cookie_value) > 128:
            return None
        found = await self._ctx.session.scalar(
            select(LoginSession).where(LoginSession.cookie_hash == _digest(cookie_value))
        )
        now = self._ctx.clock.now()
        if found is None or found.ended_at is not None or found.expires_at <= now:
            return None
        return found

    async def end(self, session: LoginSession) -> None:
        session.ended_at = self._ctx.clock.now()
        await self._ctx.session.flush()

    async def end_all_for(self, user: User) -> None:
        now = self._ctx.clock.now()
        rows = await self._ctx.session.scalars(
            select(LoginSession).where(
                LoginSession.user_id == user.id, LoginSession.ended_at.is_(None)
            )
        )
        for row in rows:
            row.ended_at = now
        await self._ctx.session.flush()


def satisfies(
    session: LoginSession, *, required_acr: Acr | None, max_age: int | None, now: datetime
) -> bool:
    """Whether a session is strong and fresh enough for a request's acr_values and max_age."""
    if required_acr is not None and not Acr(session.acr).satisfies(required_acr):
        return False
    return max_age is None or now - session.auth_time <= timedelta(seconds=max_age)
