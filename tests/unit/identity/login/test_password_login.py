"""The password step: who gets a session, who gets a second step, who gets nothing.

Each case names the threat it covers. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from fleetward.app import build_app
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.identity.acr import Acr
from fleetward.identity.credential_models import LoginSession, PendingLogin
from fleetward.identity.login.answers import BAD_CREDENTIALS, FORM_EXPIRED
from fleetward.identity.models import User
from fleetward.platform import Platform
from fleetward.settings import Settings
from unit.identity.login.login_support import Browser, Person


async def _sessions(platform: Platform) -> list[LoginSession]:
    async with platform.services() as (_uow, ctx):
        return list(await ctx.session.scalars(select(LoginSession)))


async def _events(platform: Platform, name: EventName) -> list[AuditRecord]:
    async with platform.services() as (_uow, ctx):
        rows = await ctx.session.scalars(select(AuditRecord).where(AuditRecord.name == name))
        return list(rows)


@dataclass(frozen=True)
class Case:
    name: str
    attempt: Callable[[Browser, dict[str, Person]], Awaitable[httpx.Response]]
    status: int
    message: str


async def _wrong_password(b: Browser, p: dict[str, Person]) -> httpx.Response:
    return await b.login("casey", "not-the-password")


async def _unknown_user(b: Browser, p: dict[str, Person]) -> httpx.Response:
    return await b.login("nobody-here", "not-the-password")


async def _empty_fields(b: Browser, p: dict[str, Person]) -> httpx.Response:
    return await b.login("", "")


async def _huge_password(b: Browser, p: dict[str, Person]) -> httpx.Response:
    return await b.login("casey", p["casey"].password + "x" * 5000)


async def _nul_in_username(b: Browser, p: dict[str, Person]) -> httpx.Response:
    return await b.login("casey\x00", p["casey"].password)


async def _password_of_another(b: Browser, p: dict[str, Person]) -> httpx.Response:
    return await b.login("casey", p["tina"].password)


async def _missing_csrf(b: Browser, p: dict[str, Person]) -> httpx.Response:
    await b.open_login()
    data = {"username": "casey", "password": p["casey"].password}
    return await b.http.post("/login", data=data)


async def _forged_csrf(b: Browser, p: dict[str, Person]) -> httpx.Response:
    await b.open_login()
    data = {"csrf_token": "A" * 43, "username": "casey", "password": p["casey"].password}
    return await b.http.post("/login", data=data)


async def _csrf_without_cookie(b: Browser, p: dict[str, Person]) -> httpx.Response:
    await b.open_login()
    b.http.cookies.delete("fw_csrf")
    return await b.login("casey", p["casey"].password)


async def _csrf_of_other_browser(b: Browser, p: dict[str, Person]) -> httpx.Response:
    await b.open_login()
    stolen = b.token
    b.http.cookies.clear()
    await b.open_login()  # a new cookie: the old token no longer matches it
    data = {"csrf_token": stolen, "username": "casey", "password": p["casey"].password}
    return await b.http.post("/login", data=data)


async def _cross_site(b: Browser, p: dict[str, Person]) -> httpx.Response:
    await b.open_login()
    data = {"csrf_token": b.token, "username": "casey", "password": p["casey"].password}
    return await b.http.post("/login", data=data, headers={"sec-fetch-site": "cross-site"})


REFUSED = [
    # Guessing: a wrong password gets the generic message and nothing else.
    Case("wrong-password", _wrong_password, 403, BAD_CREDENTIALS),
    # Enumeration: an unknown username is answered exactly like a wrong password.
    Case("unknown-user", _unknown_user, 403, BAD_CREDENTIALS),
    Case("empty-fields", _empty_fields, 403, BAD_CREDENTIALS),
    # Resource abuse: an enormous password is refused without special treatment.
    Case("huge-password", _huge_password, 403, BAD_CREDENTIALS),
    # Bad input: a name no account can have (a NUL, which PostgreSQL text cannot even hold)
    # is an unknown user, never a store error.
    Case("nul-in-username", _nul_in_username, 403, BAD_CREDENTIALS),
    # Cross-account: another person's valid password does not open this account.
    Case("password-of-another-user", _password_of_another, 403, BAD_CREDENTIALS),
    # Login CSRF: a post without the token, or with a made-up one, is refused.
    Case("missing-csrf", _missing_csrf, 403, FORM_EXPIRED),
    Case("forged-csrf", _forged_csrf, 403, FORM_EXPIRED),
    # Double submit: the token alone, without the matching cookie, is worthless.
    Case("csrf-without-cookie", _csrf_without_cookie, 403, FORM_EXPIRED),
    Case("csrf-of-other-browser", _csrf_of_other_browser, 403, FORM_EXPIRED),
    # Fetch metadata: a browser-declared cross-site post is refused even with a token.
    Case("cross-site-post", _cross_site, 403, FORM_EXPIRED),
]


@pytest.mark.parametrize("case", REFUSED, ids=[c.name for c in REFUSED])
async def test_refused_attempts_create_nothing(
    app: FastAPI, platform: Platform, people: dict[str, Person], case: Case
) -> None:
    async with Browser(app) as browser:
        response = await case.attempt(browser, people)
        assert response.status_code == case.status
        assert case.message in response.text
        assert browser.session_cookie is None
        assert "fw_pending" not in browser.http.cookies
    assert await _sessions(platform) == []


def _comparable(response: httpx.Response) -> tuple[int, str, list[str]]:
    body = re.sub(r"(nonce|content)=\"[^\"]+\"", r'\1=""', response.text)
    body = re.sub(r'name="csrf_token" value="[^"]+"', "", body)
    cookies = sorted(h.split("=", 1)[0] for h in response.headers.get_list("set-cookie"))
    return response.status_code, body, cookies


async def test_unknown_user_and_wrong_password_answer_identically(
    app: FastAPI, people: dict[str, Person]
) -> None:
    # Enumeration: status, page and cookies are the same; only the audit trail differs.
    async with Browser(app) as browser:
        wrong = await browser.login("casey", "not-the-password")
        unknown = await browser.login("nobody-here", "not-the-password")
        casing = await browser.login("CASEY", "not-the-password")
    assert _comparable(wrong) == _comparable(unknown) == _comparable(casing)


async def test_disabled_user_is_refused_like_a_wrong_password(
    app: FastAPI, platform: Platform, people: dict[str, Person], clock: FrozenClock
) -> None:
    # A disabled account with its right password must look like any failed login.
    async with platform.services() as (uow, ctx):
        user = await ctx.session.get(User, people["casey"].user_id)
        assert user is not None
        user.disabled_at = clock.now()
        await uow.commit()
    async with Browser(app) as browser:
        response = await browser.login("casey", people["casey"].password)
    assert response.status_code == 403 and BAD_CREDENTIALS in response.text
    assert await _sessions(platform) == []


async def test_password_only_user_gets_a_password_session(
    app: FastAPI, platform: Platform, people: dict[str, Person]
) -> None:
    async with Browser(app) as browser:
        response = await browser.login("casey", people["casey"].password)
        assert response.status_code == 303
        assert response.headers["location"] == "/account"  # no return_to: the safe default
        cookie = next(h for h in response.headers.get_list("set-cookie") if "fw_login=" in h)
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain http in this configuration
        account = await browser.http.get("/account")
        assert account.status_code == 200 and "Signed in as casey" in account.text
    (session,) = await _sessions(platform)
    assert (session.acr, session.amr) == (Acr.PASSWORD.value, ["pwd"])
    (event,) = await _events(platform, EventName.LOGIN_SUCCEEDED)
    assert event.object_id == people["casey"].user_id


async def test_failures_are_audited_without_secrets(
    app: FastAPI, platform: Platform, people: dict[str, Person]
) -> None:
    async with Browser(app) as browser:
        await browser.login("casey", "hunter2-typed-password")
        await browser.login("who-is-this", "hunter2-typed-password")
    failed = await _events(platform, EventName.LOGIN_FAILED)
    assert [e.reason for e in failed] == ["bad-credentials", "bad-credentials"]
    assert {e.object_type for e in failed} == {"user", "account"}
    everything = repr([(e.details, e.object_id, e.reason) for e in failed])
    # Nothing reusable is logged: no password, and no unknown username either.
    assert "hunter2" not in everything and "who-is-this" not in everything


@pytest.mark.parametrize("username", ["adam", "hank"])
async def test_high_risk_password_alone_never_yields_a_session(
    app: FastAPI, platform: Platform, people: dict[str, Person], username: str
) -> None:
    # Admins and technicians must complete MFA: the right password is only a first step
    # (adam, who has TOTP) or nothing at all (hank, who has no second factor).
    async with Browser(app) as browser:
        response = await browser.login(username, people[username].password)
        assert browser.session_cookie is None
        account = await browser.http.get("/account")
        assert account.status_code == 303  # not signed in
    assert await _sessions(platform) == []
    async with platform.services() as (_uow, ctx):
        pending = list(await ctx.session.scalars(select(PendingLogin)))
    if username == "adam":
        assert response.status_code == 303 and response.headers["location"] == "/login/mfa"
        assert len(pending) == 1 and pending[0].user_id == people["adam"].user_id
    else:
        assert response.status_code == 403 and "second factor" in response.text
        assert pending == []
        (event,) = await _events(platform, EventName.LOGIN_FAILED)
        assert event.reason == "mfa-not-enrolled"


async def test_requested_acr_is_honoured_at_the_password_step(
    app: FastAPI, platform: Platform, people: dict[str, Person]
) -> None:
    # Step-up: a client asking for MFA never gets a password-only session, and one asking
    # for a phishing-resistant login cannot be satisfied without a security key.
    async with Browser(app) as browser:
        mfa = await browser.login("casey", people["casey"].password, acr=Acr.MFA.value)
        assert mfa.status_code == 403 and "second factor" in mfa.text
        phr = await browser.login("tina", people["tina"].password, acr=Acr.PHISHING_RESISTANT.value)
        assert phr.status_code == 403 and "security key" in phr.text
        bogus = await browser.login("casey", people["casey"].password, acr="urn:made:up")
        assert bogus.status_code == 400
    assert await _sessions(platform) == []


async def test_existing_session_skips_the_form_only_when_it_suffices(
    app: FastAPI, people: dict[str, Person], clock: FrozenClock
) -> None:
    target = "/oauth/authorize?client_id=x"
    async with Browser(app) as browser:
        await browser.login("casey", people["casey"].password)
        again = await browser.open_login(return_to=target)
        assert again.status_code == 303 and again.headers["location"] == target
        # Stronger or fresher than the session is: the form is shown again.
        stronger = await browser.open_login(return_to=target, acr=Acr.MFA.value)
        assert stronger.status_code == 200 and 'name="password"' in stronger.text
        clock.advance(timedelta(minutes=10))
        fresher = await browser.open_login(return_to=target, max_age="60")
        assert fresher.status_code == 200


async def test_logout_needs_csrf_and_ends_the_session(
    app: FastAPI, platform: Platform, people: dict[str, Person]
) -> None:
    async with Browser(app) as browser:
        await browser.login("casey", people["casey"].password)
        forged = await browser.http.post("/logout", data={"csrf_token": "forged"})
        assert forged.status_code == 403  # logout CSRF is refused
        assert (await browser.http.get("/account")).status_code == 200
        out = await browser.http.post("/logout", data={"csrf_token": browser.token})
        assert out.status_code == 303 and out.headers["location"] == "/login"
        assert browser.session_cookie is None
        assert (await browser.http.get("/account")).status_code == 303
    (session,) = await _sessions(platform)
    assert session.ended_at is not None
    assert len(await _events(platform, EventName.LOGIN_ENDED)) == 1


async def test_a_new_login_ends_the_previous_session(
    app: FastAPI, platform: Platform, people: dict[str, Person]
) -> None:
    # Session fixation and shared browsers: signing in again never keeps the old session.
    async with Browser(app) as browser:
        await browser.login("casey", people["casey"].password)
        first = browser.session_cookie
        await browser.login("casey", people["casey"].password)
        assert browser.session_cookie not in (None, first)
    sessions = await _sessions(platform)
    assert sorted(s.ended_at is None for s in sessions) == [False, True]


async def test_https_deployment_sets_secure_cookies(
    settings: Settings, platform: Platform, clock: FrozenClock, people: dict[str, Person]
) -> None:
    # Cookie theft over plain http, and cookie tossing from a sibling subdomain.
    https = settings.model_copy(update={"public_url": "https://fleet.example"})
    secure_app = build_app(
        https, platform=Platform.build(https, clock=clock, engine=platform.engine)
    )
    async with Browser(secure_app, base_url="https://testserver") as browser:
        page = await browser.open_login()
        csrf_cookie = page.headers["set-cookie"]
        assert csrf_cookie.startswith("__Host-fw_csrf=") and "Secure" in csrf_cookie
        response = await browser.login("casey", people["casey"].password)
    assert response.status_code == 303
    session_cookie = next(h for h in response.headers.get_list("set-cookie") if "fw_login" in h)
    assert "Secure" in session_cookie and "HttpOnly" in session_cookie


async def test_pages_carry_protective_headers(app: FastAPI) -> None:
    # Clickjacking, caching of pages with codes, referrer leaks and injected scripts.
    async with Browser(app) as browser:
        page = await browser.open_login(return_to="/oauth/authorize?a=1&b='2'")
        hostile = await browser.open_login(return_to='/oauth/x?"><script>alert(1)</script>')
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    # Autoescaping: a valid return_to is echoed into the form escaped, never raw.
    assert 'value="/oauth/authorize?a=1&amp;b=&#39;2&#39;"' in page.text
    assert "<script>alert(1)</script>" not in hostile.text


async def test_unexpected_form_fields_are_refused(
    app: FastAPI, platform: Platform, people: dict[str, Person]
) -> None:
    # Mass assignment: a field the form does not have (say, an acr or a role) is refused,
    # and the answer never echoes what was sent.
    async with Browser(app) as browser:
        response = await browser.login(
            "casey", people["casey"].password, amr="hwk", secret_probe="hunter2"
        )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert "hunter2" not in response.text and people["casey"].password not in response.text
    assert await _sessions(platform) == []


async def test_unknown_users_cost_the_same_argon2_work(
    app: FastAPI, platform: Platform, people: dict[str, Person], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Timing enumeration: an unknown or disabled account is still verified once, against
    # a dummy hash with the live parameters, never skipped.
    calls: list[str] = []
    real_verify = platform.passwords.verify

    def spy(password_hash: str, password: str) -> bool:
        calls.append(password_hash)
        return real_verify(password_hash, password)

    monkeypatch.setattr(platform.passwords, "verify", spy)
    async with Browser(app) as browser:
        await browser.login("casey", "wrong")
        await browser.login("nobody-here", "wrong")
    assert len(calls) == 2
    real, dummy = calls
    assert real != dummy
    assert dummy.startswith("$argon2id$") and dummy.split("$")[3] == real.split("$")[3]
