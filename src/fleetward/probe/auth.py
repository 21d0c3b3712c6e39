"""Access tokens for the probe's actors, through the deployment's real OAuth flows.

People sign in through the scripted browser (:mod:`fleetward.identity.oauth.headless`:
authorization code + PKCE, the login page with password and TOTP, consent, the token
endpoint with ``private_key_jwt`` or DPoP when the client needs them). Machine actors
(partners, workloads) use the client credentials grant with a ``private_key_jwt`` assertion.

Each actor signs in ONCE per run and its browser session is reused for every further surface
it needs: the platform throttles logins (per account, per network) and blocks a network that
fails on many accounts (password spraying), so a probe that logged in per case would be both
slow and, rightly, blocked. A token is cached per (actor, surface) for the whole run.

Secrets (passwords, TOTP seeds, keys, tokens) are never logged or put in an exception text.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import httpx
from joserfc.jwk import ECKey

from fleetward.core.clock import Clock, SystemClock
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth.client_side import assertion_form
from fleetward.identity.oauth.headless import (
    CALLBACK,
    Account,
    ClientChoice,
    HeadlessError,
    HeadlessFlow,
)
from fleetward.identity.tokens.dpop_client import make_dpop_proof
from fleetward.probe.manifest import Manifest, ManifestActor

# Credential kinds a case may ask for instead of its actor's ordinary token (Request.credential).
GARBAGE: Final = "garbage"
EXPIRED: Final = "expired"
OTHER_SURFACE: Final = "other-surface:"
# The actor's own token from a multi-factor sign-in long past the step-up window (the seed's).
STALE_AUTH: Final = "stale-auth"
# The actor's own token from a recent sign-in by password alone (the seed's): fresh enough for
# a step-up, but not strong enough.
PASSWORD_ONLY: Final = "password-only"  # noqa: S105 - a credential kind, not a secret
# How old (seconds) a sign-in may be for a step-up command: the platform's window is 300 s;
# the margin covers the request's own time and a clock step between the hosts.
STEP_UP_MAX_AGE: Final = 240.0

# Shaped like a signed JWT so that it reaches the signature check, but signed by nobody.
_GARBAGE_TOKEN: Final = ".".join(
    (
        "eyJhbGciOiJFUzI1NiIsInR5cCI6ImF0K2p3dCJ9",
        "eyJzdWIiOiJwcm9iZSIsImF1ZCI6InVybjpmbGVldHdhcmQ6YXBpOm1vYmlsZSJ9",
        "cHJvYmUtZ2FyYmFnZS1zaWduYXR1cmU",
    )
)


class TokenError(Exception):
    """A token could not be obtained; the message names the actor, never a secret."""


@dataclass(frozen=True, slots=True)
class PasswordOnly:
    """The seed's password-only tokens, per (actor, surface), and when their sign-in was.

    A refusal of such a token proves the sign-in's strength is checked only while the
    sign-in is young enough for a step-up: an older one is refused for its age alone."""

    tokens: Mapping[tuple[str, Surface], str] = field(default_factory=dict, repr=False)
    signed_in_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Credential:
    """An access token and, when it is DPoP-bound, the key every use must prove."""

    access_token: str = field(repr=False)
    dpop_key: ECKey | None = field(default=None, repr=False)

    def headers(self, method: str, url: str, clock: Clock) -> dict[str, str]:
        if self.dpop_key is None:
            return {"Authorization": f"Bearer {self.access_token}"}
        proof = make_dpop_proof(self.dpop_key, method, url, self.access_token, iat=clock.now())
        return {"Authorization": f"DPoP {self.access_token}", "DPoP": proof}


@dataclass(frozen=True, slots=True)
class Login:
    """How one spec actor obtains tokens (built from the world manifest)."""

    actor: str
    surface: Surface  # the actor's home surface: its ordinary token is for this one
    client_id: str
    # A person: username + password (+ TOTP seed). None: a machine client (client credentials).
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    totp_secret: str | None = field(default=None, repr=False)
    client_key: ECKey | None = field(default=None, repr=False)  # private_key_jwt clients
    scope: str | None = None  # None: every scope the client holds
    redirect_uri: str = CALLBACK
    # Further surfaces to obtain tokens for through the same sign-in (other-surface cases).
    extra_surfaces: tuple[Surface, ...] = ()

    @property
    def is_person(self) -> bool:
        return self.username is not None


Tokens = dict[tuple[str, Surface], Credential]
# Signs one actor in again (a new browser: a new multi-factor sign-in) and returns its tokens.
Renew = Callable[[str], Awaitable[Tokens]]


class TokenBook:
    """The run's tokens: per (actor, surface), plus the special credentials cases ask for.

    ``signed_in``: when (``monotonic`` seconds) each actor's sign-in started, so that a step-up
    command is sent only with a token from a sign-in younger than STEP_UP_MAX_AGE
    (:meth:`fresh` signs the actor in again through ``renew`` when it is older)."""

    def __init__(
        self,
        tokens: Mapping[tuple[str, Surface], Credential],
        home: Mapping[str, Surface],
        *,
        expired: Mapping[Surface, str] | None = None,
        stale: Mapping[tuple[str, Surface], str] | None = None,
        password_only: PasswordOnly | None = None,
        clock: Clock | None = None,
        signed_in: Mapping[str, float] | None = None,
        renew: Renew | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens = dict(tokens)
        self._home = dict(home)
        self._expired = dict(expired or {})
        self._stale = dict(stale or {})
        self._password_only = password_only or PasswordOnly()
        self.clock: Clock = clock or SystemClock()
        self._signed_in = dict(signed_in or {})
        self._renew = renew
        self._monotonic = monotonic
        self._renewing = asyncio.Lock()
        self.renewals = 0

    async def fresh(self, actor: str, max_age: float = STEP_UP_MAX_AGE) -> None:
        """Make sure the actor's tokens come from a sign-in at most ``max_age`` seconds old
        (signing it in again if not). Raises TokenError when it cannot."""
        async with self._renewing:
            started = self._signed_in.get(actor)
            if started is not None and self._monotonic() - started <= max_age:
                return
            if self._renew is None:
                raise TokenError(f"actor {actor!r}: no sign-in recent enough for a step-up")
            started = self._monotonic()
            self._tokens.update(await self._renew(actor))
            self._signed_in[actor] = started
            self.renewals += 1

    @property
    def actors(self) -> tuple[str, ...]:
        return tuple(self._home)

    def home_surface(self, actor: str) -> Surface | None:
        return self._home.get(actor)

    def token(self, actor: str, surface: Surface | None = None) -> Credential:
        chosen = surface or self._home.get(actor)
        found = None if chosen is None else self._tokens.get((actor, chosen))
        if found is None:
            raise TokenError(f"no token for actor {actor!r} on surface {chosen}")
        return found

    def resolve(self, actor: str | None, credential: str | None, path: str) -> Credential | None:
        """The credential a request carries; None: no Authorization header at all."""
        if credential is None:
            if actor is None:
                return None
            # The actor's token for the API it calls when it has one, else its home token
            # (a token for another audience: the server must refuse it).
            surface = _surface_of_path(path)
            if surface is not None and (actor, surface) in self._tokens:
                return self._tokens[(actor, surface)]
            return self.token(actor)
        if credential == GARBAGE:
            return Credential(_GARBAGE_TOKEN)
        if credential == EXPIRED:
            surface = _surface_of_path(path) or (self._home.get(actor) if actor else None)
            stale = self._expired.get(surface) if surface is not None else None
            if stale is None:
                raise TokenError(f"no expired token for surface {surface}")
            return Credential(stale)
        if credential == STALE_AUTH:
            surface = _surface_of_path(path)
            stale = (
                self._stale.get((actor, surface))
                if actor is not None and surface is not None
                else None
            )
            if stale is None:
                raise TokenError(f"no stale-auth token for actor {actor!r} on surface {surface}")
            return Credential(stale)
        if credential == PASSWORD_ONLY:
            return Credential(self._password_only_token(actor, path))
        if credential.startswith(OTHER_SURFACE):
            try:
                surface = Surface(credential.removeprefix(OTHER_SURFACE))
            except ValueError:
                raise TokenError(f"unknown surface in credential {credential!r}") from None
            if actor is not None and (actor, surface) in self._tokens:
                return self._tokens[(actor, surface)]
            for (other, other_surface), found in self._tokens.items():
                if other_surface is surface and self._home.get(other) is surface:
                    return found
            raise TokenError(f"no token for surface {surface}")
        raise TokenError(f"unknown credential kind {credential!r}")

    def _password_only_token(self, actor: str | None, path: str) -> str:
        surface = _surface_of_path(path)
        weak = self._password_only
        found = (
            weak.tokens.get((actor, surface)) if actor is not None and surface is not None else None
        )
        if found is None:
            raise TokenError(f"no password-only token for actor {actor!r} on surface {surface}")
        age = None if weak.signed_in_at is None else self.clock.now() - weak.signed_in_at
        if age is None or age > timedelta(seconds=STEP_UP_MAX_AGE):
            # Refused for its age alone, the case would pass on a platform that never reads
            # the sign-in's strength: not a proof, so not sent.
            raise TokenError(
                f"actor {actor!r}: the password-only sign-in is older than the step-up window "
                "(seed again just before the run)"
            )
        return found


def _surface_of_path(path: str) -> Surface | None:
    first = path.lstrip("/").split("/", 1)[0]
    try:
        return Surface(first)
    except ValueError:
        return None


def login_of(actor: ManifestActor, manifest: Manifest) -> Login:
    """How a manifest actor signs in: a person through the manifest's login client, a partner
    as its own client (client credentials, ``private_key_jwt``)."""
    if not actor.surfaces:
        raise TokenError(f"actor {actor.name!r} has no surface")
    surfaces = tuple(Surface(name) for name in actor.surfaces)
    if actor.kind == "partner":
        if actor.client is None:
            raise TokenError(f"partner actor {actor.name!r} has no client key")
        key = ECKey.import_key(dict(actor.client.private_jwk))
        return Login(
            actor=actor.name,
            surface=surfaces[0],
            client_id=actor.client.client_id,
            client_key=key,
            scope=" ".join(actor.client.scopes) or None,
        )
    return Login(
        actor=actor.name,
        surface=surfaces[0],
        client_id=manifest.login_client.client_id,
        username=actor.username,
        password=actor.password,
        totp_secret=actor.totp_secret,
        redirect_uri=manifest.login_client.redirect_uri,
        extra_surfaces=surfaces[1:],
    )


def expired_of(manifest: Manifest) -> dict[Surface, str]:
    found: dict[Surface, str] = {}
    for name, token in manifest.expired_tokens.items():
        try:
            found[Surface(name)] = token
        except ValueError:
            continue  # a surface this prober does not know: no case asks for it
    return found


def stale_of(manifest: Manifest) -> dict[tuple[str, Surface], str]:
    """The manifest's "no step-up" tokens, per (actor, surface)."""
    found: dict[tuple[str, Surface], str] = {}
    for actor, by_surface in manifest.stale_auth_tokens.items():
        for name, token in by_surface.items():
            try:
                found[(actor, Surface(name))] = token
            except ValueError:
                continue  # a surface this prober does not know: no case asks for it
    return found


def password_only_of(manifest: Manifest) -> PasswordOnly:
    """The manifest's "password only" tokens, per (actor, surface), and their sign-in time."""
    found: dict[tuple[str, Surface], str] = {}
    for actor, by_surface in manifest.password_only_tokens.items():
        for name, token in by_surface.items():
            try:
                found[(actor, Surface(name))] = token
            except ValueError:
                continue  # a surface this prober does not know: no case asks for it
    at = manifest.password_only_signed_in_at
    return PasswordOnly(found, None if at is None else datetime.fromisoformat(at))


async def _person_tokens(
    http: httpx.AsyncClient, target: str, login: Login, clock: Clock
) -> dict[tuple[str, Surface], Credential]:
    if login.password is None or login.username is None:
        raise TokenError(f"actor {login.actor!r} has no password")
    account = Account(login.username, login.password, login.totp_secret)
    flow = HeadlessFlow(http, target, clock)
    found: dict[tuple[str, Surface], Credential] = {}
    # The first sign-in leaves a session cookie in this client: later surfaces reuse it.
    for surface in (login.surface, *login.extra_surfaces):
        choice = ClientChoice(
            client_id=login.client_id,
            scope=login.scope,
            surface=surface,
            key=login.client_key,
            redirect_uri=login.redirect_uri,
        )
        try:
            result = await flow.obtain(account, choice)
        except HeadlessError as error:
            if surface is not login.surface:
                continue  # not every person can hold a token for every extra surface
            raise TokenError(f"actor {login.actor!r}: {error}") from None
        found[(login.actor, surface)] = Credential(
            str(result.response["access_token"]), result.dpop_key
        )
    return found


async def _machine_token(
    http: httpx.AsyncClient, target: str, login: Login, clock: Clock
) -> dict[tuple[str, Surface], Credential]:
    if login.client_key is None:
        raise TokenError(f"actor {login.actor!r} is a machine client without a key")
    base = target.rstrip("/")
    metadata = (await http.get(f"{base}/.well-known/oauth-authorization-server")).json()
    endpoint: str = metadata["token_endpoint"]
    form: dict[str, Any] = {
        "grant_type": "client_credentials",
        "client_id": login.client_id,
        "resource": login.surface.audience,
    }
    if login.scope:
        form["scope"] = login.scope
    form.update(assertion_form(login.client_key, login.client_id, endpoint, now=clock.now()))
    path = httpx.URL(endpoint).raw_path.decode("ascii")
    answer = await http.post(f"{base}{path}", data=form)
    body = (
        answer.json()
        if answer.headers.get("content-type", "").startswith("application/json")
        else {}
    )
    if answer.status_code != 200 or "access_token" not in body:
        reason = (
            body.get("error", answer.status_code) if isinstance(body, dict) else answer.status_code
        )
        raise TokenError(f"actor {login.actor!r}: the token endpoint refused: {reason}")
    return {(login.actor, login.surface): Credential(str(body["access_token"]))}


async def obtain_tokens(
    target: str,
    logins: Iterable[Login],
    *,
    expired: Mapping[Surface, str] | None = None,
    stale: Mapping[tuple[str, Surface], str] | None = None,
    password_only: PasswordOnly | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
    concurrency: int = 4,
    timeout: float = 30.0,  # noqa: ASYNC109 - the per-request HTTP timeout (httpx's)
) -> TokenBook:
    """Sign every actor in once (a few at a time) and return the run's token book.

    Raises TokenError naming the first actor that could not obtain its home-surface token.
    The book can sign a person in again later (a new browser, so a new multi-factor sign-in)
    when a step-up command needs a recent one (``TokenBook.fresh``).
    A network block (HTTP 429 or a refused login on an actor that worked before) is reported
    as such: the probe never retries a login in a loop, which would look like a guessing attack.
    """
    chosen_clock: Clock = clock or SystemClock()
    all_logins = list(logins)
    by_actor = {login.actor: login for login in all_logins}
    gate = asyncio.Semaphore(max(1, concurrency))
    signed_in: dict[str, float] = {}

    async def one(login: Login) -> dict[tuple[str, Surface], Credential]:
        # One client (one cookie jar) per actor: sessions never mix between actors.
        async with (
            gate,
            httpx.AsyncClient(transport=transport, timeout=timeout, follow_redirects=False) as http,
        ):
            signed_in[login.actor] = time.monotonic()  # the sign-in is at least this recent
            try:
                if login.is_person:
                    return await _person_tokens(http, target, login, chosen_clock)
                return await _machine_token(http, target, login, chosen_clock)
            except httpx.HTTPError as error:
                raise TokenError(
                    f"actor {login.actor!r}: {type(error).__name__} while signing in"
                ) from None

    async def renew(actor: str) -> Tokens:
        login = by_actor.get(actor)
        if login is None or not login.is_person:
            raise TokenError(f"actor {actor!r} cannot sign in again with a second factor")
        return await one(login)

    found: dict[tuple[str, Surface], Credential] = {}
    for tokens in await asyncio.gather(*(one(login) for login in all_logins)):
        found.update(tokens)
    return TokenBook(
        found,
        {login.actor: login.surface for login in all_logins},
        expired=expired,
        stale=stale,
        password_only=password_only,
        clock=clock,
        signed_in=signed_in,
        renew=renew,
    )
