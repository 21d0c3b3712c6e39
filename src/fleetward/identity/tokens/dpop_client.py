"""Making DPoP proofs: for clients, the CLI (``fleetward token``), the simulator and tests.

Nothing on the server's request path imports this module; it only ever holds a client's own
private key. Keys may be joserfc keys or ``cryptography`` private keys (P-256 for ES256,
Ed25519 for EdDSA).
"""

from __future__ import annotations

import math
import secrets
from datetime import UTC, datetime
from typing import Any, Literal

from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from joserfc.jwk import ECKey, OKPKey

from fleetward.identity.tokens.compact import b64url_encode, dumps_compact_json
from fleetward.identity.tokens.dpop import DPOP_REGISTRY, DPOP_TYP, SUPPORTED_ALGS
from fleetward.identity.tokens.dpop import access_token_hash as access_token_hash
from fleetward.identity.tokens.htu import strip_query_and_fragment

DpopPrivateKey = ECKey | OKPKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def generate_dpop_key(alg: Literal["ES256", "EdDSA"] = "ES256") -> ECKey | OKPKey:
    """A fresh proof-of-possession key pair."""
    if alg == "ES256":
        return ECKey.generate_key("P-256")
    return OKPKey.generate_key("Ed25519")


def _as_jose_key(private_key: DpopPrivateKey) -> ECKey | OKPKey:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return ECKey.import_key(private_key)
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return OKPKey.import_key(private_key)
    return private_key


def _alg_for(key: ECKey | OKPKey) -> str:
    if isinstance(key, ECKey) and key.curve_name == "P-256":
        return "ES256"
    if isinstance(key, OKPKey) and key.curve_name == "Ed25519":
        return "EdDSA"
    raise ValueError("DPoP keys must be P-256 (ES256) or Ed25519 (EdDSA)")


def public_jwk(private_key: DpopPrivateKey) -> dict[str, str]:
    """The public JWK that goes in the proof header: RFC 7638 members only."""
    key = _as_jose_key(private_key)
    spec = SUPPORTED_ALGS[_alg_for(key)]
    public = key.as_dict(private=False)
    return {name: str(public[name]) for name in spec.public_members}


def jwk_thumbprint(private_key: DpopPrivateKey) -> str:
    """The ``jkt`` a server binds tokens to (``dpop_jkt`` / ``cnf.jkt``)."""
    return _as_jose_key(private_key).thumbprint()


def make_dpop_proof(
    private_key: DpopPrivateKey,
    method: str,
    url: str,
    access_token: str | None = None,
    *,
    iat: datetime | None = None,
    jti: str | None = None,
) -> str:
    """A DPoP proof for one request. ``url`` may include a query; it is stripped for ``htu``.

    ``iat`` defaults to the system time; simulators pass their own clock's time.
    """
    key = _as_jose_key(private_key)
    if not key.is_private:
        raise ValueError("a DPoP proof needs the private key")
    alg = _alg_for(key)
    when = datetime.now(UTC) if iat is None else iat
    header: dict[str, Any] = {"typ": DPOP_TYP, "alg": alg, "jwk": public_jwk(key)}
    payload: dict[str, Any] = {
        "jti": secrets.token_urlsafe(16) if jti is None else jti,
        "htm": method,
        "htu": strip_query_and_fragment(url),
        "iat": math.floor(when.timestamp()),
    }
    if access_token is not None:
        payload["ath"] = access_token_hash(access_token)
    signing_input = (
        b64url_encode(dumps_compact_json(header)) + "." + b64url_encode(dumps_compact_json(payload))
    )
    model = DPOP_REGISTRY.get_alg(SUPPORTED_ALGS[alg].model)
    signature = model.sign(signing_input.encode("ascii"), key)
    return f"{signing_input}.{b64url_encode(signature)}"
