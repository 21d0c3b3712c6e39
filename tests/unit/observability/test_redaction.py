"""Redaction: secrets are removed by name and by shape; identifiers and neighbours survive."""

from __future__ import annotations

import copy
import json
import time

import pytest

from fleetward.observability.redaction import (
    MAX_DEPTH,
    REDACTED,
    is_sensitive_name,
    redact,
    redact_event_dict,
    scrub_text,
)
from support.secrets_samples import EC_PRIVATE_KEY, ES256_JWT


@pytest.mark.parametrize(
    "key",
    [
        "password",  # the login form field
        "Password",  # case must not matter
        "passwd",  # Unix-style spelling in config dumps
        "pass",  # short form used by some clients
        "db_password",  # any name ending in "password", e.g. settings dumps
        "secret",  # generic secret settings
        "client_secret",  # OAuth confidential client credential
        "clientSecret",  # the same field from a camelCase JSON client
        "token",  # generic bearer token
        "access_token",  # OAuth access token
        "refresh_token",  # long-lived OAuth refresh token
        "refresh-token",  # the same name with a dash
        "id_token",  # OIDC id token
        "csrf_token",  # reusable within the session
        "api_key",  # partner API keys
        "apikey",  # the same without separator
        "X-Api-Key",  # the header form
        "Authorization",  # bearer/basic/DPoP credentials in headers
        "proxy-authorization",  # upstream proxy credentials
        "Cookie",  # session cookies are bearer credentials
        "Set-Cookie",  # a session cookie being issued
        "private_key",  # device or signing private keys
        "signing_key",  # any name whose last word is "key"
        "signingKey",  # the same in camelCase
        "key",  # a bare key
        "totp_secret",  # the MFA seed
        "recovery_code",  # MFA recovery codes are passwords
        "recovery_codes",  # the whole list of them
        "otp",  # a one-time password still valid for its window
        "code",  # OAuth authorization code, redeemable once
        "code_verifier",  # PKCE verifier, redeems the code
        "dpop",  # DPoP proof, replayable until its jti is seen
        "session",  # session handle
        "session_id",  # a session id in a cookie is the credential itself
        "credential",  # generic credential
        "credentials",  # generic credentials bag
        "password_hash",  # crackable offline
        "pin",  # a vehicle PIN unlocks the car
    ],
)
def test_sensitive_key_value_is_replaced_whole(key: str) -> None:
    event = {key: "s3cr3t-V4lue", "request_id": "req-1"}

    assert redact(event) == {key: REDACTED, "request_id": "req-1"}


@pytest.mark.parametrize(
    "key",
    [
        "kid",  # names which key signed a token: needed to debug verification
        "key_id",  # same, spelled out; its last word is "id", not "key"
        "keyId",  # same in camelCase
        "jti",  # token id: the handle for revocation and replay investigation
        "sub",  # subject id, not a credential
        "request_id",  # correlates a request's lines
        "trace_id",  # correlates a trace across services
        "vehicle_id",  # the object being acted on
        "status_code",  # "code" is only secret on its own
        "error_code",  # same
        "country_code",  # same
        "token_type",  # "Bearer" is a scheme, not a token
        "expires_in",  # token lifetime
        "public_key",  # public by definition
        "idempotency_key",  # a request label, not key material
        "monkey",  # "key" is not its last word
        "passenger_count",  # "pass" is only secret on its own
        "secretary",  # "secret" is not its last word
    ],
)
def test_identifier_key_is_kept(key: str) -> None:
    event = {key: "value-7"}

    assert redact(event) == {key: "value-7"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # An access token pasted into a message.
        (
            f"verified {ES256_JWT} jti=tok-9",
            f"verified {REDACTED} jti=tok-9",
        ),
        # A bearer credential in free text; the rest of the sentence stays.
        (
            "upstream rejected Bearer abc.def for veh_123",
            f"upstream rejected Bearer {REDACTED} for veh_123",
        ),
        # A DPoP-bound access token in an Authorization-like string.
        ("scheme DPoP opaque-at-123 used", f"scheme DPoP {REDACTED} used"),
        # Basic credentials are base64 of user:password.
        ("sent Basic dXNlcjpwYXNz", f"sent Basic {REDACTED}"),
        # A whole dumped header line.
        ("Authorization: Bearer abc.def", f"Authorization: {REDACTED}"),
        # A dumped cookie header; every cookie may be a session.
        ("Cookie: fw_session=abc; theme=dark", f"Cookie: {REDACTED}"),
        # The OAuth authorization code in a callback URL; state is not secret.
        (
            "GET /oauth/callback?code=SplxlOBeZQ&state=xyz",
            f"GET /oauth/callback?code={REDACTED}&state=xyz",
        ),
        # A token in the query string of an access log line.
        (
            '"GET /v1/vehicles?access_token=at-1&limit=5 HTTP/1.1" 200',
            f'"GET /v1/vehicles?access_token={REDACTED}&limit=5 HTTP/1.1" 200',
        ),
        # A token request body: only the secret parameters go.
        (
            "grant_type=refresh_token&refresh_token=rt-9&client_secret=cs-1&client_id=app",
            (
                f"grant_type=refresh_token&refresh_token={REDACTED}"
                f"&client_secret={REDACTED}&client_id=app"
            ),
        ),
        # A password in a form body.
        ("username=ana&password=hunter2", f"username=ana&password={REDACTED}"),
        # A generic token parameter, quoted.
        ('token="t 1" next=1', f'token="{REDACTED}" next=1'),
        # A PEM private key, multi-line, inside a sentence.
        (f"loaded {EC_PRIVATE_KEY} for veh_1", f"loaded {REDACTED} for veh_1"),
        # A PEM private key cut off by truncation has no END line.
        ("-----BEGIN PRIVATE KEY-----\nMIIEvQ", REDACTED),
        # A database URL with its password.
        (
            "connect postgresql+asyncpg://fleet:hunter2@db:5432/fleet",
            f"connect postgresql+asyncpg://fleet:{REDACTED}@db:5432/fleet",
        ),
        # A JSON body with a password and a request id beside it.
        (
            '{"password": "a\\"b", "request_id": "r1"}',
            f'{{"password": "{REDACTED}", "request_id": "r1"}}',
        ),
        # The repr of a headers dict, as third-party libraries log it.
        (
            "{'Authorization': 'Bearer x', 'X-Request-ID': 'r2'}",
            f"{{'Authorization': '{REDACTED}', 'X-Request-ID': 'r2'}}",
        ),
        # A bytes value in a repr.
        ("{'api_key': b'k-1'}", f"{{'api_key': b'{REDACTED}'}}"),
        # A token in a URL fragment (implicit flow).
        (
            "/cb#access_token=at-2&token_type=Bearer",
            f"/cb#access_token={REDACTED}&token_type=Bearer",
        ),
        # Identifiers, ids and times are left alone.
        (
            "kid=k-1 jti=tok-1 sub=usr_1 status_code=500 at 2026-11-26T10:00:00Z from 10.0.0.7:443",
            "kid=k-1 jti=tok-1 sub=usr_1 status_code=500 at 2026-11-26T10:00:00Z from 10.0.0.7:443",
        ),
        # A URL without a password keeps its user and port.
        ("https://ops@fleetward.example:8443/x", "https://ops@fleetward.example:8443/x"),
        # Plain prose that merely mentions credentials.
        ("basic checks passed; password policy v2", "basic checks passed; password policy v2"),
    ],
)
def test_secret_in_text_is_replaced_and_rest_kept(text: str, expected: str) -> None:
    assert scrub_text(text) == expected


@pytest.mark.parametrize(
    "name",
    [
        "client_secret",  # same verdict for form parameters as for mapping keys
        "X-Api-Key",  # header spelling
        "refreshToken",  # camelCase
    ],
)
def test_name_rule_is_shared_by_keys_and_parameters(name: str) -> None:
    assert is_sensitive_name(name)
    assert scrub_text(f"{name}=v-1") == f"{name}={REDACTED}"
    assert redact({name: "v-1"}) == {name: REDACTED}


def test_secret_strings_are_scrubbed_inside_containers() -> None:
    nested = {
        "request": {
            "headers": [("Authorization", f"Bearer {ES256_JWT}")],
            "url": "/oauth/callback?code=c-1&state=s-1",
        },
        "tags": {"fleet", f"token={ES256_JWT}"},
    }

    result = redact(nested)

    assert result == {
        "request": {
            "headers": [("Authorization", f"Bearer {REDACTED}")],
            "url": f"/oauth/callback?code={REDACTED}&state=s-1",
        },
        "tags": {"fleet", f"token={REDACTED}"},
    }


def test_non_sensitive_mapping_is_an_equal_copy() -> None:
    event = {
        "event": "command accepted",
        "vehicle_id": "veh_123",
        "request_id": "req-1",
        "jti": "tok-1",
        "kid": "fleet-1",
        "attempt": 2,
        "ratio": 0.5,
        "flags": ["a", "b"],
        "window": (1, 2),
        "nothing": None,
    }

    result = redact(event)

    assert result == event
    assert result is not event


def test_input_is_not_mutated() -> None:
    event = {
        "password": "hunter2",
        "headers": {"Authorization": "Bearer abc.def", "Accept": "application/json"},
        "items": [{"refresh_token": "rt-1"}, f"jwt {ES256_JWT}"],
    }
    before = copy.deepcopy(event)

    redact(event)

    assert event == before


def test_none_under_sensitive_key_stays_none() -> None:
    # "no password supplied" is useful and reveals nothing.
    assert redact({"password": None}) == {"password": None}


def test_nesting_deeper_than_the_bound_is_replaced() -> None:
    deep: dict[str, object] = {"leaf": "kept"}
    for _ in range(50):
        deep = {"next": deep}

    result = redact(deep)

    for _ in range(MAX_DEPTH):
        assert isinstance(result, dict)
        result = result["next"]
    assert result == REDACTED


def test_self_referencing_structure_terminates() -> None:
    loop: list[object] = ["token=t-1"]
    loop.append(loop)

    result = redact(loop)

    assert isinstance(result, list)
    assert result[0] == f"token={REDACTED}"


def test_non_string_keys_are_printable_and_scrubbed() -> None:
    # A tuple key would make the JSON renderer fail, and it can carry a secret of its own.
    event = {("ana", "password=hunter2"): 1, 7: "seven", None: "none"}

    result = redact(event)

    assert result == {f"('ana', 'password={REDACTED}')": 1, 7: "seven", None: "none"}
    json.dumps(result)


def test_private_members_of_a_jwk_are_replaced() -> None:
    jwk = {"kty": "EC", "crv": "P-256", "kid": "dev-1", "x": "xx", "y": "yy", "d": "dd"}

    assert redact({"jwk": jwk}) == {"jwk": {**jwk, "d": REDACTED}}


def test_one_letter_names_outside_a_jwk_are_kept() -> None:
    # "d" is only private key material inside a JWK.
    assert redact({"d": 4, "k": "v"}) == {"d": 4, "k": "v"}


class _Credentials:
    def __repr__(self) -> str:
        return "_Credentials(user='ana', password='hunter2')"


class _BrokenRepr:
    def __repr__(self) -> str:
        raise RuntimeError("boom")


def test_unknown_object_becomes_its_scrubbed_repr() -> None:
    # An object's repr is what a renderer would print; it must not carry its secrets along.
    assert redact({"creds": _Credentials()}) == {
        "creds": f"_Credentials(user='ana', password='{REDACTED}')"
    }


def test_object_with_broken_repr_does_not_break_logging() -> None:
    assert redact([_BrokenRepr()]) == ["<unrepresentable _BrokenRepr>"]


def test_processor_keeps_formatter_bookkeeping_untouched() -> None:
    record = object()
    event = {"event": "x", "_record": record, "_from_structlog": False, "token": "t"}

    result = redact_event_dict(None, "info", event)

    assert result["_record"] is record
    assert result == {"event": "x", "_record": record, "_from_structlog": False, "token": REDACTED}


@pytest.mark.parametrize(
    "text",
    [
        "a" * 100_000,  # one huge word
        "eyJ" * 30_000,  # many JWT starts that never complete
        "eyJa" + ".a" * 50_000,  # a JWT-like run with endless segments
        "-----BEGIN PRIVATE KEY-----" + "x" * 100_000,  # a PEM block without END
        "-----BEGIN " * 10_000,  # many PEM starts
        "Bearer " * 15_000,  # many schemes
        "s://" + "a:" * 50_000,  # a URL with endless colons and no "@"
        "a=" * 50_000,  # many parameters
        ("n" * 100 + "=") * 1_000,  # names longer than the scan window
        "'password': '" + "x" * 100_000,  # an unterminated quoted secret
        '"":' * 30_000,  # many empty quoted names
        " " * 50_000 + ":" * 50_000,  # separators after a long run of spaces
    ],
)
def test_hostile_text_is_scanned_in_linear_time(text: str) -> None:
    # A quadratic scan of these would take minutes; a log call must never stall a worker.
    started = time.perf_counter()

    scrub_text(text)

    assert time.perf_counter() - started < 2.0


def test_a_key_block_named_by_a_secret_field_is_removed_whole() -> None:
    # The name-triggered rule alone stopped at the first space: the key body survived.
    body = "MHcCAQEEIBodyOfTheKeyThatMustNotSurvive"
    text = f'"password": "-----BEGIN EC PRIVATE KEY-----\\n{body}\\n-----END EC PRIVATE KEY-----"'
    scrubbed = scrub_text(text)
    assert body not in scrubbed
    assert "PRIVATE KEY" not in scrubbed
