"""DPoP proofs (RFC 9449): valid proofs pass, every row of hostile proofs is refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from joserfc.jwk import ECKey, OKPKey

from fleetward.core.clock import FrozenClock
from fleetward.identity.tokens import (
    DpopVerifier,
    InMemoryReplayCache,
    InvalidDpopProof,
)
from fleetward.identity.tokens.dpop_client import (
    generate_dpop_key,
    jwk_thumbprint,
    make_dpop_proof,
    public_jwk,
)
from fleetward.identity.tokens.replay import ReplayCacheFullError

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
NOW = int(T0.timestamp())
URL = "https://api.fleetward.test/mobile/v1/vehicles/veh_1/commands"
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJl"  # shape only; hashed for ath
OTHER_TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c3JfMiJ9.c2lnbmF0dXJl"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def ath(token: str) -> str:
    return b64(hashlib.sha256(token.encode()).digest())


CLIENT = ec.generate_private_key(ec.SECP256R1())
CLIENT_JWK = public_jwk(CLIENT)
CLIENT_JKT = jwk_thumbprint(CLIENT)


def sign(signer: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey, signing_input: str) -> str:
    data = signing_input.encode()
    if isinstance(signer, ed25519.Ed25519PrivateKey):
        return b64(signer.sign(data))
    r, s = decode_dss_signature(signer.sign(data, ec.ECDSA(hashes.SHA256())))
    return b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


DROP = object()


def edit(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for name, value in changes.items():
        if value is DROP:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def forge(
    head: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None,
    signer: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = CLIENT,
) -> str:
    """A proof with any header/claims; by default exactly what make_dpop_proof would send."""
    head = {"typ": "dpop+jwt", "alg": "ES256", "jwk": CLIENT_JWK} if head is None else head
    body = (
        {"jti": "jti-0001", "htm": "POST", "htu": URL, "iat": NOW, "ath": ath(TOKEN)}
        if body is None
        else body
    )
    signing_input = f"{b64json(head)}.{b64json(body)}"
    return f"{signing_input}.{sign(signer, signing_input)}"


def header(**changes: Any) -> dict[str, Any]:
    return edit({"typ": "dpop+jwt", "alg": "ES256", "jwk": CLIENT_JWK}, changes)


def claims(**changes: Any) -> dict[str, Any]:
    return edit(
        {"jti": "jti-0001", "htm": "POST", "htu": URL, "iat": NOW, "ath": ath(TOKEN)}, changes
    )


def hs256_with_public_jwk() -> str:
    signing_input = f"{b64json(header(alg='HS256'))}.{b64json(claims())}"
    mac = hmac.new(json.dumps(CLIENT_JWK).encode(), signing_input.encode(), hashlib.sha256)
    return f"{signing_input}.{b64(mac.digest())}"


def private_jwk() -> dict[str, Any]:
    return ECKey.import_key(CLIENT).as_dict(private=True)


def attacker_substitutes_jwk() -> str:
    # Header names the victim's key; the attacker signs with their own.
    return forge(signer=ec.generate_private_key(ec.SECP256R1()))


def off_curve_jwk() -> dict[str, str]:
    return {**CLIENT_JWK, "y": CLIENT_JWK["x"]}


def p384_proof() -> str:
    key = ec.generate_private_key(ec.SECP384R1())
    jwk = ECKey.import_key(key.public_key()).as_dict()
    return forge(header(jwk=jwk), signer=ec.generate_private_key(ec.SECP256R1()))


def ed_key_with_es256() -> str:
    key = ed25519.Ed25519PrivateKey.generate()
    return forge(header(jwk=public_jwk(key)), signer=key)


Build = Callable[[], str]

ATTACKS: list[Any] = [
    # No proof at all where one is required.
    pytest.param(lambda: "", "malformed", id="missing"),
    # Not a JWS.
    pytest.param(lambda: "not-a-proof", "malformed", id="garbage"),
    # Two segments.
    pytest.param(lambda: ".".join(forge().split(".")[:2]), "malformed", id="two-segments"),
    # Header that is JSON null.
    pytest.param(lambda: f"{b64(b'null')}.{b64json(claims())}.AAAA", "malformed-header", id="null"),
    # Oversized proof: refused before parsing.
    pytest.param(lambda: forge(body=claims(pad="x" * 5000)), "proof-too-large", id="oversized"),
    # An access token (typ at+jwt) used as a DPoP proof.
    pytest.param(lambda: forge(header(typ="at+jwt")), "wrong-type", id="typ-at+jwt"),
    # A plain JWT.
    pytest.param(lambda: forge(header(typ="JWT")), "wrong-type", id="typ-jwt"),
    # No typ.
    pytest.param(lambda: forge(header(typ=DROP)), "wrong-type", id="typ-missing"),
    # alg none, unsigned.
    pytest.param(
        lambda: f"{b64json(header(alg='none'))}.{b64json(claims())}.", "alg-not-allowed", id="none"
    ),
    # alg NONE spelling.
    pytest.param(lambda: forge(header(alg="NONE")), "alg-not-allowed", id="NONE"),
    # HS256 keyed with the public JWK from the header (key confusion).
    pytest.param(hs256_with_public_jwk, "alg-not-allowed", id="hs256-public-jwk"),
    # RS256 (not on the allow-list).
    pytest.param(lambda: forge(header(alg="RS256")), "alg-not-allowed", id="rs256"),
    # jwk header missing: nothing binds the proof to a key.
    pytest.param(lambda: forge(header(jwk=DROP)), "missing-jwk", id="jwk-missing"),
    # jwk as a string (a URL or kid smuggled in).
    pytest.param(
        lambda: forge(header(jwk="https://attacker.example/k")), "missing-jwk", id="jwk-string"
    ),
    # The private key itself in the header: whoever sent it has leaked it.
    pytest.param(lambda: forge(header(jwk=private_jwk())), "private-key-in-header", id="private"),
    # A symmetric key in the header.
    pytest.param(
        lambda: forge(header(jwk={"kty": "oct", "k": "c2VjcmV0"})),
        "private-key-in-header",
        id="oct-key",
    ),
    # Key type does not match alg (Ed25519 key, ES256 alg).
    pytest.param(ed_key_with_es256, "invalid-jwk", id="kty-mismatch"),
    # P-384 key under ES256.
    pytest.param(p384_proof, "invalid-jwk", id="wrong-curve"),
    # Point not on the curve (invalid-curve attack).
    pytest.param(lambda: forge(header(jwk=off_curve_jwk())), "invalid-jwk", id="off-curve"),
    # Key located by URL instead of carried: never fetched.
    pytest.param(
        lambda: forge(header(jku="https://attacker.example/jwks")),
        "header-not-allowed",
        id="jku",
    ),
    # Certificate chain alongside the jwk.
    pytest.param(lambda: forge(header(x5c=["MIIB"])), "header-not-allowed", id="x5c"),
    # Unknown critical extension.
    pytest.param(lambda: forge(header(crit=["exp"])), "header-not-allowed", id="crit"),
    # Victim's jwk, attacker's signature.
    pytest.param(attacker_substitutes_jwk, "bad-signature", id="jwk-substituted"),
    # Claims tampered after signing (method changed).
    pytest.param(
        lambda: ".".join(
            [forge().split(".")[0], b64json(claims(htm="DELETE")), forge().split(".")[2]]
        ),
        "bad-signature",
        id="tampered",
    ),
    # Signature stripped.
    pytest.param(lambda: forge().rsplit(".", 1)[0] + ".", "bad-signature", id="stripped"),
    # Signed claims that are JSON null.
    pytest.param(
        lambda: (lambda si: f"{si}.{sign(CLIENT, si)}")(f"{b64json(header())}.{b64(b'null')}"),
        "malformed-payload",
        id="payload-null",
    ),
    # Proof made for GET replayed on POST.
    pytest.param(lambda: forge(body=claims(htm="GET")), "wrong-method", id="wrong-method"),
    # Method case games.
    pytest.param(lambda: forge(body=claims(htm="post")), "wrong-method", id="method-case"),
    # Proof for another path.
    pytest.param(
        lambda: forge(body=claims(htu=URL.replace("veh_1", "veh_2"))), "wrong-url", id="path"
    ),
    # Proof for another host.
    pytest.param(
        lambda: forge(body=claims(htu=URL.replace("api.fleetward.test", "api.attacker.example"))),
        "wrong-url",
        id="host",
    ),
    # Proof for plain http.
    pytest.param(
        lambda: forge(body=claims(htu=URL.replace("https:", "http:"))), "wrong-url", id="scheme"
    ),
    # Proof for another port.
    pytest.param(
        lambda: forge(body=claims(htu=URL.replace(".test/", ".test:8443/"))),
        "wrong-url",
        id="port",
    ),
    # htu that is not an http(s) URL at all.
    pytest.param(
        lambda: forge(body=claims(htu="javascript:alert(1)")), "invalid-claim", id="htu-scheme"
    ),
    # htu with user info (URL confusion).
    pytest.param(
        lambda: forge(body=claims(htu=URL.replace("https://", "https://api.fleetward.test@"))),
        "invalid-claim",
        id="htu-userinfo",
    ),
    # Missing jti: replay detection impossible.
    pytest.param(lambda: forge(body=claims(jti=DROP)), "missing-claim", id="jti-missing"),
    # Missing htm.
    pytest.param(lambda: forge(body=claims(htm=DROP)), "missing-claim", id="htm-missing"),
    # Missing htu.
    pytest.param(lambda: forge(body=claims(htu=DROP)), "missing-claim", id="htu-missing"),
    # Missing iat: freshness unknown.
    pytest.param(lambda: forge(body=claims(iat=DROP)), "missing-claim", id="iat-missing"),
    # iat as a string.
    pytest.param(lambda: forge(body=claims(iat=str(NOW))), "invalid-claim", id="iat-string"),
    # Empty jti.
    pytest.param(lambda: forge(body=claims(jti="")), "invalid-claim", id="jti-empty"),
    # Stale proof, just beyond the 60 s window (captured and replayed later).
    pytest.param(lambda: forge(body=claims(iat=NOW - 61)), "iat-too-old", id="stale"),
    # Pre-generated proof dated in the future.
    pytest.param(lambda: forge(body=claims(iat=NOW + 61)), "iat-in-future", id="future"),
    # ath missing while an access token is presented.
    pytest.param(lambda: forge(body=claims(ath=DROP)), "missing-ath", id="ath-missing"),
    # ath of another token: proof lifted from one request onto another token.
    pytest.param(lambda: forge(body=claims(ath=ath(OTHER_TOKEN))), "wrong-ath", id="ath-other"),
    # ath of the token in standard base64 with padding (encoding confusion).
    pytest.param(
        lambda: forge(
            body=claims(ath=base64.b64encode(hashlib.sha256(TOKEN.encode()).digest()).decode())
        ),
        "wrong-ath",
        id="ath-std-b64",
    ),
    # A valid proof, but by a key the token is not bound to (stolen token, own key).
    pytest.param(
        lambda: (lambda key: make_dpop_proof(key, "POST", URL, TOKEN, iat=T0))(
            ec.generate_private_key(ec.SECP256R1())
        ),
        "key-mismatch",
        id="thumbprint-mismatch",
    ),
]


def make_verifier(**options: Any) -> tuple[FrozenClock, DpopVerifier]:
    clock = FrozenClock(T0)
    return clock, DpopVerifier(clock, InMemoryReplayCache(clock), **options)


@pytest.mark.parametrize(("build", "reason"), ATTACKS)
@pytest.mark.asyncio
async def test_hostile_proof_is_refused(build: Build, reason: str) -> None:
    _clock, verifier = make_verifier()
    with pytest.raises(InvalidDpopProof) as caught:
        await verifier.verify(
            build(), method="POST", url=URL, access_token=TOKEN, expected_jkt=CLIENT_JKT
        )
    assert caught.value.reason == reason
    assert caught.value.code == "invalid-dpop-proof"


@pytest.mark.asyncio
async def test_forge_control_proof_is_accepted() -> None:
    # The forging helper's default proof is valid, so each row fails for its own attack.
    _clock, verifier = make_verifier()
    jkt = await verifier.verify(
        forge(), method="POST", url=URL, access_token=TOKEN, expected_jkt=CLIENT_JKT
    )
    assert jkt == CLIENT_JKT


@pytest.mark.parametrize(
    "key",
    [
        pytest.param(CLIENT, id="es256-cryptography-key"),
        pytest.param(generate_dpop_key("ES256"), id="es256-joserfc-key"),
        pytest.param(generate_dpop_key("EdDSA"), id="eddsa-joserfc-key"),
        pytest.param(ed25519.Ed25519PrivateKey.generate(), id="eddsa-cryptography-key"),
    ],
)
@pytest.mark.asyncio
async def test_valid_proof_returns_thumbprint(
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | ECKey | OKPKey,
) -> None:
    _clock, verifier = make_verifier()
    proof = make_dpop_proof(key, "POST", URL + "?dry_run=1#frag", TOKEN, iat=T0)
    jkt = await verifier.verify(
        proof, method="POST", url=URL, access_token=TOKEN, expected_jkt=jwk_thumbprint(key)
    )
    assert jkt == jwk_thumbprint(key)
    assert len(jkt) == 43


@pytest.mark.asyncio
async def test_token_endpoint_proof_without_access_token() -> None:
    # At the token endpoint there is no access token yet and no jkt to expect.
    _clock, verifier = make_verifier()
    proof = make_dpop_proof(CLIENT, "POST", "https://id.fleetward.test/oauth/token", iat=T0)
    jkt = await verifier.verify(
        proof,
        method="POST",
        url="https://ID.fleetward.test:443/oauth/token",
        access_token=None,
        expected_jkt=None,
    )
    assert jkt == CLIENT_JKT


@pytest.mark.asyncio
async def test_replayed_proof_is_refused() -> None:
    _clock, verifier = make_verifier()
    proof = make_dpop_proof(CLIENT, "POST", URL, TOKEN, iat=T0)
    arguments: dict[str, Any] = {
        "method": "POST", "url": URL, "access_token": TOKEN, "expected_jkt": CLIENT_JKT,
    }  # fmt: skip
    assert await verifier.verify(proof, **arguments) == CLIENT_JKT
    with pytest.raises(InvalidDpopProof) as caught:
        await verifier.verify(proof, **arguments)
    assert caught.value.reason == "replayed"
    # A new proof with the same jti (re-signed, new iat) is a replay of the jti too.
    again = make_dpop_proof(CLIENT, "POST", URL, TOKEN, iat=T0 + timedelta(seconds=1),
                            jti=_jti(proof))  # fmt: skip
    with pytest.raises(InvalidDpopProof) as caught:
        await verifier.verify(again, **arguments)
    assert caught.value.reason == "replayed"


def _jti(proof: str) -> str:
    body = proof.split(".")[1]
    value: str = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))["jti"]
    return value


@pytest.mark.asyncio
async def test_replay_after_cache_expiry_is_still_refused_as_stale() -> None:
    # The replay cache may forget a jti only once its proof can no longer pass the iat check.
    clock, verifier = make_verifier()
    proof = make_dpop_proof(CLIENT, "POST", URL, TOKEN, iat=T0 + timedelta(seconds=60))
    arguments: dict[str, Any] = {
        "method": "POST", "url": URL, "access_token": TOKEN, "expected_jkt": CLIENT_JKT,
    }  # fmt: skip
    assert await verifier.verify(proof, **arguments) == CLIENT_JKT  # future edge of the window
    clock.advance(timedelta(seconds=120))  # past edge of the same proof's window
    with pytest.raises(InvalidDpopProof) as caught:
        await verifier.verify(proof, **arguments)
    assert caught.value.reason == "replayed"
    clock.advance(timedelta(seconds=2))
    with pytest.raises(InvalidDpopProof) as caught:
        await verifier.verify(proof, **arguments)
    assert caught.value.reason == "iat-too-old"


@pytest.mark.asyncio
async def test_refused_proof_does_not_burn_its_jti() -> None:
    # A proof refused for another reason must not let an attacker pre-burn jtis.
    _clock, verifier = make_verifier()
    proof = make_dpop_proof(CLIENT, "POST", URL, TOKEN, iat=T0)
    with pytest.raises(InvalidDpopProof):
        await verifier.verify(proof, method="POST", url=URL, access_token=TOKEN, expected_jkt="x")
    jkt = await verifier.verify(
        proof, method="POST", url=URL, access_token=TOKEN, expected_jkt=CLIENT_JKT
    )
    assert jkt == CLIENT_JKT


class BrokenReplayCache:
    async def add_if_absent(self, key: str, ttl: timedelta) -> bool:
        raise ConnectionError("redis down")


@pytest.mark.asyncio
async def test_replay_cache_failure_fails_closed() -> None:
    clock = FrozenClock(T0)
    verifier = DpopVerifier(clock, BrokenReplayCache())
    with pytest.raises(InvalidDpopProof) as caught:
        await verifier.verify(
            make_dpop_proof(CLIENT, "POST", URL, TOKEN, iat=T0),
            method="POST",
            url=URL,
            access_token=TOKEN,
            expected_jkt=CLIENT_JKT,
        )
    assert caught.value.reason == "replay-check-unavailable"


@pytest.mark.asyncio
async def test_full_replay_cache_refuses_rather_than_forgets() -> None:
    clock = FrozenClock(T0)
    cache = InMemoryReplayCache(clock, max_entries=1)
    assert await cache.add_if_absent("a", timedelta(seconds=10))
    with pytest.raises(ReplayCacheFullError):
        await cache.add_if_absent("b", timedelta(seconds=10))
    assert not await cache.add_if_absent("a", timedelta(seconds=10))  # still remembered
    clock.advance(timedelta(seconds=10))
    assert await cache.add_if_absent("b", timedelta(seconds=10))  # "a" expired, room again
    assert len(cache) == 1


@pytest.mark.asyncio
async def test_allowed_algs_restrict_accepted_proofs() -> None:
    _clock, verifier = make_verifier(allowed_algs=("EdDSA",))
    with pytest.raises(InvalidDpopProof) as caught:
        await verifier.verify(
            make_dpop_proof(CLIENT, "POST", URL, TOKEN, iat=T0),
            method="POST",
            url=URL,
            access_token=TOKEN,
            expected_jkt=None,
        )
    assert caught.value.reason == "alg-not-allowed"


@pytest.mark.parametrize(
    "algs",
    [
        ("none",),  # the unsecured JWS
        ("HS256",),  # symmetric: the "key" is public
        ("ES256", "HS256"),  # one bad entry poisons the list
        (),  # nothing allowed is a misconfiguration, not "anything goes"
    ],
)
def test_verifier_refuses_unsafe_alg_configuration(algs: tuple[str, ...]) -> None:
    clock = FrozenClock(T0)
    with pytest.raises(ValueError, match="DPoP algs"):
        DpopVerifier(clock, InMemoryReplayCache(clock), allowed_algs=algs)


@pytest.mark.parametrize(
    ("offset", "ok"),
    [(-60, True), (60, True), (-61, False), (61, False)],
)
@pytest.mark.asyncio
async def test_iat_window_edges(offset: int, ok: bool) -> None:
    _clock, verifier = make_verifier()
    proof = forge(body=claims(iat=NOW + offset))
    if ok:
        assert (
            await verifier.verify(
                proof, method="POST", url=URL, access_token=TOKEN, expected_jkt=CLIENT_JKT
            )
            == CLIENT_JKT
        )
    else:
        with pytest.raises(InvalidDpopProof):
            await verifier.verify(
                proof, method="POST", url=URL, access_token=TOKEN, expected_jkt=CLIENT_JKT
            )
