"""Self-service for a signed-in person: sign out, new recovery codes, add a security key.

Changing one's own factors needs a *recent* login (``REAUTH_WINDOW``): a session cookie
stolen hours ago must not be enough to plant a new key or print fresh recovery codes.
Recovery codes also need a login that used a second factor, since they stand in for one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor
from fleetward.identity.acr import Acr
from fleetward.identity.credential_models import (
    LoginSession,
    WebAuthnCeremony,
    WebAuthnCredential,
)
from fleetward.identity.login import trail
from fleetward.identity.login.challenges import Challenges
from fleetward.identity.login.errors import (
    CredentialAlreadyRegistered,
    FactorNotAvailable,
    NotSignedIn,
    ReauthenticationRequired,
    RegistrationRejected,
)
from fleetward.identity.login.policy import enrolled
from fleetward.identity.login.recovery import RecoveryCodes
from fleetward.identity.login.runtime import LoginRuntime
from fleetward.identity.login.webauthn import BAD_INPUT, WebAuthnKeys
from fleetward.identity.models import User
from fleetward.identity.sessions import LoginSessions
from fleetward.services import ServiceContext

REAUTH_WINDOW = timedelta(minutes=15)


@dataclass(frozen=True, slots=True)
class AccountView:
    user: User
    session: LoginSession
    keys: int
    codes: int


async def _signed_in(ctx: ServiceContext, cookie: str | None) -> tuple[User, LoginSession]:
    session = await LoginSessions(ctx).current(cookie)
    user = None if session is None else await ctx.session.get(User, session.user_id)
    if session is None or user is None or user.disabled_at is not None:
        raise NotSignedIn("sign in first", reason="no-session")
    return user, session


def _require_recent(ctx: ServiceContext, session: LoginSession) -> None:
    if ctx.clock.now() - session.auth_time > REAUTH_WINDOW:
        raise ReauthenticationRequired("sign in again to change your factors", reason="stale")


class Account:
    def __init__(self, runtime: LoginRuntime) -> None:
        self._rt = runtime
        self._platform = runtime.platform

    async def view(self, cookie: str | None) -> AccountView:
        async with self._platform.services() as (_uow, ctx):
            user, session = await _signed_in(ctx, cookie)
            keys = await WebAuthnKeys(ctx, self._rt.rp).credentials(user.id)
            codes = await RecoveryCodes(ctx, self._rt.recovery_pepper).remaining(user.id)
            return AccountView(user, session, len(keys), codes)

    async def sign_out(self, cookie: str | None) -> None:
        """End the session behind ``cookie``, if there is one (signing out twice is fine)."""
        async with self._platform.services() as (uow, ctx):
            session = await LoginSessions(ctx).current(cookie)
            if session is None:
                return
            user = await ctx.session.get(User, session.user_id)
            await LoginSessions(ctx).end(session)
            trail.ended(ctx, session.user_id, user.home_tenant_id if user else None)
            await uow.commit()

    async def new_recovery_codes(self, cookie: str | None) -> list[str]:
        async with self._platform.services() as (uow, ctx):
            user, session = await _signed_in(ctx, cookie)
            _require_recent(ctx, session)
            if not Acr(session.acr).satisfies(Acr.MFA):
                raise ReauthenticationRequired(
                    "sign in with your second factor first", reason="acr"
                )
            if not (await enrolled(ctx, user.id)).any_second_factor:
                raise FactorNotAvailable("enrol a second factor first", reason="no-factor")
            actor = Actor.user(user.id, user.home_tenant_id)
            codes = await RecoveryCodes(ctx, self._rt.recovery_pepper).regenerate(user, actor=actor)
            await uow.commit()
            return codes

    async def registration_options(self, cookie: str | None) -> dict[str, Any]:
        async with self._platform.services() as (uow, ctx):
            user, session = await _signed_in(ctx, cookie)
            _require_recent(ctx, session)
            challenge = await Challenges(ctx).issue(
                WebAuthnCeremony.REGISTRATION, user_id=user.id, bound_to=session.id
            )
            options = await WebAuthnKeys(ctx, self._rt.rp).registration_options(user, challenge)
            await uow.commit()
            return options

    async def register(self, cookie: str | None, credential: dict[str, Any]) -> None:
        # The challenge is taken in its own transaction: one try per challenge, whatever
        # happens to the registration.
        async with self._platform.services() as (uow, ctx):
            user, session = await _signed_in(ctx, cookie)
            _require_recent(ctx, session)
            challenge = await Challenges(ctx).take(
                WebAuthnCeremony.REGISTRATION, bound_to=session.id
            )
            await uow.commit()
        if challenge is None:
            raise RegistrationRejected("ask for registration options first", reason="challenge")
        async with self._platform.services() as (uow, ctx):
            keys = WebAuthnKeys(ctx, self._rt.rp)
            try:
                row = keys.verify_registration(user, credential, challenge)
            except BAD_INPUT:
                raise RegistrationRejected(
                    "the security key's response did not verify", reason="invalid"
                ) from None
            taken = await ctx.session.scalar(
                select(WebAuthnCredential.id).where(
                    WebAuthnCredential.credential_id == row.credential_id
                )
            )
            if taken is not None:
                raise CredentialAlreadyRegistered("this key is already registered")
            ctx.session.add(row)
            ctx.audit.record(
                ctx.session,
                EventName.MFA_ENROLLED,
                actor=Actor.user(user.id, user.home_tenant_id),
                target=trail.user_target(user),
                details={"method": "webauthn"},
            )
            try:
                await uow.commit()
            except IntegrityError:
                # The same key registered concurrently: the unique constraint decided.
                raise CredentialAlreadyRegistered("this key is already registered") from None

    async def current_session(self, cookie: str | None) -> LoginSession | None:
        async with self._platform.services() as (_uow, ctx):
            return await LoginSessions(ctx).current(cookie)
