"""Issuing RFC 9068 access tokens (``typ: at+jwt``), signed ES256 by the keyring's active key.

The Authlib grant handlers call :meth:`AccessTokenIssuer.issue` once they have decided who the
token is for; nothing here decides *whether* to issue. Inputs are checked anyway, because a
token that the validator would refuse (too long-lived, too large, malformed scope) is a bug
better caught at the issuer than discovered by every API replica.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from joserfc import jws

from fleetward.core.clock import Clock
from fleetward.core.surfaces import Surface
from fleetward.identity.tokens.claims import (
    SCOPE_TOKEN,
    SUBJECT_TYPES,
    AccessTokenClaims,
    SubjectType,
)
from fleetward.identity.tokens.compact import dumps_compact_json
from fleetward.identity.tokens.keys import SIGNING_ALG, Keyring

AT_JWT_TYP: Final = "at+jwt"
DEFAULT_LIFETIME: Final = timedelta(minutes=5)
DEFAULT_MAX_LIFETIME: Final = timedelta(minutes=15)
DEFAULT_MAX_TOKEN_BYTES: Final = 4096

# joserfc registry allowing ES256 only, and its ES256 algorithm model (signature maths).
ES256_REGISTRY: Final = jws.JWSRegistry(algorithms=[SIGNING_ALG])
ES256: Final = ES256_REGISTRY.get_alg(SIGNING_ALG)


@dataclass(frozen=True, slots=True)
class IssuedToken:
    """A freshly signed token. ``repr`` omits the token: it is a bearer credential."""

    token: str = field(repr=False)
    claims: AccessTokenClaims

    @property
    def expires_in(self) -> int:
        """Seconds until expiry, for the OAuth token response."""
        return self.claims.exp - self.claims.iat


class AccessTokenIssuer:
    def __init__(
        self,
        keyring: Keyring,
        issuer: str,
        clock: Clock,
        default_lifetime: timedelta = DEFAULT_LIFETIME,
        max_lifetime: timedelta = DEFAULT_MAX_LIFETIME,
        *,
        max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    ) -> None:
        if not issuer:
            raise ValueError("issuer must not be empty")
        if not timedelta(seconds=1) <= default_lifetime <= max_lifetime:
            raise ValueError("need 1s <= default_lifetime <= max_lifetime")
        if max_lifetime > keyring.max_token_lifetime:
            # Otherwise a retired key could leave the JWKS while its tokens still live.
            raise ValueError("max_lifetime exceeds the keyring's max_token_lifetime")
        self._keyring = keyring
        self._issuer = issuer
        self._clock = clock
        self._default_lifetime = default_lifetime
        self._max_lifetime = max_lifetime
        self._max_token_bytes = max_token_bytes

    def issue(
        self,
        *,
        subject: str,
        client_id: str,
        tenant: str,
        surface: Surface,
        scopes: Sequence[str],
        auth_time: datetime,
        acr: str,
        amr: Sequence[str],
        token_family: str | None,
        subject_type: SubjectType,
        cnf_jkt: str | None = None,
        lifetime: timedelta | None = None,
    ) -> IssuedToken:
        now = self._clock.now()
        lifetime = self._default_lifetime if lifetime is None else lifetime
        if not timedelta(seconds=1) <= lifetime <= self._max_lifetime:
            raise ValueError("token lifetime must be between 1s and max_lifetime")
        for name, value in (("subject", subject), ("client_id", client_id), ("tenant", tenant)):
            if not value:
                raise ValueError(f"{name} must not be empty")
        if not acr or any(not method for method in amr):
            raise ValueError("acr and every amr value must be non-empty")
        if isinstance(scopes, str):
            raise TypeError("scopes must be a sequence of scope names, not one string")
        if any(SCOPE_TOKEN.fullmatch(scope) is None for scope in scopes):
            raise ValueError("scope names must be RFC 6749 scope-tokens (no spaces)")
        if subject_type not in SUBJECT_TYPES:
            raise ValueError("subject_type must be 'user' or 'workload'")
        if token_family == "" or cnf_jkt == "":
            raise ValueError("token_family and cnf_jkt are either None or non-empty")
        if auth_time.tzinfo is None or auth_time > now:
            raise ValueError("auth_time must be an aware datetime not in the future")

        iat = math.floor(now.timestamp())
        claims = AccessTokenClaims(
            iss=self._issuer,
            sub=subject,
            aud=surface.audience,
            exp=iat + int(lifetime.total_seconds()),
            iat=iat,
            nbf=iat,
            jti=secrets.token_urlsafe(16),  # 128 random bits
            client_id=client_id,
            scopes=frozenset(scopes),
            tenant=tenant,
            auth_time=math.floor(auth_time.timestamp()),
            acr=acr,
            amr=tuple(amr),
            sub_type=subject_type,
            fam=token_family,
            cnf_jkt=cnf_jkt,
        )
        key = self._keyring.active
        header = {"alg": SIGNING_ALG, "typ": AT_JWT_TYP, "kid": key.kid}
        token = jws.serialize_compact(
            header,
            dumps_compact_json(claims.to_payload()),
            key.private_key,
            registry=ES256_REGISTRY,
        )
        if len(token) > self._max_token_bytes:
            raise ValueError("the token would exceed max_token_bytes; validators would refuse it")
        return IssuedToken(token=token, claims=claims)
