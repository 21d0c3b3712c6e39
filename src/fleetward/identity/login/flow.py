"""The password step, and signing in once every required factor is done.

Each attempt runs in two transactions: the first reserves the failure counters and commits
(so the attempt is counted whatever happens next, on every replica), the second checks the
secret and either refunds the counters and moves on, or records the failure. A wrong
username and a wrong password take the same path: the same argon2 work (against a dummy
hash for unknown accounts), the same counters, the same answer.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from sqlalchemy import select

from fleetward.audit.recorder import Target
from fleetward.identity.acr import Acr, Amr
from fleetward.identity.directory import is_valid_name
from fleetward.identity.login import policy, trail
from fleetward.identity.login.limits import (
    Factor,
    account_of,
    keys_for,
    normalise_username,
)
from fleetward.identity.login.outcomes import (
    Failure,
    Outcome,
    Refused,
    SecondFactorNeeded,
    SignedIn,
)
from fleetward.identity.login.pending import PendingLogins
from fleetward.identity.login.request import LoginRequest
from fleetward.identity.login.runtime import LoginRuntime
from fleetward.identity.login.throttle import Blocked, Reservation, Throttle
from fleetward.identity.models import User
from fleetward.identity.oauth_models import Client
from fleetward.identity.sessions import LoginSessions
from fleetward.services import ServiceContext

MAX_USERNAME = 64
# Far above any passphrase; bounds the work one request can ask of argon2.
MAX_PASSWORD = 1024


async def sign_in(
    ctx: ServiceContext,
    user: User,
    *,
    amr: list[Amr],
    return_to: str,
    network: str,
) -> SignedIn:
    acr = policy.RESULT[amr[-1]] if len(amr) > 1 else Acr.PASSWORD
    cookie, _session = await LoginSessions(ctx).start(user, acr=acr, amr=amr)
    trail.succeeded(ctx, user, acr=acr, amr=amr, network=network)
    return SignedIn(session_cookie=cookie, return_to=return_to, acr=acr)


def record_lockouts(ctx: ServiceContext, target: Target, reservation: Reservation) -> None:
    for key in reservation.started_lockout:
        trail.locked_out(ctx, target, key)


class PasswordStep:
    def __init__(self, runtime: LoginRuntime) -> None:
        self._rt = runtime
        self._platform = runtime.platform

    async def attempt(
        self, username: str, password: str, request: LoginRequest, *, network: str
    ) -> Outcome:
        account = account_of(username)
        async with self._platform.services() as (uow, ctx):
            client_id = await _known_client(ctx, request.client_id)
            keys = keys_for(Factor.PASSWORD, account=account, network=network)
            reserved = await Throttle(ctx).reserve(keys)
            await uow.commit()
        if isinstance(reserved, Blocked):
            return Refused(Failure.THROTTLED, reserved.retry_after)

        async with self._platform.services() as (uow, ctx):
            found = await _find(ctx, username)
            user = await self._verified(found, username, password)
            if user is None:
                target = trail.target_for(found, account)
                trail.failed(
                    ctx,
                    target,
                    factor=Factor.PASSWORD,
                    reason=Failure.BAD_CREDENTIALS,
                    network=network,
                    client=client_id,
                )
                record_lockouts(ctx, target, reserved)
                if await Throttle(ctx).record_spray(network, account):
                    trail.spraying(ctx, network)
                await uow.commit()
                return Refused(Failure.BAD_CREDENTIALS)
            await Throttle(ctx).refund(reserved)
            self._upgrade_hash(user, password)
            # Only a registered client id travels on to the second step's counters.
            verified = replace(request, client_id=client_id)
            outcome = await self._after_password(ctx, user, verified, network)
            await uow.commit()
            return outcome

    async def _verified(self, user: User | None, username: str, password: str) -> User | None:
        """``user`` if the password is theirs; the same argon2 work whether or not it is."""
        if len(username) > MAX_USERNAME or len(password) > MAX_PASSWORD:
            return None
        stored = None
        if user is not None and user.disabled_at is None:
            stored = user.password_hash
        # argon2 is CPU-bound: run it off the event loop.
        matches = await asyncio.to_thread(
            self._platform.passwords.verify, stored or self._rt.dummy_hash, password
        )
        return user if matches and stored is not None else None

    def _upgrade_hash(self, user: User, password: str) -> None:
        if user.password_hash and self._platform.passwords.needs_rehash(user.password_hash):
            user.password_hash = self._platform.passwords.hash(password)

    async def _after_password(
        self, ctx: ServiceContext, user: User, request: LoginRequest, network: str
    ) -> Outcome:
        factors = await policy.enrolled(ctx, user.id)
        needed = policy.requirement(
            await policy.is_high_risk(ctx, user), factors, request.required_acr
        )
        if needed.refusal is not None:
            reason = Failure(needed.refusal)
            trail.failed(
                ctx,
                trail.user_target(user),
                factor=Factor.PASSWORD,
                reason=reason,
                network=network,
                client=request.client_id,
            )
            return Refused(reason)
        if needed.second_factor:
            cookie, _pending = await PendingLogins(ctx).start(user, request)
            return SecondFactorNeeded(cookie)
        return await sign_in(
            ctx, user, amr=[Amr.PASSWORD], return_to=request.return_to, network=network
        )


async def _find(ctx: ServiceContext, username: str) -> User | None:
    name = normalise_username(username)
    if len(username) > MAX_USERNAME or not is_valid_name(name):
        # No account has such a name; not asked of the store, which may not even hold it
        # (PostgreSQL text cannot contain NUL). The caller still spends the dummy hash.
        return None
    return await ctx.session.scalar(select(User).where(User.username == name))


async def _known_client(ctx: ServiceContext, client_id: str | None) -> str | None:
    # Only registered clients get a counter: made-up ids would only fill the table.
    if client_id is None:
        return None
    return client_id if await ctx.session.get(Client, client_id) is not None else None
