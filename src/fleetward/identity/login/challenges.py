"""WebAuthn challenges, kept server-side: single use, short-lived, bound to one ceremony.

A registration challenge belongs to a login session, an authentication challenge to a
pending login. Issuing a new one withdraws the earlier ones of the same binding, and taking
one is a conditional UPDATE, so a challenge is consumed exactly once across replicas —
whatever the outcome of the ceremony that presents it.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from sqlalchemy import select, update

from fleetward.core.ids import new_id
from fleetward.identity.credential_models import WebAuthnCeremony, WebAuthnChallenge
from fleetward.services import ServiceContext

LIFETIME = timedelta(minutes=5)
CHALLENGE_BYTES = 32


class Challenges:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def issue(self, ceremony: WebAuthnCeremony, *, user_id: str, bound_to: str) -> bytes:
        now = self._ctx.clock.now()
        await self._ctx.session.execute(
            update(WebAuthnChallenge)
            .where(
                WebAuthnChallenge.bound_to == bound_to,
                WebAuthnChallenge.ceremony == ceremony,
                WebAuthnChallenge.used_at.is_(None),
            )
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        challenge = secrets.token_bytes(CHALLENGE_BYTES)
        self._ctx.session.add(
            WebAuthnChallenge(
                id=new_id("wac"),
                user_id=user_id,
                ceremony=ceremony,
                bound_to=bound_to,
                challenge=challenge,
                created_at=now,
                expires_at=now + LIFETIME,
                used_at=None,
            )
        )
        await self._ctx.session.flush()
        return challenge

    async def take(self, ceremony: WebAuthnCeremony, *, bound_to: str) -> bytes | None:
        """The live challenge of this binding, consumed; None if there is none."""
        now = self._ctx.clock.now()
        found = await self._ctx.session.scalar(
            select(WebAuthnChallenge).where(
                WebAuthnChallenge.bound_to == bound_to,
                WebAuthnChallenge.ceremony == ceremony,
                WebAuthnChallenge.used_at.is_(None),
                WebAuthnChallenge.expires_at > now,
            )
        )
        if found is None:
            return None
        result = await self._ctx.session.execute(
            update(WebAuthnChallenge)
            .where(WebAuthnChallenge.id == found.id, WebAuthnChallenge.used_at.is_(None))
            .values(used_at=now)
            .execution_options(synchronize_session=False)
        )
        return found.challenge if getattr(result, "rowcount", 0) == 1 else None
