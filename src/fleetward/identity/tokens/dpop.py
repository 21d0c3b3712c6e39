"""RFC 9449 DPoP proof verification (server side).

:meth:`DpopVerifier.verify` returns the proof key's RFC 7638 thumbprint (``jkt``) only if the
proof is a ``dpop+jwt`` with an allow-listed asymmetric ``alg``, carries a public ``jwk`` and
nothing else in its header, is signed by that key, names this request's method and URL, is
fresh, carries the access token hash when an access token is presented, matches the
token's ``cnf.jkt`` when one is expected, and has never been seen before.

The replay check runs last, so a proof refused for another reason does not consume its jti;
only a valid proof can occupy a replay-cache slot. Server-issued nonces (RFC 9449 section 8)
are not implemented yet.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final

from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey

from fleetward.core.clock import Clock
from fleetward.identity.tokens.compact import CompactError, b64url_encode, split_compact
from fleetward.identity.tokens.errors import InvalidDpopProof
from fleetward.identity.tokens.htu import normalise_htu
from fleetward.identity.tokens.replay import ReplayCache

logger = logging.getLogger(__name__)

DPOP_TYP: Final = "dpop+jwt"
DEFAULT_ALLOWED_ALGS: Final = ("ES256", "EdDSA")
_ALLOWED_HEADERS: Final = frozenset({"typ", "alg", "jwk"})
# JWK members that only private (or symmetric) keys have, across all key types.
_PRIVATE_JWK_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_MAX_JTI = 256


@dataclass(frozen=True, slots=True)
class DpopAlg:
    """How one header ``alg`` maps to a key type, curve and joserfc algorithm model."""

    kty: str
    crv: str
    model: str
    public_members: tuple[str, ...]


# Asymmetric only: "none" and HS* can never be configured, whatever allowed_algs says.
# "EdDSA" (RFC 8037, what deployed clients send) and "Ed25519" (RFC 9864) are both verified
# with joserfc's Ed25519 model; Ed448 is not accepted under "EdDSA".
SUPPORTED_ALGS: Final = {
    "ES256": DpopAlg("EC", "P-256", "ES256", ("crv", "kty", "x", "y")),
    "EdDSA": DpopAlg("OKP", "Ed25519", "Ed25519", ("crv", "kty", "x")),
    "Ed25519": DpopAlg("OKP", "Ed25519", "Ed25519", ("crv", "kty", "x")),
}
DPOP_REGISTRY: Final = jws.JWSRegistry(algorithms=["ES256", "Ed25519"])


class DpopVerifier:
    def __init__(
        self,
        clock: Clock,
        replay: ReplayCache,
        leeway: timedelta = timedelta(seconds=60),
        max_proof_bytes: int = 4096,
        allowed_algs: tuple[str, ...] = DEFAULT_ALLOWED_ALGS,
    ) -> None:
        unsupported = set(allowed_algs) - SUPPORTED_ALGS.keys()
        if unsupported or not allowed_algs:
            raise ValueError(f"DPoP algs must be a non-empty subset of {sorted(SUPPORTED_ALGS)}")
        self._clock = clock
        self._replay = replay
        self._leeway = leeway.total_seconds()
        # A proof stays acceptable from iat - leeway to iat + leeway, so it must be remembered
        # for the whole window (plus a second for rounding).
        self._replay_ttl = 2 * leeway + timedelta(seconds=1)
        self._max_proof_bytes = max_proof_bytes
        self._allowed_algs = frozenset(allowed_algs)

    async def verify(
        self,
        proof: str,
        *,
        method: str,
        url: str,
        access_token: str | None,
        expected_jkt: str | None,
    ) -> str:
        """Return the proof key's JWK thumbprint, or raise :class:`InvalidDpopProof`."""
        if not isinstance(proof, str) or not proof:
            raise _refuse("malformed")
        if len(proof) > self._max_proof_bytes:
            raise _refuse("proof-too-large")
        try:
            parts = split_compact(proof)
        except CompactError as exc:
            raise _refuse(exc.reason) from None
        spec, key = self._check_header(parts.unverified_header)
        try:
            signature = parts.signature()
            model = DPOP_REGISTRY.get_alg(spec.model)
            model.check_key(key)
            valid = model.verify(parts.signing_input, signature, key)
        except (CompactError, JoseError, ValueError):
            valid = False
        if not valid:
            raise _refuse("bad-signature")
        try:
            payload = parts.decode_payload()
        except CompactError as exc:
            raise _refuse(exc.reason) from None
        jkt = key.thumbprint()
        jti = self._check_claims(payload, method, url, access_token)
        if expected_jkt is not None and not hmac.compare_digest(jkt, expected_jkt):
            raise _refuse("key-mismatch", jkt)
        # Scoped to the key (only its holder can sign a proof with this jti, so two clients that
        # pick the same jti do not collide) and hashed (fixed size whatever jti is sent).
        replay_key = "dpop:" + hashlib.sha256(f"{jkt}\x00{jti}".encode()).hexdigest()
        try:
            fresh = await self._replay.add_if_absent(replay_key, self._replay_ttl)
        except Exception as exc:  # fail closed
            logger.warning("DPoP replay check failed (%s); refusing", type(exc).__name__)
            raise _refuse("replay-check-unavailable", jkt) from None
        if not fresh:
            raise _refuse("replayed", jkt)
        return jkt

    def _check_header(self, unverified_header: dict[str, Any]) -> tuple[DpopAlg, ECKey | OKPKey]:
        if unverified_header.get("typ") != DPOP_TYP:
            raise _refuse("wrong-type")
        alg = unverified_header.get("alg")
        if not isinstance(alg, str) or alg not in self._allowed_algs:
            raise _refuse("alg-not-allowed")
        if not _ALLOWED_HEADERS.issuperset(unverified_header.keys()):
            # jku, x5u, x5c, kid, crit, ...: the key is the jwk member and nothing else.
            raise _refuse("header-not-allowed")
        jwk = unverified_header.get("jwk")
        if not isinstance(jwk, dict):
            raise _refuse("missing-jwk")
        if not _PRIVATE_JWK_MEMBERS.isdisjoint(jwk.keys()):
            # Whoever sent a private key has leaked it; the proof proves nothing.
            raise _refuse("private-key-in-header")
        spec = SUPPORTED_ALGS[alg]
        if jwk.get("kty") != spec.kty or jwk.get("crv") != spec.crv:
            raise _refuse("invalid-jwk")
        # Import only the RFC 7638 members (all public), so extra members (alg, use, key_ops...)
        # can change neither how joserfc treats the key nor the thumbprint.
        members: dict[str, str | list[str]] = {}
        for name in spec.public_members:
            value = jwk.get(name)
            if not isinstance(value, str):
                raise _refuse("invalid-jwk")
            members[name] = value
        try:
            key: ECKey | OKPKey = (
                ECKey.import_key(members) if spec.kty == "EC" else OKPKey.import_key(members)
            )
        except (JoseError, ValueError, TypeError):
            raise _refuse("invalid-jwk") from None
        return spec, key

    def _check_claims(
        self, payload: dict[str, Any], method: str, url: str, access_token: str | None
    ) -> str:
        for name in ("jti", "htm", "htu", "iat"):
            if name not in payload:
                raise _refuse("missing-claim")
        jti, htm, htu, iat = payload["jti"], payload["htm"], payload["htu"], payload["iat"]
        if not isinstance(jti, str) or not 0 < len(jti) <= _MAX_JTI:
            raise _refuse("invalid-claim")
        if not isinstance(htm, str) or not isinstance(htu, str):
            raise _refuse("invalid-claim")
        if type(iat) not in (int, float):  # bool is not a time
            raise _refuse("invalid-claim")
        if htm != method:  # methods are case-sensitive (RFC 9110 section 9.1)
            raise _refuse("wrong-method")
        try:
            claimed_url = normalise_htu(htu)
        except ValueError:
            raise _refuse("invalid-claim") from None
        try:
            request_url = normalise_htu(url)
        except ValueError:
            raise _refuse("wrong-url") from None
        if claimed_url != request_url:
            raise _refuse("wrong-url")
        now = self._clock.now().timestamp()
        if iat < now - self._leeway:
            raise _refuse("iat-too-old")
        if iat > now + self._leeway:
            raise _refuse("iat-in-future")
        if access_token is not None:
            ath = payload.get("ath")
            if not isinstance(ath, str):
                raise _refuse("missing-ath")
            if not hmac.compare_digest(ath, access_token_hash(access_token)):
                raise _refuse("wrong-ath")
        return jti


def access_token_hash(access_token: str) -> str:
    """The ``ath`` value: base64url(SHA-256(ASCII of the access token))."""
    return b64url_encode(hashlib.sha256(access_token.encode("utf-8")).digest())


def _refuse(reason: str, jkt: str | None = None) -> InvalidDpopProof:
    # A jkt is a public-key hash, safe to log; proof contents are never logged.
    logger.info("DPoP proof refused: reason=%s jkt=%s", reason, jkt or "-")
    return InvalidDpopProof(reason=reason)
