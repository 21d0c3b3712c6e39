"""What an OAuth client of ours does: PKCE pairs and ``private_key_jwt`` assertions.

For the CLI (``fleetward token``), the demo and tests. Nothing on the server's request path
imports this module; it only ever holds a client's own private key.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from joserfc import jwt
from joserfc.jwk import ECKey

from fleetward.identity.oauth.client_auth import ASSERTION_ALGORITHMS

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@dataclass(frozen=True, slots=True)
class Pkce:
    verifier: str = field(repr=False)
    challenge: str
    method: str = "S256"

    @classmethod
    def generate(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)  # 64 characters, within RFC 7636's 43-128
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        challenge = base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
        return cls(verifier=verifier, challenge=challenge)


def client_assertion(
    key: ECKey,
    client_id: str,
    audience: str,
    *,
    now: datetime | None = None,
    lifetime: timedelta = timedelta(seconds=60),
    jti: str | None = None,
) -> str:
    """A signed RFC 7523 client assertion: iss = sub = client id, short-lived, unique jti."""
    issued = now or datetime.now(UTC)
    iat = int(issued.timestamp())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": audience,
        "iat": iat,
        "exp": iat + int(lifetime.total_seconds()),
        "jti": jti or secrets.token_urlsafe(16),
    }
    header = {"alg": ASSERTION_ALGORITHMS[0], "kid": key.thumbprint()}
    return jwt.encode(header, claims, key, algorithms=ASSERTION_ALGORITHMS)


def assertion_form(
    key: ECKey, client_id: str, audience: str, *, now: datetime | None = None
) -> dict[str, str]:
    """The token request fields that authenticate a confidential client."""
    return {
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": client_assertion(key, client_id, audience, now=now),
    }


def public_jwks_of(key: ECKey) -> dict[str, list[dict[str, str]]]:
    public = {k: str(v) for k, v in key.as_dict(private=False).items()}
    public.update(kid=key.thumbprint(), alg=ASSERTION_ALGORITHMS[0], use="sig")
    return {"keys": [public]}
