"""WebAuthn with a software authenticator: registration, login, and every way to cheat.

Each case names the threat it covers. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pyotp
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.identity.acr import Acr
from fleetward.identity.credential_models import LoginSession, WebAuthnCredential
from fleetward.identity.login.limits import LIMITS, Dimension, Factor
from fleetward.platform import Platform
from fleetward.settings import Settings
from unit.identity.login.login_support import Browser, Person, SoftAuthenticator, b64url

PROBLEM = "application/problem+json"


@pytest.fixture
def authenticator(settings: Settings) -> SoftAuthenticator:
    # The relying party is the configured public URL (http://127.0.0.1:8000 here).
    return SoftAuthenticator(rp_id="127.0.0.1", origin="http://127.0.0.1:8000")


async def _mfa_login(browser: Browser, person: Person, clock: FrozenClock) -> None:
    assert person.totp_secret is not None
    await browser.login(person.username, person.password)
    clock.advance(timedelta(seconds=30))
    code = pyotp.TOTP(person.totp_secret).at(clock.now())
    assert (await browser.totp(code)).status_code == 303


async def _register(
    app: FastAPI, person: Person, key: SoftAuthenticator, clock: FrozenClock
) -> None:
    async with Browser(app) as browser:
        await _mfa_login(browser, person, clock)
        options = await browser.post_json("/account/webauthn/register/options")
        assert options.status_code == 200
        done = await browser.post_json(
            "/account/webauthn/register/verify", {"credential": key.register(options.json())}
        )
        assert done.status_code == 201, done.text


async def _sessions(platform: Platform) -> list[LoginSession]:
    async with platform.services() as (_uow, ctx):
        return list(await ctx.session.scalars(select(LoginSession)))


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["type"] == f"urn:fleetward:problem:{code}"
    return body


async def test_security_key_login_is_phishing_resistant(
    app: FastAPI,
    platform: Platform,
    people: dict[str, Person],
    clock: FrozenClock,
    authenticator: SoftAuthenticator,
) -> None:
    await _register(app, people["adam"], authenticator, clock)
    target = "/oauth/authorize?client_id=cli_x&acr_values=phr"
    async with Browser(app) as browser:
        await browser.login(
            "adam", people["adam"].password, return_to=target, acr=Acr.PHISHING_RESISTANT.value
        )
        page = await browser.http.get("/login/mfa")
        # Downgrade: for a phishing-resistant request, codes are not even offered...
        assert 'id="webauthn"' in page.text and 'action="/login/totp"' not in page.text
        assert 'action="/login/recovery"' not in page.text
        # ... nor accepted when posted anyway.
        code = pyotp.TOTP(people["adam"].totp_secret or "").at(clock.now() + timedelta(30))
        assert (await browser.totp(code)).status_code == 403
        options = (await browser.post_json("/login/webauthn/options")).json()
        assert [c["id"] for c in options["allowCredentials"]] == [
            b64url(authenticator.credential_id)
        ]
        done = await browser.post_json(
            "/login/webauthn/verify", {"credential": authenticator.sign(options["challenge"])}
        )
        assert done.status_code == 200 and done.json() == {"redirect": target}
        assert browser.session_cookie is not None
    phr = [s for s in await _sessions(platform) if s.acr == Acr.PHISHING_RESISTANT.value]
    assert len(phr) == 1 and phr[0].amr == ["pwd", "hwk"]


@dataclass(frozen=True)
class Case:
    name: str
    # Builds the credential to send from (authenticator, options challenge, intruder key).
    forge: Callable[[SoftAuthenticator, str, SoftAuthenticator], dict[str, Any]]
    reason: str


def _tampered(key: SoftAuthenticator, challenge: str, _o: SoftAuthenticator) -> dict[str, Any]:
    credential = key.sign(challenge)
    signature = bytearray(credential["response"]["signature"].encode())
    signature[-2] = ord("A") if signature[-2] != ord("A") else ord("B")
    credential["response"]["signature"] = signature.decode()
    return credential


def _nested_client_data(
    key: SoftAuthenticator, challenge: str, _o: SoftAuthenticator
) -> dict[str, Any]:
    credential = key.sign(challenge)
    # Well-formed JSON nested deeper than any parser recurses: garbage, not a server error.
    credential["response"]["clientDataJSON"] = b64url(b"[" * 5000 + b"]" * 5000)
    return credential


CASES = [
    # Cloned authenticator or replayed assertion: the counter did not move forward.
    Case("sign-count-equal", lambda k, c, o: k.sign(c, counter=k.counter), "webauthn-sign-count"),
    Case("sign-count-lower", lambda k, c, o: k.sign(c, counter=0), "webauthn-sign-count"),
    # Pre-computed or relayed assertion: signed over a challenge the server did not issue.
    Case(
        "wrong-challenge",
        lambda k, c, o: k.sign(b64url(secrets.token_bytes(32))),
        "webauthn-challenge",
    ),
    # Phishing: the browser reports the page's real origin, a look-alike site's.
    Case(
        "wrong-origin",
        lambda k, c, o: k.sign(c, origin="http://127.0.0.1.evil.example"),
        "webauthn-invalid",
    ),
    # A credential made for another relying party.
    Case("wrong-rp-id", lambda k, c, o: k.sign(c, rp_id="evil.example"), "webauthn-invalid"),
    # Forgery: the signature does not verify with the registered public key.
    Case("bad-signature", _tampered, "webauthn-invalid"),
    # A key that was never registered here (or belongs to someone else).
    Case("unknown-key", lambda k, c, o: o.sign(c), "webauthn-unknown-credential"),
    # Garbage where a credential should be.
    Case("malformed", lambda k, c, o: {"id": 1, "response": []}, "webauthn-invalid"),
    Case("nested-client-data", _nested_client_data, "webauthn-invalid"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_refused_assertions(
    app: FastAPI,
    platform: Platform,
    people: dict[str, Person],
    clock: FrozenClock,
    authenticator: SoftAuthenticator,
    case: Case,
) -> None:
    await _register(app, people["adam"], authenticator, clock)
    intruder = SoftAuthenticator(rp_id=authenticator.rp_id, origin=authenticator.origin)
    async with Browser(app) as browser:
        # One genuine login first, so the stored counter is above zero.
        await browser.login("adam", people["adam"].password)
        options = (await browser.post_json("/login/webauthn/options")).json()
        good = authenticator.sign(options["challenge"])
        assert (await browser.post_json("/login/webauthn/verify", {"credential": good})).is_success
        await browser.login("adam", people["adam"].password)
        options = (await browser.post_json("/login/webauthn/options")).json()
        forged = case.forge(authenticator, options["challenge"], intruder)
        response = await browser.post_json("/login/webauthn/verify", {"credential": forged})
    body = _problem(response, 401, "second-factor-rejected")
    assert body["reason"] == case.reason
    assert len(await _sessions(platform)) == 2  # the registration login and the genuine one
    async with platform.services() as (_uow, ctx):
        failed = await ctx.session.scalars(
            select(AuditRecord.reason).where(AuditRecord.name == EventName.LOGIN_FAILED)
        )
        assert list(failed) == [case.reason]


async def test_a_challenge_is_good_for_one_try(
    app: FastAPI,
    people: dict[str, Person],
    clock: FrozenClock,
    authenticator: SoftAuthenticator,
) -> None:
    await _register(app, people["adam"], authenticator, clock)
    async with Browser(app) as browser:
        # Without options first there is no challenge to answer.
        await browser.login("adam", people["adam"].password)
        unasked = authenticator.sign(b64url(secrets.token_bytes(32)))
        response = await browser.post_json("/login/webauthn/verify", {"credential": unasked})
        assert _problem(response, 401, "second-factor-rejected")["reason"] == "webauthn-challenge"
        # Asking again withdraws the earlier challenge.
        first = (await browser.post_json("/login/webauthn/options")).json()
        await browser.post_json("/login/webauthn/options")
        stale = authenticator.sign(first["challenge"])
        response = await browser.post_json("/login/webauthn/verify", {"credential": stale})
        assert _problem(response, 401, "second-factor-rejected")["reason"] == "webauthn-challenge"
        # A failed try consumed the challenge: a correct answer to it now fails as well.
        current = (await browser.post_json("/login/webauthn/options")).json()
        wrong = authenticator.sign(current["challenge"], origin="http://evil.example")
        await browser.post_json("/login/webauthn/verify", {"credential": wrong})
        retry = authenticator.sign(current["challenge"])
        response = await browser.post_json("/login/webauthn/verify", {"credential": retry})
        assert _problem(response, 401, "second-factor-rejected")["reason"] == "webauthn-challenge"


async def test_json_endpoints_need_csrf_and_a_pending_login(
    app: FastAPI,
    people: dict[str, Person],
    clock: FrozenClock,
    authenticator: SoftAuthenticator,
) -> None:
    await _register(app, people["adam"], authenticator, clock)
    async with Browser(app) as browser:
        await browser.open_login()
        # No password step yet: nothing to complete.
        _problem(await browser.post_json("/login/webauthn/options"), 401, "no-pending-login")
        await browser.login("adam", people["adam"].password)
        # Cross-site request forgery against the JSON endpoints.
        response = await browser.http.post("/login/webauthn/options")
        _problem(response, 403, "csrf-rejected")
        response = await browser.http.post(
            "/login/webauthn/options", headers={"x-csrf-token": "forged"}
        )
        _problem(response, 403, "csrf-rejected")
        # Server-owned or unexpected fields are refused, not ignored.
        response = await browser.post_json(
            "/login/webauthn/verify", {"credential": {}, "acr": "urn:fleetward:acr:phr"}
        )
        _problem(response, 422, "invalid-input")
    async with Browser(app) as browser:
        # A person without a key gets no options (nothing to enumerate keys with either).
        await browser.login("tina", people["tina"].password)
        _problem(await browser.post_json("/login/webauthn/options"), 403, "factor-not-available")


async def test_registration_rules(
    app: FastAPI,
    platform: Platform,
    people: dict[str, Person],
    clock: FrozenClock,
    authenticator: SoftAuthenticator,
) -> None:
    async with Browser(app) as browser:
        await browser.open_login()
        # Planting a key needs a session.
        response = await browser.post_json("/account/webauthn/register/options")
        _problem(response, 401, "not-signed-in")
        await _mfa_login(browser, people["adam"], clock)
        # An answer to a challenge the server never issued is refused.
        response = await browser.post_json(
            "/account/webauthn/register/verify",
            {"credential": authenticator.register({"challenge": "AAAA", "rp": {"id": "x"}})},
        )
        _problem(response, 422, "webauthn-registration-rejected")
        # A stolen, hours-old session cannot add a key.
        clock.advance(timedelta(minutes=16))
        response = await browser.post_json("/account/webauthn/register/options")
        _problem(response, 401, "reauthentication-required")
    await _register(app, people["adam"], authenticator, clock)
    # The same key cannot be registered twice (to this or any account).
    async with Browser(app) as browser:
        await _mfa_login(browser, people["tina"], clock)
        options = await browser.post_json("/account/webauthn/register/options")
        again = authenticator.register(options.json())
        response = await browser.post_json(
            "/account/webauthn/register/verify", {"credential": again}
        )
        _problem(response, 409, "webauthn-credential-exists")
    async with platform.services() as (_uow, ctx):
        keys = list(await ctx.session.scalars(select(WebAuthnCredential)))
        enrolled = list(
            await ctx.session.scalars(
                select(AuditRecord).where(AuditRecord.name == EventName.MFA_ENROLLED)
            )
        )
    assert [k.user_id for k in keys] == [people["adam"].user_id]
    assert [e.details for e in enrolled if e.object_id == people["adam"].user_id][-1] == {
        "method": "webauthn"
    }


async def test_a_registered_key_ends_password_only_logins(
    app: FastAPI,
    platform: Platform,
    people: dict[str, Person],
    authenticator: SoftAuthenticator,
) -> None:
    # Once a person has a second factor, a stolen password alone no longer signs in.
    async with Browser(app) as browser:
        await browser.login("casey", people["casey"].password)
        options = await browser.post_json("/account/webauthn/register/options")
        done = await browser.post_json(
            "/account/webauthn/register/verify",
            {"credential": authenticator.register(options.json())},
        )
        assert done.status_code == 201
    async with Browser(app) as browser:
        response = await browser.login("casey", people["casey"].password)
        assert response.headers["location"] == "/login/mfa"
        assert browser.session_cookie is None
        options = (await browser.post_json("/login/webauthn/options")).json()
        verified = await browser.post_json(
            "/login/webauthn/verify", {"credential": authenticator.sign(options["challenge"])}
        )
        assert verified.json() == {"redirect": "/account"}


async def test_assertion_guessing_is_throttled(
    app: FastAPI, people: dict[str, Person], clock: FrozenClock, authenticator: SoftAuthenticator
) -> None:
    # Hammering the JSON endpoint gets the same per-account limit as the form steps.
    await _register(app, people["adam"], authenticator, clock)
    limit = LIMITS[(Factor.WEBAUTHN, Dimension.ACCOUNT)]
    async with Browser(app) as browser:
        await browser.login("adam", people["adam"].password)
        junk = {"credential": {"id": "x"}}
        for _ in range(limit):
            _problem(
                await browser.post_json("/login/webauthn/verify", junk),
                401,
                "second-factor-rejected",
            )
        options = (await browser.post_json("/login/webauthn/options")).json()
        good = {"credential": authenticator.sign(options["challenge"])}
        response = await browser.post_json("/login/webauthn/verify", good)
    _problem(response, 429, "login-throttled")
    assert int(response.headers["retry-after"]) > 0
