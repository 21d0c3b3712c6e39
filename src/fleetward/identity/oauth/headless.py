"""A scripted browser and client for the authorization code flow (``fleetward token``).

It goes through the real endpoints exactly as a person and an app would: the authorization
request with PKCE, the login page (password, then a TOTP code when the account has one), the
consent form, then the token endpoint, with ``private_key_jwt`` for confidential clients and
a DPoP proof when the client needs one. Nothing here is trusted by the server: it is an
ordinary client of it. Secrets (password, TOTP seed, keys, tokens) are never logged.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any, Final
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pyotp
from joserfc.jwk import ECKey

from fleetward.core.clock import Clock, SystemClock
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth.client_side import Pkce, assertion_form
from fleetward.identity.tokens.dpop_client import make_dpop_proof

CALLBACK: Final = "http://127.0.0.1/callback"
_MAX_HOPS: Final = 12
_TOTP_STEP: Final = 30


def _dpop_key() -> ECKey:
    return ECKey.generate_key("P-256")


class HeadlessError(Exception):
    """The flow stopped; the message says where (never with a secret in it)."""


@dataclass(frozen=True, slots=True)
class Account:
    username: str
    password: str = field(repr=False)
    totp_secret: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ClientChoice:
    client_id: str
    scope: str | None = None
    surface: Surface | None = None
    # The confidential client's private key (private_key_jwt); None for public clients.
    key: ECKey | None = field(default=None, repr=False)
    # Always send DPoP; otherwise only when the server says the client needs it.
    force_dpop: bool = False
    redirect_uri: str = CALLBACK


@dataclass(frozen=True, slots=True)
class TokenResult:
    response: dict[str, Any] = field(repr=False)
    dpop_key: ECKey | None = field(default=None, repr=False)

    def as_json(self) -> dict[str, Any]:
        body = dict(self.response)
        if self.dpop_key is not None:
            # The caller needs the key to make proofs for every use of a DPoP-bound token.
            body["dpop_private_jwk"] = self.dpop_key.as_dict(private=True)
        return body


@dataclass
class _Form:
    action: str
    fields: list[tuple[str, str]] = field(default_factory=list)
    checkboxes: list[tuple[str, str]] = field(default_factory=list)


class _Forms(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append(_Form(found.get("action", "")))
        elif tag == "input" and self.forms and found.get("name"):
            kind = found.get("type", "text")
            if kind == "hidden":
                self.forms[-1].fields.append((found["name"], found.get("value", "")))
            elif kind == "checkbox" and "checked" in found:
                self.forms[-1].checkboxes.append((found["name"], found.get("value", "")))


def _form(page: httpx.Response, action: str) -> _Form:
    parser = _Forms()
    parser.feed(page.text)
    for form in parser.forms:
        if form.action == action:
            return form
    raise HeadlessError(f"expected a form posting to {action} (HTTP {page.status_code})")


class HeadlessFlow:
    def __init__(self, http: httpx.AsyncClient, base_url: str, clock: Clock | None = None) -> None:
        self._http = http
        self._base = base_url.rstrip("/")
        # Times in TOTP codes, assertions and proofs; a simulation passes the server's clock.
        self._clock: Clock = clock or SystemClock()

    def _url(self, absolute_or_path: str) -> str:
        """Our server's URL for a path, or for a URL the metadata published."""
        parts = urlsplit(absolute_or_path)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return self._base + path

    async def _get(self, url: str) -> httpx.Response:
        return await self._http.get(url)

    async def _post(self, url: str, data: list[tuple[str, str]]) -> httpx.Response:
        return await self._http.post(
            url,
            content=urlencode(data),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    async def _walk(self, response: httpx.Response, redirect_uri: str) -> httpx.Response:
        """Follow redirects within our server; stop at the client's redirect URI."""
        for _ in range(_MAX_HOPS):
            location = response.headers.get("location")
            if response.status_code not in (302, 303) or location is None:
                return response
            if location.startswith(redirect_uri):
                return response
            response = await self._get(self._url(urljoin(str(response.url), location)))
        raise HeadlessError("too many redirects")

    async def obtain(self, account: Account, client: ClientChoice) -> TokenResult:
        metadata = (await self._get(self._url("/.well-known/oauth-authorization-server"))).json()
        pkce = Pkce.generate()
        state = secrets.token_urlsafe(16)
        params = {
            "response_type": "code",
            "client_id": client.client_id,
            "redirect_uri": client.redirect_uri,
            "state": state,
            "code_challenge": pkce.challenge,
            "code_challenge_method": pkce.method,
        }
        if client.scope:
            params["scope"] = client.scope
        if client.surface is not None:
            params["resource"] = client.surface.audience
        authorize = self._url(metadata["authorization_endpoint"])
        page = await self._walk(
            await self._get(f"{authorize}?{urlencode(params)}"), client.redirect_uri
        )
        if urlsplit(str(page.url)).path == "/login":
            page = await self._walk(await self._log_in(page, account), client.redirect_uri)
        if page.status_code == 200:
            page = await self._consent(page, authorize)
        code = self._code(page, client.redirect_uri, state, metadata["issuer"])
        return await self._exchange(metadata, client, code, pkce)

    async def _log_in(self, page: httpx.Response, account: Account) -> httpx.Response:
        form = _form(page, "/login")
        data = [*form.fields, ("username", account.username), ("password", account.password)]
        answer = await self._post(self._url("/login"), data)
        location = answer.headers.get("location", "")
        if answer.status_code != 303:
            raise HeadlessError(f"the login page refused the password (HTTP {answer.status_code})")
        if urlsplit(location).path != "/login/mfa":
            return answer
        if not account.totp_secret:
            raise HeadlessError("the account needs a second factor and no TOTP secret was given")
        for attempt in range(2):
            mfa = await self._get(self._url("/login/mfa"))
            totp = _form(mfa, "/login/totp")
            code = pyotp.TOTP(account.totp_secret).at(self._clock.now())
            answer = await self._post(self._url("/login/totp"), [*totp.fields, ("code", code)])
            if answer.status_code == 303:
                return answer
            if attempt == 0:
                # A code is accepted once: if this window's code was just used, wait for the next.
                await asyncio.sleep(_TOTP_STEP - time.time() % _TOTP_STEP + 1)
        raise HeadlessError(f"the TOTP code was refused (HTTP {answer.status_code})")

    async def _consent(self, page: httpx.Response, authorize: str) -> httpx.Response:
        form = _form(page, urlsplit(authorize).path)
        data = [*form.fields, *form.checkboxes, ("decision", "approve")]
        return await self._post(authorize, data)

    @staticmethod
    def _code(page: httpx.Response, redirect_uri: str, state: str, issuer: str) -> str:
        location = page.headers.get("location", "")
        if page.status_code != 302 or not location.startswith(redirect_uri):
            raise HeadlessError(
                f"the authorization endpoint did not redirect back (HTTP {page.status_code})"
            )
        query = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
        if query.get("state") != state or query.get("iss") != issuer:
            raise HeadlessError("the authorization response is not for this request (state/iss)")
        if "error" in query:
            raise HeadlessError(f"authorization refused: {query['error']}")
        code = query.get("code")
        if not code:
            raise HeadlessError("the authorization response carries no code")
        return str(code)

    async def _exchange(
        self, metadata: dict[str, Any], client: ClientChoice, code: str, pkce: Pkce
    ) -> TokenResult:
        token_endpoint: str = metadata["token_endpoint"]
        data = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": client.redirect_uri,
            "client_id": client.client_id,
            "code_verifier": pkce.verifier,
        }
        dpop_key = _dpop_key() if client.force_dpop else None
        for _ in range(2):
            form = dict(data)
            if client.key is not None:
                # A fresh assertion per attempt: each jti is accepted once.
                form.update(
                    assertion_form(
                        client.key, client.client_id, token_endpoint, now=self._clock.now()
                    )
                )
            headers = {}
            if dpop_key is not None:
                headers["DPoP"] = make_dpop_proof(
                    dpop_key, "POST", token_endpoint, iat=self._clock.now()
                )
            answer = await self._http.post(self._url(token_endpoint), data=form, headers=headers)
            body: dict[str, Any] = answer.json()
            if answer.status_code == 200:
                return TokenResult(body, dpop_key)
            if body.get("error") == "invalid_dpop_proof" and dpop_key is None:
                dpop_key = _dpop_key()  # the client needs DPoP: prove a fresh key
                continue
            raise HeadlessError(
                f"the token endpoint refused: {body.get('error', answer.status_code)}"
            )
        raise HeadlessError("the token endpoint refused the DPoP proof")
