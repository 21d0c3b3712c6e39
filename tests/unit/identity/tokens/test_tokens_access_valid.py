"""Access tokens that must be accepted, and the exact edges of the time windows."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from joserfc import jws

from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.tokens import (
    AccessTokenIssuer,
    AccessTokenValidator,
    InMemoryRevocations,
    InvalidToken,
    IssuedToken,
    Keyring,
)

T0 = datetime(2026, 11, 26, 9, 0, 0, 400_000, tzinfo=UTC)  # mid-second on purpose
ISSUER = "https://id.fleetward.test"


def setup(
    **validator_options: Any,
) -> tuple[FrozenClock, Keyring, AccessTokenIssuer, AccessTokenValidator]:
    clock = FrozenClock(T0)
    keyring = Keyring.generate(clock)
    issuer = AccessTokenIssuer(keyring, ISSUER, clock)
    validator = AccessTokenValidator(
        keyring, ISSUER, clock, InMemoryRevocations(), **validator_options
    )
    return clock, keyring, issuer, validator


def issue(issuer: AccessTokenIssuer, **changes: Any) -> IssuedToken:
    arguments: dict[str, Any] = {
        "subject": "usr_7f3a",
        "client_id": "cli_fleet_console",
        "tenant": "ten_acme",
        "surface": Surface.FLEET,
        "scopes": ["fleet:read", "vehicle:locate"],
        "auth_time": T0 - timedelta(minutes=2),
        "acr": "urn:fleetward:acr:mfa",
        "amr": ["pwd", "otp"],
        "token_family": "fam_abc",
        "subject_type": "user",
    }
    arguments.update(changes)
    return issuer.issue(**arguments)


def decode_segment(segment: str) -> dict[str, Any]:
    value = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    assert isinstance(value, dict)
    return value


@pytest.mark.asyncio
async def test_issued_token_validates_with_all_claims() -> None:
    _clock, _keyring, issuer, validator = setup()
    issued = issue(issuer, cnf_jkt="0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I")
    claims = await validator.validate(issued.token, surface=Surface.FLEET)
    assert claims == issued.claims
    assert claims.iss == ISSUER
    assert claims.sub == "usr_7f3a"
    assert claims.aud == "urn:fleetward:api:fleet"
    assert claims.iat == int(T0.timestamp())  # truncated to the second
    assert claims.exp == claims.iat + 300
    assert claims.nbf == claims.iat
    assert claims.scopes == frozenset({"fleet:read", "vehicle:locate"})
    assert claims.tenant == "ten_acme"
    assert claims.auth_time == int((T0 - timedelta(minutes=2)).timestamp())
    assert claims.amr == ("pwd", "otp")
    assert claims.sub_type == "user"
    assert claims.fam == "fam_abc"
    assert claims.cnf_jkt == "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"
    assert issued.expires_in == 300


def test_wire_format_is_rfc9068() -> None:
    _clock, keyring, issuer, _validator = setup()
    issued = issue(issuer, cnf_jkt="jkt-value")
    head, body, _signature = issued.token.split(".")
    assert decode_segment(head) == {"alg": "ES256", "typ": "at+jwt", "kid": keyring.active.kid}
    payload = decode_segment(body)
    assert set(payload) == {
        "iss", "sub", "aud", "exp", "iat", "nbf", "jti", "client_id", "scope", "tenant",
        "auth_time", "acr", "amr", "sub_type", "fam", "cnf",
    }  # fmt: skip
    assert payload["aud"] == "urn:fleetward:api:fleet"  # one string, not a list
    assert payload["scope"] == "fleet:read vehicle:locate"
    assert payload["cnf"] == {"jkt": "jkt-value"}
    # 128 random bits, URL-safe: 22 base64url characters.
    assert len(base64.urlsafe_b64decode(payload["jti"] + "==")) == 16


def test_optional_claims_are_omitted_when_absent() -> None:
    _clock, _keyring, issuer, _validator = setup()
    issued = issue(issuer, token_family=None, subject_type="workload")
    payload = decode_segment(issued.token.split(".")[1])
    assert "fam" not in payload
    assert "cnf" not in payload
    assert payload["sub_type"] == "workload"


def test_jti_is_unique_per_token() -> None:
    _clock, _keyring, issuer, _validator = setup()
    assert len({issue(issuer).claims.jti for _ in range(50)}) == 50


def test_issued_token_repr_hides_the_token() -> None:
    _clock, _keyring, issuer, _validator = setup()
    issued = issue(issuer)
    assert issued.token not in repr(issued)
    assert issued.token.split(".")[2] not in repr(issued)


@pytest.mark.asyncio
@pytest.mark.parametrize("cache_size", [0, 100])
async def test_time_window_edges(cache_size: int) -> None:
    clock, _keyring, issuer, validator = setup(cache_size=cache_size)
    issued = issue(issuer)
    exp = issued.claims.expires_at
    # Valid up to (not including) exp + 30 s leeway.
    clock.set(exp + timedelta(seconds=29, microseconds=999_999))
    assert (await validator.validate(issued.token, surface=Surface.FLEET)).jti == issued.claims.jti
    clock.set(exp + timedelta(seconds=30))
    with pytest.raises(InvalidToken) as caught:
        await validator.validate(issued.token, surface=Surface.FLEET)
    assert caught.value.reason == "expired"


@pytest.mark.asyncio
async def test_clock_skew_within_leeway_is_tolerated() -> None:
    # An issuer clock 29 s ahead of this replica: nbf and iat are within leeway.
    clock, keyring, _issuer, validator = setup()
    ahead = AccessTokenIssuer(keyring, ISSUER, FrozenClock(T0 + timedelta(seconds=29)))
    token = issue(ahead, auth_time=T0).token
    assert (await validator.validate(token, surface=Surface.FLEET)).sub == "usr_7f3a"
    # 31 s ahead is beyond the leeway.
    far = AccessTokenIssuer(keyring, ISSUER, FrozenClock(T0 + timedelta(seconds=31)))
    with pytest.raises(InvalidToken) as caught:
        await validator.validate(issue(far, auth_time=T0).token, surface=Surface.FLEET)
    assert caught.value.reason == "not-yet-valid"
    assert clock.now() == T0


@pytest.mark.asyncio
async def test_token_from_retired_key_validates_until_it_expires() -> None:
    clock, keyring, issuer, validator = setup()
    issued = issue(issuer)
    old_kid = keyring.active.kid
    clock.advance(timedelta(minutes=1))
    keyring.rotate(clock.now())
    assert keyring.active.kid != old_kid
    fresh = issue(issuer)
    assert decode_segment(fresh.token.split(".")[0])["kid"] == keyring.active.kid

    clock.advance(timedelta(minutes=3))
    assert (await validator.validate(issued.token, surface=Surface.FLEET)).jti == issued.claims.jti
    assert old_kid in {k["kid"] for k in keyring.jwks(clock.now())["keys"]}
    clock.set(issued.claims.expires_at + timedelta(seconds=30))
    with pytest.raises(InvalidToken) as caught:
        await validator.validate(issued.token, surface=Surface.FLEET)
    assert caught.value.reason == "expired"
    # The new key's token is unaffected.
    assert (await validator.validate(fresh.token, surface=Surface.FLEET)).jti == fresh.claims.jti


@pytest.mark.asyncio
async def test_withdrawn_key_stops_its_tokens_at_once() -> None:
    # Key compromise: withdrawing the key must end its tokens now, not at their expiry.
    _clock, keyring, issuer, validator = setup()
    issued = issue(issuer)
    assert (await validator.validate(issued.token, surface=Surface.FLEET)).sub == "usr_7f3a"
    keyring.withdraw(keyring.active.kid, T0)
    with pytest.raises(InvalidToken) as caught:
        await validator.validate(issued.token, surface=Surface.FLEET)
    assert caught.value.reason == "unknown-key"


@pytest.mark.asyncio
async def test_single_element_audience_list_is_accepted() -> None:
    # Documented choice: ["<this surface>"] is the same audience as "<this surface>".
    _clock, keyring, issuer, validator = setup()
    payload = issue(issuer).claims.to_payload()
    payload["aud"] = [Surface.FLEET.audience]
    token = jws.serialize_compact(
        {"alg": "ES256", "typ": "at+jwt", "kid": keyring.active.kid},
        json.dumps(payload),
        keyring.active.private_key,
        algorithms=["ES256"],
    )
    claims = await validator.validate(token, surface=Surface.FLEET)
    assert claims.aud == Surface.FLEET.audience
    with pytest.raises(InvalidToken) as caught:
        await validator.validate(token, surface=Surface.MOBILE)
    assert caught.value.reason == "wrong-audience"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"lifetime": timedelta(minutes=16)}, "lifetime"),  # beyond max_lifetime
        ({"lifetime": timedelta(0)}, "lifetime"),  # zero lifetime
        ({"subject": ""}, "subject"),  # anonymous token
        ({"tenant": ""}, "tenant"),  # token outside any tenant
        ({"scopes": "fleet:read"}, "sequence"),  # a string is not a list of scopes
        ({"scopes": ["fleet read"]}, "scope"),  # space would split into two scopes
        ({"auth_time": T0 + timedelta(seconds=1)}, "auth_time"),  # authenticated in future
        ({"auth_time": datetime(2026, 11, 26)}, "auth_time"),  # naive datetime
        ({"subject_type": "device"}, "subject_type"),  # devices never get access tokens
        ({"token_family": ""}, "token_family"),  # empty family id
        ({"amr": ["pwd", ""]}, "amr"),  # empty method
    ],
)
def test_issuer_refuses_bad_requests(changes: dict[str, Any], message: str) -> None:
    _clock, _keyring, issuer, _validator = setup()
    with pytest.raises((ValueError, TypeError), match=message):
        issue(issuer, **changes)


def test_issuer_refuses_token_validators_would_refuse_for_size() -> None:
    _clock, _keyring, issuer, _validator = setup()
    with pytest.raises(ValueError, match="max_token_bytes"):
        issue(issuer, scopes=[f"scope:{n:04d}" for n in range(400)])


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"leeway": timedelta(minutes=5)}, "leeway"),  # more lenient than the JWKS skew
        ({"leeway": timedelta(seconds=-1)}, "leeway"),  # negative leeway
        ({"max_lifetime": timedelta(hours=1)}, "max_lifetime"),  # outlives retired keys
    ],
)
def test_validator_refuses_unsafe_configuration(options: dict[str, Any], message: str) -> None:
    clock = FrozenClock(T0)
    keyring = Keyring.generate(clock)
    with pytest.raises(ValueError, match=message):
        AccessTokenValidator(keyring, ISSUER, clock, InMemoryRevocations(), **options)
