"""Access token attacks: every row is a hostile token the validator must refuse, with the
stable reason it must refuse it for. One comment per row names the attack."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.tokens import (
    AccessTokenIssuer,
    AccessTokenValidator,
    InMemoryRevocations,
    InvalidToken,
    Keyring,
)
from fleetward.identity.tokens.dpop_client import generate_dpop_key, make_dpop_proof

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
NOW = int(T0.timestamp())
ISSUER = "https://id.fleetward.test"


@dataclass
class World:
    clock: FrozenClock
    keyring: Keyring
    issuer: AccessTokenIssuer
    validator: AccessTokenValidator

    @property
    def kid(self) -> str:
        return self.keyring.active.kid

    @property
    def private(self) -> ec.EllipticCurvePrivateKey:
        key = self.keyring.active.private_key.private_key
        if key is None:
            raise RuntimeError("test keyring lost its private key")
        return key

    @property
    def public(self) -> ec.EllipticCurvePublicKey:
        return self.keyring.active.public_key.public_key

    def issue(self, surface: Surface = Surface.MOBILE) -> str:
        return self.issuer.issue(
            subject="usr_7f3a",
            client_id="cli_mobile",
            tenant="ten_acme",
            surface=surface,
            scopes=["vehicle:read", "vehicle:unlock"],
            auth_time=T0,
            acr="urn:fleetward:acr:mfa",
            amr=["pwd", "otp"],
            token_family="fam_1",
            subject_type="user",
        ).token


def make_world() -> World:
    clock = FrozenClock(T0)
    keyring = Keyring.generate(clock)
    return World(
        clock=clock,
        keyring=keyring,
        issuer=AccessTokenIssuer(keyring, ISSUER, clock),
        validator=AccessTokenValidator(keyring, ISSUER, clock, InMemoryRevocations()),
    )


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


def header(w: World, **changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {"alg": "ES256", "typ": "at+jwt", "kid": w.kid}
    for name, value in changes.items():
        if value is DROP:
            result.pop(name, None)
        else:
            result[name] = value
    return result


DROP = object()


def payload(**changes: Any) -> dict[str, Any]:
    result: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "usr_7f3a",
        "aud": Surface.MOBILE.audience,
        "exp": NOW + 300,
        "iat": NOW,
        "nbf": NOW,
        "jti": "jti-forged-0001",
        "client_id": "cli_mobile",
        "scope": "vehicle:read",
        "tenant": "ten_acme",
        "auth_time": NOW,
        "acr": "urn:fleetward:acr:mfa",
        "amr": ["pwd"],
        "sub_type": "user",
    }
    for name, value in changes.items():
        if value is DROP:
            result.pop(name, None)
        else:
            result[name] = value
    return result


def es256_sign(private: ec.EllipticCurvePrivateKey, signing_input: str) -> str:
    r, s = decode_dss_signature(private.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
    return b64(r.to_bytes(32, "big") + s.to_bytes(32, "big"))


def forge(
    w: World,
    head: dict[str, Any] | None = None,
    body: Any = None,
    *,
    raw_body: bytes | None = None,
    signer: ec.EllipticCurvePrivateKey | None = None,
) -> str:
    """A token with any header/payload, ES256-signed by our key unless told otherwise."""
    head = header(w) if head is None else head
    body_segment = (
        b64(raw_body) if raw_body is not None else b64json(payload() if body is None else body)
    )
    signing_input = f"{b64json(head)}.{body_segment}"
    return f"{signing_input}.{es256_sign(signer or w.private, signing_input)}"


def hs256(w: World, secret: bytes) -> str:
    signing_input = f"{b64json(header(w, alg='HS256'))}.{b64json(payload())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(mac)}"


def unsigned(w: World, alg: str) -> str:
    return f"{b64json(header(w, alg=alg))}.{b64json(payload())}."


def public_pem(w: World) -> bytes:
    return w.public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_der(w: World) -> bytes:
    return w.public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_jwk_json(w: World) -> bytes:
    return json.dumps(w.keyring.active.public_jwk()).encode()


def attacker_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def attacker_jwk(private: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = private.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64(numbers.x.to_bytes(32, "big")),
        "y": b64(numbers.y.to_bytes(32, "big")),
    }


def with_jwk_header(w: World) -> str:
    mine = attacker_key()
    return forge(w, header(w, kid=DROP, jwk=attacker_jwk(mine)), signer=mine)


def with_x5c_header(w: World) -> str:
    mine = attacker_key()
    return forge(w, header(w, x5c=["MIIBszCCAVmgAwIBAgIUattacker"]), signer=mine)


def tampered_payload(w: World) -> str:
    head, _body, signature = w.issue().split(".")
    return f"{head}.{b64json(payload(scope='vehicle:read vehicle:unlock admin:all'))}.{signature}"


def stripped_signature(w: World) -> str:
    head, body, _signature = w.issue().split(".")
    return f"{head}.{body}."


def transplanted_signature(w: World) -> str:
    head, body, _ = w.issue().split(".")
    other_signature = w.issue().split(".")[2]
    return f"{head}.{body}.{other_signature}"


def kid_swapped_after_rotation(w: World) -> str:
    # Signed by the old key but claiming the new key's kid: the header is signed too.
    old = w.private
    w.keyring.rotate(T0)
    return forge(w, header(w, kid=w.kid), signer=old)


def rs256_signed(w: World) -> str:
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_input = f"{b64json(header(w, alg='RS256'))}.{b64json(payload())}"
    signature = private.sign(signing_input.encode(), PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{b64(signature)}"


def segments(*parts: str) -> Callable[[World], str]:
    return lambda w: ".".join(parts)


def dpop_proof_as_token(w: World) -> str:
    return make_dpop_proof(generate_dpop_key(), "GET", "https://api.test/mobile/v1", iat=T0)


def id_token_shaped(w: World) -> str:
    body = payload(aud="cli_mobile", nonce="n-0S6_WzA2Mj", at_hash="77QmUPtjPfzWtF2AnpK9RQ")
    return forge(w, header(w, typ="JWT"), body)


Case = Callable[[World], str]

ATTACKS: list[Any] = [
    # alg "none" (RFC 7515 unsecured JWS) in every spelling: no signature at all.
    pytest.param(lambda w: unsigned(w, "none"), "alg-not-allowed", id="alg-none"),
    pytest.param(lambda w: unsigned(w, "None"), "alg-not-allowed", id="alg-None"),
    pytest.param(lambda w: unsigned(w, "NONE"), "alg-not-allowed", id="alg-NONE"),
    pytest.param(lambda w: unsigned(w, "nOnE"), "alg-not-allowed", id="alg-nOnE"),
    # alg "none" with our real signature kept: the signature must not rescue a bad header.
    pytest.param(
        lambda w: forge(w, header(w, alg="none")), "alg-not-allowed", id="alg-none-signed"
    ),
    # Lower-case "es256": alg names are case-sensitive; a lenient lookup is a confusion bug.
    pytest.param(lambda w: forge(w, header(w, alg="es256")), "alg-not-allowed", id="alg-es256"),
    # No alg at all: the verifier must not pick one for the attacker.
    pytest.param(lambda w: forge(w, header(w, alg=DROP)), "alg-not-allowed", id="alg-missing"),
    # alg as a list: type confusion in the header.
    pytest.param(lambda w: forge(w, header(w, alg=["ES256"])), "alg-not-allowed", id="alg-list"),
    # Key confusion: HMAC keyed with our public key as PEM (the classic RS/HS256 swap).
    pytest.param(lambda w: hs256(w, public_pem(w)), "alg-not-allowed", id="hs256-pem"),
    # Key confusion: HMAC keyed with our public key as DER.
    pytest.param(lambda w: hs256(w, public_der(w)), "alg-not-allowed", id="hs256-der"),
    # Key confusion: HMAC keyed with our published JWK JSON (it is in the JWKS for anyone).
    pytest.param(lambda w: hs256(w, public_jwk_json(w)), "alg-not-allowed", id="hs256-jwk"),
    # Algorithm substitution to RSA with an attacker key.
    pytest.param(rs256_signed, "alg-not-allowed", id="rs256-attacker"),
    # Stripped signature: header.payload. with the real header.
    pytest.param(stripped_signature, "bad-signature", id="stripped-signature"),
    # Signature transplanted from another valid token.
    pytest.param(transplanted_signature, "bad-signature", id="transplanted-signature"),
    # Payload tampered (scope escalation) under the original signature.
    pytest.param(tampered_payload, "bad-signature", id="tampered-payload"),
    # Our header and claims, signed by the attacker's key.
    pytest.param(lambda w: forge(w, signer=attacker_key()), "bad-signature", id="foreign-key"),
    # kid of the new key on a token signed by the old one.
    pytest.param(kid_swapped_after_rotation, "bad-signature", id="kid-swap"),
    # Signature of the wrong length (e.g. DER instead of raw r||s).
    pytest.param(
        lambda w: w.issue().rsplit(".", 1)[0] + "." + b64(b"\x30" * 70),
        "bad-signature",
        id="signature-wrong-length",
    ),
    # Attacker embeds their own public key in "jwk" and signs with it.
    pytest.param(with_jwk_header, "key-reference-header", id="jwk-header"),
    # Attacker supplies a certificate chain in "x5c".
    pytest.param(with_x5c_header, "key-reference-header", id="x5c-header"),
    # "jku" pointing at an attacker JWKS: must never be fetched.
    pytest.param(
        lambda w: forge(w, header(w, jku="https://attacker.example/jwks.json")),
        "key-reference-header",
        id="jku-header",
    ),
    # "x5u" pointing at an attacker certificate: must never be fetched.
    pytest.param(
        lambda w: forge(w, header(w, x5u="https://attacker.example/cert.pem")),
        "key-reference-header",
        id="x5u-header",
    ),
    # "x5t" certificate thumbprint selecting some other key.
    pytest.param(
        lambda w: forge(w, header(w, x5t="dGhpcyBpcyBub3QgYSB0aHVtYg")),
        "key-reference-header",
        id="x5t-header",
    ),
    # kid path traversal: a kid is a dictionary key, never a file name.
    pytest.param(
        lambda w: forge(w, header(w, kid="../../etc/passwd"), signer=attacker_key()),
        "unknown-key",
        id="kid-traversal",
    ),
    # kid SQL injection: a kid never reaches a query.
    pytest.param(
        lambda w: forge(w, header(w, kid="' OR 1=1 --"), signer=attacker_key()),
        "unknown-key",
        id="kid-injection",
    ),
    # kid as a URL: never fetched.
    pytest.param(
        lambda w: forge(w, header(w, kid="https://attacker.example/k")),
        "unknown-key",
        id="kid-url",
    ),
    # kid missing: we do not try every key.
    pytest.param(lambda w: forge(w, header(w, kid=DROP)), "unknown-key", id="kid-missing"),
    # kid of the wrong type.
    pytest.param(lambda w: forge(w, header(w, kid=7)), "unknown-key", id="kid-int"),
    # Unknown critical extension: RFC 7515 says refuse, and we refuse every crit.
    pytest.param(
        lambda w: forge(w, header(w, crit=["urn:attacker:ext"], **{"urn:attacker:ext": 1})),
        "crit-header",
        id="crit-unknown",
    ),
    # crit naming b64 (RFC 7797 unencoded payload): a second payload interpretation.
    pytest.param(
        lambda w: forge(w, header(w, crit=["b64"], b64=False)), "crit-header", id="crit-b64"
    ),
    # b64 without crit: still a payload-interpretation switch we never use.
    pytest.param(lambda w: forge(w, header(w, b64=False)), "header-not-allowed", id="b64-header"),
    # Any other header member: strict allow-list, nothing to smuggle.
    pytest.param(
        lambda w: forge(w, header(w, cty="JWT")), "header-not-allowed", id="cty-nested-jwt"
    ),
    # Oversized token: refused before parsing (DoS on base64/JSON/signature work).
    pytest.param(lambda w: "a" * 4097, "token-too-large", id="oversized"),
    # Oversized token that is otherwise valid-looking (huge padding claim).
    pytest.param(
        lambda w: forge(w, body=payload(pad="x" * 5000)), "token-too-large", id="oversized-valid"
    ),
    # Two segments (JWS with the signature cut off).
    pytest.param(lambda w: ".".join(w.issue().split(".")[:2]), "malformed", id="two-segments"),
    # Four segments.
    pytest.param(lambda w: w.issue() + ".AAAA", "malformed", id="four-segments"),
    # Five segments: a JWE where a JWS is expected.
    pytest.param(segments("eyJhbGciOiJkaXIifQ", "", "AAAA", "AAAA", "AAAA"), "malformed", id="jwe"),
    # Empty string.
    pytest.param(segments(""), "malformed", id="empty"),
    # Empty payload segment: RFC 7797 detached content.
    pytest.param(
        lambda w: w.issue().split(".")[0] + ".." + w.issue().split(".")[2],
        "malformed",
        id="detached-payload",
    ),
    # Non-ASCII look-alike characters.
    pytest.param(lambda w: w.issue().replace("e", "\u0435", 1), "malformed", id="non-ascii"),
    # Bad base64 in the header.
    pytest.param(segments("!!!", "e30", "AAAA"), "malformed-header", id="header-bad-base64"),
    # Padded base64 header: non-canonical spelling of the same token.
    pytest.param(
        lambda w: w.issue().split(".", 1)[0] + "==." + w.issue().split(".", 1)[1],
        "malformed-header",
        id="header-padded",
    ),
    # Header JSON null.
    pytest.param(segments(b64(b"null"), "e30", "AAAA"), "malformed-header", id="header-null"),
    # Header JSON array.
    pytest.param(segments(b64(b"[]"), "e30", "AAAA"), "malformed-header", id="header-array"),
    # Header JSON string.
    pytest.param(segments(b64(b'"ES256"'), "e30", "AAAA"), "malformed-header", id="header-str"),
    # Header not JSON.
    pytest.param(segments(b64(b"{alg:ES256"), "e30", "AAAA"), "malformed-header", id="header-junk"),
    # Header not UTF-8.
    pytest.param(segments(b64(b"\xff\xfe{}"), "e30", "AAAA"), "malformed-header", id="header-utf"),
    # Duplicate "alg": a parser taking the first and one taking the last disagree.
    pytest.param(
        lambda w: segments(
            b64(b'{"alg":"none","alg":"ES256","typ":"at+jwt","kid":"' + w.kid.encode() + b'"}'),
            b64json(payload()),
            "",
        )(w),
        "malformed-header",
        id="header-duplicate-alg",
    ),
    # Signed payload JSON null.
    pytest.param(lambda w: forge(w, raw_body=b"null"), "malformed-payload", id="payload-null"),
    # Signed payload JSON array.
    pytest.param(lambda w: forge(w, raw_body=b"[]"), "malformed-payload", id="payload-array"),
    # Signed payload that is not JSON.
    pytest.param(lambda w: forge(w, raw_body=b"\x00\x01"), "malformed-payload", id="payload-bin"),
    # Signed payload with duplicate "sub": ambiguity between parsers.
    pytest.param(
        lambda w: forge(w, raw_body=b'{"sub":"usr_a","sub":"usr_b"}'),
        "malformed-payload",
        id="payload-duplicate-sub",
    ),
    # Signed payload with NaN (not JSON, accepted by lenient parsers).
    pytest.param(
        lambda w: forge(w, raw_body=json.dumps(payload(exp=float("nan"))).encode()),
        "malformed-payload",
        id="payload-nan",
    ),
    # Expired by more than the leeway.
    pytest.param(
        lambda w: forge(
            w, body=payload(iat=NOW - 400, nbf=NOW - 400, exp=NOW - 31, auth_time=NOW - 400)
        ),
        "expired",
        id="expired",
    ),
    # Not yet valid: nbf beyond the leeway.
    pytest.param(
        lambda w: forge(w, body=payload(nbf=NOW + 31)), "not-yet-valid", id="not-yet-valid"
    ),
    # Far-future iat (a pre-minted token waiting to be used) with a current nbf.
    pytest.param(
        lambda w: forge(w, body=payload(iat=NOW + 3600, exp=NOW + 3900)),
        "iat-in-future",
        id="far-future-iat",
    ),
    # Over-long lifetime signed with the real key (an issuer bug must not mint a week token).
    pytest.param(
        lambda w: forge(w, body=payload(exp=NOW + 15 * 60 + 1)),
        "lifetime-too-long",
        id="lifetime-too-long",
    ),
    # exp before iat.
    pytest.param(
        lambda w: forge(w, body=payload(exp=NOW - 1)), "invalid-claim", id="exp-before-iat"
    ),
    # auth_time after the token was issued: impossible, so forged.
    pytest.param(
        lambda w: forge(w, body=payload(auth_time=NOW + 5)), "invalid-claim", id="auth-after-iat"
    ),
    # Another surface's audience.
    pytest.param(
        lambda w: forge(w, body=payload(aud=Surface.ADMIN.audience)),
        "wrong-audience",
        id="aud-admin",
    ),
    # Audience of some other API altogether.
    pytest.param(
        lambda w: forge(w, body=payload(aud="https://other-api.example")),
        "wrong-audience",
        id="aud-foreign",
    ),
    # Multi-audience token including ours: replayable across surfaces.
    pytest.param(
        lambda w: forge(w, body=payload(aud=[Surface.MOBILE.audience, Surface.ADMIN.audience])),
        "wrong-audience",
        id="aud-list-two",
    ),
    # Empty audience list.
    pytest.param(lambda w: forge(w, body=payload(aud=[])), "wrong-audience", id="aud-list-empty"),
    # Missing audience.
    pytest.param(lambda w: forge(w, body=payload(aud=DROP)), "missing-claim", id="aud-missing"),
    # A token for another surface, issued by our real issuer.
    pytest.param(lambda w: w.issue(Surface.FLEET), "wrong-audience", id="other-surface"),
    # Wrong issuer.
    pytest.param(
        lambda w: forge(w, body=payload(iss="https://attacker.example")),
        "wrong-issuer",
        id="iss-wrong",
    ),
    # Issuer differing by a trailing slash: exact match only.
    pytest.param(
        lambda w: forge(w, body=payload(iss=ISSUER + "/")), "wrong-issuer", id="iss-slash"
    ),
    # Missing issuer.
    pytest.param(lambda w: forge(w, body=payload(iss=DROP)), "missing-claim", id="iss-missing"),
    # An ID token (typ JWT, aud = client id) presented as an access token.
    pytest.param(id_token_shaped, "wrong-type", id="id-token"),
    # A plain JWT with no typ at all.
    pytest.param(lambda w: forge(w, header(w, typ=DROP)), "wrong-type", id="typ-missing"),
    # typ case variant: exact match only.
    pytest.param(lambda w: forge(w, header(w, typ="AT+JWT")), "wrong-type", id="typ-upper"),
    # A DPoP proof presented as an access token.
    pytest.param(dpop_proof_as_token, "wrong-type", id="dpop-proof"),
]


@pytest.mark.parametrize(("build", "reason"), ATTACKS)
@pytest.mark.asyncio
async def test_attack_is_refused(build: Case, reason: str) -> None:
    w = make_world()
    token = build(w)
    with pytest.raises(InvalidToken) as caught:
        await w.validator.validate(token, surface=Surface.MOBILE)
    assert caught.value.reason == reason
    assert caught.value.code == "invalid-token"
    assert caught.value.status == 401


@pytest.mark.asyncio
async def test_forge_control_token_is_accepted() -> None:
    # The forging helpers build a valid token when nothing is changed, so each attack row
    # fails for its attack and not because the helper is broken.
    w = make_world()
    claims = await w.validator.validate(forge(w), surface=Surface.MOBILE)
    assert claims.jti == "jti-forged-0001"
    assert claims.scopes == frozenset({"vehicle:read"})


REQUIRED = ["sub", "client_id", "tenant", "jti", "scope", "auth_time", "acr", "sub_type"]
REQUIRED += ["exp", "iat"]


@pytest.mark.parametrize("claim", REQUIRED)
@pytest.mark.asyncio
async def test_missing_required_claim_is_refused(claim: str) -> None:
    # A validly signed token lacking a claim the routers rely on.
    w = make_world()
    with pytest.raises(InvalidToken) as caught:
        await w.validator.validate(forge(w, body=payload(**{claim: DROP})), surface=Surface.MOBILE)
    assert caught.value.reason == "missing-claim"


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("sub", 42),  # numeric subject: type confusion in ownership lookups
        ("sub", ""),  # empty subject matches nothing, or everything
        ("client_id", ["cli_mobile"]),  # list where a string is expected
        ("tenant", None),  # null tenant: tenant isolation must never see None
        ("jti", {"id": 1}),  # object jti
        ("scope", ["vehicle:read"]),  # scope must be the RFC 9068 space-separated string
        ("scope", "vehicle:read  vehicle:unlock"),  # double space: an empty scope token
        ("scope", 'vehicle:read "x"'),  # quote is not a scope-token character
        ("auth_time", "2026-11-26T09:00:00Z"),  # string time
        ("exp", float(NOW + 60)),  # fractional NumericDate: we only ever issue integers
        ("exp", True),  # bool is not a time
        ("iat", -1),  # negative time
        ("acr", 2),  # numeric acr
        ("sub_type", "admin"),  # unknown subject type
        ("amr", "pwd"),  # amr must be a list
        ("cnf", "jkt"),  # cnf must be an object
        ("cnf", {"jkt": 5}),  # cnf.jkt must be a string
        ("fam", ""),  # empty family id
        ("aud", 5),  # numeric audience
    ],
)
@pytest.mark.asyncio
async def test_ill_typed_claim_is_refused(claim: str, value: Any) -> None:
    w = make_world()
    with pytest.raises(InvalidToken) as caught:
        await w.validator.validate(forge(w, body=payload(**{claim: value})), surface=Surface.MOBILE)
    assert caught.value.reason == "invalid-claim"


@pytest.mark.asyncio
async def test_refusal_never_logs_the_token(caplog: pytest.LogCaptureFixture) -> None:
    w = make_world()
    token = tampered_payload(w)
    caplog.set_level("DEBUG")
    with pytest.raises(InvalidToken):
        await w.validator.validate(token, surface=Surface.MOBILE)
    assert "bad-signature" in caplog.text
    for part in token.split("."):
        assert part not in caplog.text
