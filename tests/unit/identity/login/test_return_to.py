"""``return_to`` is never an open redirect: only same-origin paths under /oauth/ survive.

Each case names the trick it tries. Hostile values fall back to the safe default.
"""

from __future__ import annotations

import pytest
from fastapi import FastAPI

from fleetward.identity.acr import Acr
from fleetward.identity.login.errors import InvalidLoginRequest
from fleetward.identity.login.request import DEFAULT_RETURN_TO, LoginRequest, safe_return_to
from unit.identity.login.login_support import Browser, Person

AUTHORIZE = "/oauth/authorize?client_id=cli_abc&redirect_uri=https%3A%2F%2Fapp.example%2Fcb"

KEPT = [
    # The authorization endpoint's own URL, with an encoded redirect_uri inside the query.
    AUTHORIZE,
    "/oauth/device?user_code=ABCD-EFGH",
    # A query may legitimately contain slashes and colons (they are not the path).
    "/oauth/authorize?redirect_uri=https://app.example/cb",
]

HOSTILE = [
    "https://evil.example/oauth/",  # absolute URL
    "//evil.example/oauth/",  # scheme-relative: the browser goes to evil.example
    "/\\evil.example",  # backslash: some browsers read /\ as //
    "\\\\evil.example",
    "/oauth/\\evil",
    "https:/evil.example",  # scheme with a single slash
    "javascript:alert(1)",  # script URL
    "data:text/html,hi",
    "/account",  # same origin but outside /oauth/: not a place the login hands back to
    "/oauthx/authorize",  # prefix look-alike without the separating slash
    "oauth/authorize",  # relative without a leading slash
    "/oauth/../admin",  # dot segments walk out of /oauth/
    "/oauth/./../admin",
    "/oauth/%2e%2e/admin",  # encoded dot segment
    "/oauth/%252e%252e/admin",  # double-encoded dot segment
    "/oauth/%2F%2Fevil.example",  # encoded slashes form // once decoded
    "/oauth//evil.example",
    "/oauth/%5cevil.example",  # encoded backslash
    "/oauth/x%0d%0aLocation:%20https://evil",  # encoded CR LF: header injection
    "/oauth/x\r\nLocation: https://evil",  # raw CR LF
    "/oauth/x\t",  # control character
    "/oauth/x#https://evil.example",  # fragment
    "/oauth/\u2215evil",  # division slash look-alike
    "/oauth/%e2%88%95evil",  # the same look-alike, encoded
    "\uff0f\uff0fevil.example",  # fullwidth solidus
    " /oauth/authorize",  # leading space
    "/oauth/" + "a" * 3000,  # over-long
    "",
]


@pytest.mark.parametrize("value", KEPT)
def test_same_origin_oauth_paths_are_kept(value: str) -> None:
    assert safe_return_to(value) == value


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_return_to_falls_back_to_the_default(value: str) -> None:
    assert safe_return_to(value) == DEFAULT_RETURN_TO


def test_client_id_comes_from_the_authorization_request_first() -> None:
    # Per-client counters follow the client the authorization request names.
    parsed = LoginRequest.parse(return_to=AUTHORIZE, client_id="cli_other")
    assert parsed.client_id == "cli_abc"
    assert LoginRequest.parse(return_to=None, client_id="cli_other").client_id == "cli_other"
    # A malformed client id is ignored rather than used as a counter key.
    assert LoginRequest.parse(return_to=None, client_id="x" * 100).client_id is None


@pytest.mark.parametrize(
    ("acr", "max_age"),
    [
        ("urn:fleetward:acr:unknown", None),  # unknown acr: refusing beats guessing weaker
        (None, "-1"),  # negative age
        (None, "1e9"),  # not an integer
        (None, "\u0661\u0662"),  # Arabic-Indic digits are digits to str.isdigit()
        (None, str(10**12)),  # absurd age
        (None, "9" * 5000),  # past int()'s digit limit: was a ValueError, a 500 at /login
    ],
)
def test_malformed_step_up_parameters_are_refused(acr: str | None, max_age: str | None) -> None:
    with pytest.raises(InvalidLoginRequest):
        LoginRequest.parse(return_to=AUTHORIZE, acr=acr, max_age=max_age)


def test_step_up_parameters_are_parsed() -> None:
    parsed = LoginRequest.parse(return_to=AUTHORIZE, acr=Acr.MFA.value, max_age="300")
    assert (parsed.required_acr, parsed.max_age) == (Acr.MFA, 300)


@pytest.mark.parametrize("value", ["//evil.example/", "/oauth/%2e%2e/admin", AUTHORIZE])
async def test_login_redirects_only_to_safe_targets(
    app: FastAPI, people: dict[str, Person], value: str
) -> None:
    async with Browser(app) as browser:
        response = await browser.login("casey", people["casey"].password, return_to=value)
    assert response.status_code == 303
    assert response.headers["location"] == (value if value == AUTHORIZE else DEFAULT_RETURN_TO)
