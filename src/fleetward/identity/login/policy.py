"""Which second factor a login needs, which methods may satisfy it, and what each yields.

* A person holding a high-risk role (any active membership, any tenant) must complete TOTP
  or WebAuthn; without either enrolled they cannot sign in at all (fail closed).
* Anyone else with a second factor enrolled uses it; a password alone is then not enough.
* A requested acr is honoured: MFA needs any second factor, PHISHING_RESISTANT needs
  WebAuthn (TOTP codes and recovery codes can be phished, so they never satisfy it).
* Results: password -> PASSWORD; +TOTP -> MFA [pwd, otp]; +WebAuthn -> PHISHING_RESISTANT
  [pwd, hwk]; +recovery code -> MFA [pwd, rec].
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from fleetward.core.windows import is_active
from fleetward.identity.acr import Acr, Amr
from fleetward.identity.credential_models import RecoveryCode, TotpFactor, WebAuthnCredential
from fleetward.identity.models import HIGH_RISK_ROLES, Membership, User
from fleetward.services import ServiceContext

RESULT: dict[Amr, Acr] = {
    Amr.OTP: Acr.MFA,
    Amr.HARDWARE_KEY: Acr.PHISHING_RESISTANT,
    Amr.RECOVERY_CODE: Acr.MFA,
}


@dataclass(frozen=True, slots=True)
class Enrolled:
    totp: bool
    webauthn: bool
    recovery: bool

    @property
    def any_second_factor(self) -> bool:
        # Recovery codes are a fallback for a factor, never a factor of their own.
        return self.totp or self.webauthn


@dataclass(frozen=True, slots=True)
class Requirement:
    """``refusal`` is set when no available method can satisfy the login."""

    second_factor: bool
    refusal: str | None = None


async def enrolled(ctx: ServiceContext, user_id: str) -> Enrolled:
    session = ctx.session
    totp = await session.scalar(
        select(func.count())
        .select_from(TotpFactor)
        .where(TotpFactor.user_id == user_id, TotpFactor.confirmed_at.is_not(None))
    )
    keys = await session.scalar(
        select(func.count())
        .select_from(WebAuthnCredential)
        .where(WebAuthnCredential.user_id == user_id, WebAuthnCredential.revoked_at.is_(None))
    )
    codes = await session.scalar(
        select(func.count())
        .select_from(RecoveryCode)
        .where(RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None))
    )
    return Enrolled(totp=bool(totp), webauthn=bool(keys), recovery=bool(codes))


async def is_high_risk(ctx: ServiceContext, user: User) -> bool:
    rows = await ctx.session.scalars(
        select(Membership).where(
            Membership.user_id == user.id, Membership.role.in_(sorted(HIGH_RISK_ROLES))
        )
    )
    now = ctx.clock.now()
    return any(is_active(m.valid_from, m.valid_until, now) for m in rows)


def requirement(high_risk: bool, factors: Enrolled, required_acr: Acr | None) -> Requirement:
    if required_acr is Acr.PHISHING_RESISTANT and not factors.webauthn:
        return Requirement(second_factor=True, refusal="acr-unattainable")
    needs = (
        high_risk
        or factors.any_second_factor
        or (required_acr is not None and required_acr.strength > Acr.PASSWORD.strength)
    )
    if needs and not factors.any_second_factor:
        return Requirement(second_factor=True, refusal="mfa-not-enrolled")
    return Requirement(second_factor=needs)


def accepts(method: Amr, required_acr: Acr | None) -> bool:
    """Whether completing ``method`` after the password satisfies the requested acr."""
    return required_acr is None or RESULT[method].satisfies(required_acr)
