"""What a login step answers: refused (with a stable reason), a second factor needed, or
signed in. Values, not exceptions, so every refusal is audited and rendered the same way."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from fleetward.identity.acr import Acr


class Failure(StrEnum):
    """Stable reason codes (audit ``reason``; never shown verbatim to the person)."""

    BAD_CREDENTIALS = "bad-credentials"
    THROTTLED = "throttled"
    MFA_NOT_ENROLLED = "mfa-not-enrolled"
    ACR_UNATTAINABLE = "acr-unattainable"
    NO_PENDING_LOGIN = "no-pending-login"
    FACTOR_NOT_AVAILABLE = "factor-not-available"
    BAD_TOTP = "bad-totp"
    TOTP_REPLAYED = "totp-replayed"
    BAD_RECOVERY_CODE = "bad-recovery-code"
    RECOVERY_COOLDOWN = "recovery-cooldown"
    WEBAUTHN_CHALLENGE = "webauthn-challenge"
    WEBAUTHN_UNKNOWN_CREDENTIAL = "webauthn-unknown-credential"
    WEBAUTHN_SIGN_COUNT = "webauthn-sign-count"
    WEBAUTHN_INVALID = "webauthn-invalid"


@dataclass(frozen=True, slots=True)
class Refused:
    reason: Failure
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class SecondFactorNeeded:
    pending_cookie: str


@dataclass(frozen=True, slots=True)
class SignedIn:
    session_cookie: str
    return_to: str
    acr: Acr


Outcome = Refused | SecondFactorNeeded | SignedIn
