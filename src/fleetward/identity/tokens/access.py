"""Validating RFC 9068 access tokens; every API router authenticates through here.

:meth:`AccessTokenValidator.validate` refuses, with a stable reason, anything that is not an
ES256 ``at+jwt`` signed by one of our publishable keys, issued by us, for this surface, within
its time window and not revoked. The order of checks is part of the design:

1. size cap, before any parsing (bounded work for any input);
2. strict compact shape and header (see :mod:`.compact`), then the header allow-list:
   ``alg`` exactly ``ES256``, ``typ`` exactly ``at+jwt``, no ``crit``, no key-carrying or
   key-locating member (``jku x5u jwk x5c x5t x5t#S256``: never followed, never trusted), and
   nothing but ``alg typ kid``; the kid is only ever a dictionary key into the keyring;
3. signature (joserfc's ES256 algorithm with the keyring's public key; we call the
   algorithm directly rather than ``jws.deserialize_compact`` because the parsing that wraps it
   is already done, more strictly, in step 2; doing it twice cost a quarter of a validation),
   and only then the payload is parsed;
4. claim presence and types, issuer, lifetime cap: static, so cacheable;
5. on every call, cached or not: signing key still publishable, audience = this surface,
   exp/nbf/iat against the clock with leeway, then the revocation check, which fails closed.

Names: ``unverified_header`` is read before the signature is checked and is only used to pick
the key and to refuse; ``claims`` always means verified claims.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, Final

from joserfc.errors import JoseError

from fleetward.core.clock import Clock
from fleetward.core.surfaces import Surface
from fleetward.identity.tokens.cache import CachedToken, VerifiedTokenCache, token_digest
from fleetward.identity.tokens.claims import AccessTokenClaims, ClaimError
from fleetward.identity.tokens.compact import CompactError, split_compact
from fleetward.identity.tokens.errors import InvalidToken
from fleetward.identity.tokens.issuing import (
    AT_JWT_TYP,
    DEFAULT_MAX_LIFETIME,
    DEFAULT_MAX_TOKEN_BYTES,
    ES256,
    AccessTokenIssuer,
    IssuedToken,
)
from fleetward.identity.tokens.keys import SIGNING_ALG, Keyring
from fleetward.identity.tokens.revocation import RevocationChecker

__all__ = ["AccessTokenIssuer", "AccessTokenValidator", "IssuedToken"]

logger = logging.getLogger(__name__)

# Header members that carry or locate a key or certificate. Trusting any of them lets the
# token choose its own verification key; we never fetch or follow them, we refuse them.
KEY_REFERENCE_HEADERS: Final = frozenset({"jku", "x5u", "jwk", "x5c", "x5t", "x5t#S256"})
ALLOWED_HEADERS: Final = frozenset({"alg", "typ", "kid"})
DEFAULT_LEEWAY: Final = timedelta(seconds=30)
DEFAULT_CACHE_SIZE: Final = 10_000
DEFAULT_REVOCATION_TIMEOUT: Final = timedelta(seconds=1)


class AccessTokenValidator:
    def __init__(
        self,
        keyring: Keyring,
        issuer: str,
        clock: Clock,
        revocations: RevocationChecker,
        leeway: timedelta = DEFAULT_LEEWAY,
        max_lifetime: timedelta = DEFAULT_MAX_LIFETIME,
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        revocation_timeout: timedelta | None = DEFAULT_REVOCATION_TIMEOUT,
    ) -> None:
        """``cache_size=0`` disables the verified-token cache. ``revocation_timeout`` bounds
        each revocation check of a checker that does I/O; running out is treated like an
        error (refused)."""
        if not issuer:
            raise ValueError("issuer must not be empty")
        if leeway < timedelta(0) or leeway > keyring.skew:
            # A verifier more lenient than the keyring's skew could accept a token whose key
            # has already left the JWKS other verifiers use.
            raise ValueError("leeway must be between 0 and the keyring's skew")
        if max_lifetime > keyring.max_token_lifetime:
            raise ValueError("max_lifetime exceeds the keyring's max_token_lifetime")
        self._keyring = keyring
        self._issuer = issuer
        self._clock = clock
        self._revocations = revocations
        self._leeway = leeway.total_seconds()
        self._max_lifetime = max_lifetime
        self._max_lifetime_seconds = max_lifetime.total_seconds()
        self._max_token_bytes = max_token_bytes
        self._cache = VerifiedTokenCache(cache_size) if cache_size > 0 else None
        # No timer for checkers that never await: it could not fire, and costs ~10 us a call.
        self._revocation_timeout = (
            revocation_timeout.total_seconds()
            if revocation_timeout is not None and revocations.does_io
            else None
        )

    async def validate(self, raw: str, *, surface: Surface) -> AccessTokenClaims:
        """Return the verified claims of ``raw`` for ``surface`` or raise :class:`InvalidToken`."""
        now = self._clock.now()
        now_seconds = now.timestamp()
        if not isinstance(raw, str):
            raise _refuse("malformed")
        if len(raw) > self._max_token_bytes:
            raise _refuse("token-too-large")
        if not raw.isascii():  # after this, characters == bytes for the size cap
            raise _refuse("malformed")

        entry: CachedToken | None = None
        digest = b""
        if self._cache is not None:
            digest = token_digest(raw)
            entry = self._cache.get(digest, now_seconds)
            # The key may have aged out of the keyring since the entry was made.
            if entry is not None and (
                self._keyring.verification_key(entry.kid, now, self._max_lifetime) is None
            ):
                raise _refuse("unknown-key", entry.claims.jti)
        if entry is None:
            entry = self._verify(raw, now)
            if self._cache is not None:
                self._cache.put(digest, entry, now_seconds)

        claims = entry.claims
        self._check_per_call(claims, surface, now_seconds)
        await self._check_revocation(claims)
        return claims

    def _verify(self, raw: str, now: datetime) -> CachedToken:
        """Everything whose answer depends only on the token bytes (and the keyring)."""
        try:
            parts = split_compact(raw)
        except CompactError as exc:
            raise _refuse(exc.reason) from None
        kid = self._check_header(parts.unverified_header)
        key = self._keyring.verification_key(kid, now, self._max_lifetime)
        if key is None:
            raise _refuse("unknown-key")
        try:
            valid = ES256.verify(parts.signing_input, parts.signature(), key)
        except (CompactError, JoseError):
            valid = False
        if not valid:
            raise _refuse("bad-signature")
        try:
            verified_payload = parts.decode_payload()
        except CompactError as exc:
            raise _refuse(exc.reason) from None
        claims = self._static_claims(verified_payload)
        return CachedToken(claims=claims, kid=kid)

    @staticmethod
    def _check_header(unverified_header: Mapping[str, Any]) -> str:
        # `!=` against a str literal also refuses non-string values, and is case-sensitive:
        # "none", "None", "NONE", "HS256", "RS256", "es256" all fail here.
        if unverified_header.get("alg") != SIGNING_ALG:
            raise _refuse("alg-not-allowed")
        # Exactly "at+jwt": refuses ID tokens ("JWT" or absent), DPoP proofs ("dpop+jwt") and
        # logout/other tokens, so no other kind of JWT we sign can be replayed as access.
        if unverified_header.get("typ") != AT_JWT_TYP:
            raise _refuse("wrong-type")
        names = unverified_header.keys()
        if "crit" in names:
            raise _refuse("crit-header")
        if not KEY_REFERENCE_HEADERS.isdisjoint(names):
            raise _refuse("key-reference-header")
        if not ALLOWED_HEADERS.issuperset(names):
            raise _refuse("header-not-allowed")
        kid = unverified_header.get("kid")
        if not isinstance(kid, str):
            raise _refuse("unknown-key")
        return kid

    def _static_claims(self, payload: Mapping[str, Any]) -> AccessTokenClaims:
        try:
            claims = AccessTokenClaims.from_payload(payload)
        except ClaimError as exc:
            raise _refuse(exc.reason) from None
        if claims.iss != self._issuer:
            raise _refuse("wrong-issuer", claims.jti)
        if claims.exp <= claims.iat or claims.auth_time > claims.iat:
            raise _refuse("invalid-claim", claims.jti)
        if claims.exp - claims.iat > self._max_lifetime_seconds:
            raise _refuse("lifetime-too-long", claims.jti)
        return claims

    def _check_per_call(
        self, claims: AccessTokenClaims, surface: Surface, now_seconds: float
    ) -> None:
        if claims.aud != surface.audience:
            raise _refuse("wrong-audience", claims.jti)
        if now_seconds >= claims.exp + self._leeway:
            raise _refuse("expired", claims.jti)
        if now_seconds < claims.nbf - self._leeway:
            raise _refuse("not-yet-valid", claims.jti)
        if claims.iat > now_seconds + self._leeway:
            raise _refuse("iat-in-future", claims.jti)

    async def _check_revocation(self, claims: AccessTokenClaims) -> None:
        try:
            if self._revocation_timeout is None:
                why = await self._revocations.revoked_reason(claims)
            else:
                async with asyncio.timeout(self._revocation_timeout):
                    why = await self._revocations.revoked_reason(claims)
        except Exception as exc:  # fail closed: any error or timeout is a refusal
            logger.warning(
                "revocation check failed (%s); refusing access token jti=%s",
                type(exc).__name__,
                claims.jti,
            )
            raise _refuse("revocation-unavailable", claims.jti) from None
        if why is not None:
            logger.info("access token revoked: why=%s jti=%s", why, claims.jti)
            raise _refuse("revoked", claims.jti)


def _refuse(reason: str, jti: str | None = None) -> InvalidToken:
    # Only a verified jti is ever logged: before the signature checks out, every byte is
    # attacker-chosen and has no place in our logs. The token itself is never logged.
    logger.info("access token refused: reason=%s jti=%s", reason, jti or "-")
    return InvalidToken(reason=reason)
