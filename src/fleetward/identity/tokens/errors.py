"""Caller-visible token errors.

Both classes are :class:`~fleetward.core.errors.Unauthenticated` (HTTP 401). The ``reason`` is
a stable machine-readable string from the ``*_REASONS`` sets below, so routers, audit events and
tests can match on it; ``detail`` stays generic and never repeats token content.
"""

from __future__ import annotations

from typing import Final

from fleetward.core.errors import Unauthenticated

# Every reason AccessTokenValidator may raise. Changing one is a breaking change for
# dashboards and detections that count them.
ACCESS_TOKEN_REASONS: Final = frozenset(
    {
        "token-too-large",
        "malformed",
        "malformed-header",
        "alg-not-allowed",
        "wrong-type",
        "crit-header",
        "key-reference-header",
        "header-not-allowed",
        "unknown-key",
        "bad-signature",
        "malformed-payload",
        "missing-claim",
        "invalid-claim",
        "wrong-issuer",
        "wrong-audience",
        "lifetime-too-long",
        "expired",
        "not-yet-valid",
        "iat-in-future",
        "revoked",
        "revocation-unavailable",
    }
)

# Every reason DpopVerifier may raise.
DPOP_REASONS: Final = frozenset(
    {
        "proof-too-large",
        "malformed",
        "malformed-header",
        "wrong-type",
        "alg-not-allowed",
        "header-not-allowed",
        "missing-jwk",
        "private-key-in-header",
        "invalid-jwk",
        "bad-signature",
        "malformed-payload",
        "missing-claim",
        "invalid-claim",
        "wrong-method",
        "wrong-url",
        "iat-too-old",
        "iat-in-future",
        "missing-ath",
        "wrong-ath",
        "key-mismatch",
        "replayed",
        "replay-check-unavailable",
    }
)


class InvalidToken(Unauthenticated):
    """An access token was refused. ``reason`` is one of :data:`ACCESS_TOKEN_REASONS`."""

    code = "invalid-token"
    title = "Invalid access token"

    def __init__(self, detail: str = "The access token is not valid.", *, reason: str) -> None:
        if reason not in ACCESS_TOKEN_REASONS:
            # A typo here would silently create a new reason nobody alerts on.
            raise ValueError(f"unregistered access token reason: {reason}")
        super().__init__(detail, reason=reason)


class InvalidDpopProof(Unauthenticated):
    """A DPoP proof was refused. ``reason`` is one of :data:`DPOP_REASONS`."""

    code = "invalid-dpop-proof"
    title = "Invalid DPoP proof"

    def __init__(self, detail: str = "The DPoP proof is not valid.", *, reason: str) -> None:
        if reason not in DPOP_REASONS:
            raise ValueError(f"unregistered DPoP reason: {reason}")
        super().__init__(detail, reason=reason)
