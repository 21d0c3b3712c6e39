"""The second step: TOTP, a recovery code or a WebAuthn assertion after a correct password.

Every method runs through one runner, so each gets the same guarantees: a live pending login
is required, the method must be able to satisfy the requested acr, the counters are reserved
and committed before the secret is checked, and a failure rolls back everything the check
did (a recovery code is not spent, a TOTP step is not burned) and is then recorded on its
own. Only the WebAuthn challenge is consumed up front, with the reservation: a challenge is
good for one try whatever its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from fleetward.audit.recorder import Target
from fleetward.identity.acr import Acr, Amr
from fleetward.identity.credential_models import PendingLogin, WebAuthnCeremony
from fleetward.identity.login import policy, trail
from fleetward.identity.login.challenges import Challenges
from fleetward.identity.login.flow import record_lockouts, sign_in
from fleetward.identity.login.limits import Factor, keys_for
from fleetward.identity.login.outcomes import Failure, Refused, SignedIn
from fleetward.identity.login.pending import PendingLogins
from fleetward.identity.login.recovery import RecoveryCodes, RecoveryVerdict, cooldown_key
from fleetward.identity.login.runtime import LoginRuntime
from fleetward.identity.login.throttle import Blocked, Throttle
from fleetward.identity.login.totp import TotpFactors, TotpVerdict
from fleetward.identity.login.webauthn import AssertionVerdict, WebAuthnKeys
from fleetward.identity.models import User
from fleetward.services import ServiceContext

ACCEPTED = "accepted"


class Method(Protocol):
    factor: Factor
    amr: Amr

    async def prepare(self, ctx: ServiceContext, pending: PendingLogin) -> Refused | None:
        """Before the reservation, in its committed transaction."""

    async def verify(self, ctx: ServiceContext, user: User) -> str:
        """``accepted`` or a Failure value; its writes are kept only when accepted."""


@dataclass
class TotpMethod:
    runtime: LoginRuntime
    code: str
    factor: Factor = Factor.TOTP
    amr: Amr = Amr.OTP

    async def prepare(self, ctx: ServiceContext, pending: PendingLogin) -> Refused | None:
        if not await TotpFactors(ctx, self.runtime.platform.identity.data_key).enrolled(
            pending.user_id
        ):
            return Refused(Failure.FACTOR_NOT_AVAILABLE)
        return None

    async def verify(self, ctx: ServiceContext, user: User) -> str:
        data_key = self.runtime.platform.identity.data_key
        verdict = await TotpFactors(ctx, data_key).verify(user.id, self.code)
        return ACCEPTED if verdict is TotpVerdict.ACCEPTED else verdict.value


@dataclass
class RecoveryMethod:
    runtime: LoginRuntime
    code: str
    factor: Factor = Factor.RECOVERY
    amr: Amr = Amr.RECOVERY_CODE

    async def prepare(self, ctx: ServiceContext, pending: PendingLogin) -> Refused | None:
        # Refused before counting or checking anything: no code is burned in a cool-down.
        until = await Throttle(ctx).blocked_until(cooldown_key(pending.user_id))
        if until is not None:
            wait = max(1, int((until - ctx.clock.now()).total_seconds()))
            return Refused(Failure.RECOVERY_COOLDOWN, wait)
        return None

    async def verify(self, ctx: ServiceContext, user: User) -> str:
        verdict = await RecoveryCodes(ctx, self.runtime.recovery_pepper).use(user, self.code)
        return ACCEPTED if verdict is RecoveryVerdict.ACCEPTED else verdict.value


@dataclass
class WebAuthnMethod:
    runtime: LoginRuntime
    credential: dict[str, Any]
    factor: Factor = Factor.WEBAUTHN
    amr: Amr = Amr.HARDWARE_KEY
    _challenge: bytes | None = field(default=None, repr=False)

    async def prepare(self, ctx: ServiceContext, pending: PendingLogin) -> Refused | None:
        challenges = Challenges(ctx)
        self._challenge = await challenges.take(
            WebAuthnCeremony.AUTHENTICATION, bound_to=pending.id
        )
        return None

    async def verify(self, ctx: ServiceContext, user: User) -> str:
        keys = WebAuthnKeys(ctx, self.runtime.rp)
        verdict = await keys.verify_assertion(user.id, self.credential, self._challenge)
        return ACCEPTED if verdict is AssertionVerdict.ACCEPTED else verdict.value


def required_acr(pending: PendingLogin) -> Acr | None:
    return Acr(pending.required_acr) if pending.required_acr else None


@dataclass(frozen=True, slots=True)
class Offer:
    """The methods the second-step page shows: enrolled and strong enough for the request."""

    totp: bool
    webauthn: bool
    recovery: bool


class SecondFactor:
    def __init__(self, runtime: LoginRuntime) -> None:
        self._rt = runtime
        self._platform = runtime.platform

    async def attempt(
        self, pending_cookie: str | None, method: Method, *, network: str
    ) -> Refused | SignedIn:
        async with self._platform.services() as (uow, ctx):
            pending = await PendingLogins(ctx).current(pending_cookie)
            if pending is None:
                return Refused(Failure.NO_PENDING_LOGIN)
            # A method too weak for the requested acr is refused before anything else.
            refused: Refused | None = Refused(Failure.FACTOR_NOT_AVAILABLE)
            if policy.accepts(method.amr, required_acr(pending)):
                refused = await method.prepare(ctx, pending)
            if refused is not None:
                trail.failed(
                    ctx,
                    Target("user", pending.user_id),
                    factor=method.factor,
                    reason=refused.reason,
                    network=network,
                    client=pending.client_id,
                )
                await uow.commit()
                return refused
            keys = keys_for(method.factor, account=pending.user_id, network=network)
            client = pending.client_id
            reserved = await Throttle(ctx).reserve(keys)
            await uow.commit()
        if isinstance(reserved, Blocked):
            return Refused(Failure.THROTTLED, reserved.retry_after)

        async with self._platform.services() as (uow, ctx):
            pending = await PendingLogins(ctx).current(pending_cookie)
            user = None if pending is None else await ctx.session.get(User, pending.user_id)
            if pending is None or user is None or user.disabled_at is not None:
                return Refused(Failure.NO_PENDING_LOGIN)
            verdict = await method.verify(ctx, user)
            # complete() is the single-use gate: a racing request finds it consumed.
            if verdict == ACCEPTED and await PendingLogins(ctx).complete(pending):
                await Throttle(ctx).refund(reserved)
                outcome = await sign_in(
                    ctx,
                    user,
                    amr=[Amr.PASSWORD, method.amr],
                    return_to=pending.return_to,
                    network=network,
                )
                await uow.commit()
                return outcome
            # Leaving without commit undoes whatever the check wrote.
        failure = Failure.NO_PENDING_LOGIN if verdict == ACCEPTED else Failure(verdict)
        async with self._platform.services() as (uow, ctx):
            target = trail.user_target(user)
            trail.failed(
                ctx, target, factor=method.factor, reason=failure, network=network, client=client
            )
            record_lockouts(ctx, target, reserved)
            await uow.commit()
        return Refused(failure)

    async def webauthn_options(self, pending_cookie: str | None) -> dict[str, Any] | Refused:
        async with self._platform.services() as (uow, ctx):
            pending = await PendingLogins(ctx).current(pending_cookie)
            if pending is None:
                return Refused(Failure.NO_PENDING_LOGIN)
            keys = WebAuthnKeys(ctx, self._rt.rp)
            if not await keys.credentials(pending.user_id):
                return Refused(Failure.FACTOR_NOT_AVAILABLE)
            challenge = await Challenges(ctx).issue(
                WebAuthnCeremony.AUTHENTICATION, user_id=pending.user_id, bound_to=pending.id
            )
            options = await keys.authentication_options(pending.user_id, challenge)
            await uow.commit()
            return options

    async def offer(self, pending_cookie: str | None) -> Offer | None:
        async with self._platform.services() as (_uow, ctx):
            pending = await PendingLogins(ctx).current(pending_cookie)
            if pending is None:
                return None
            factors = await policy.enrolled(ctx, pending.user_id)
            wanted = required_acr(pending)
            return Offer(
                totp=factors.totp and policy.accepts(Amr.OTP, wanted),
                webauthn=factors.webauthn and policy.accepts(Amr.HARDWARE_KEY, wanted),
                recovery=factors.recovery and policy.accepts(Amr.RECOVERY_CODE, wanted),
            )
