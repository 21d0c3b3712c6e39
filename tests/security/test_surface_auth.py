"""Token validation on every surface, through HTTP (the identity issue's attack table).

Every case runs against every surface's ``/me``. The JOSE-level forgeries (alg none, HS256
with the public key, embedded keys, ...) are tested on the validator in
tests/unit/identity/tokens; this table proves that every router uses that validator, binds the
audience to its own surface, refuses DPoP downgrades, and demands scope and step-up.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI
from joserfc.jwk import ECKey, OKPKey

from fleetward.api.auth import Caller, StepUp, authenticate
from fleetward.api.routing import CataloguedRoute
from fleetward.app import build_app
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, catalogued
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.runtime import IdentityRuntime
from fleetward.identity.tokens.dpop_client import (
    generate_dpop_key,
    jwk_thumbprint,
    make_dpop_proof,
)
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.store.migrate import upgrade
from support.http import client_for

OTHER = {s: next(o for o in Surface if o is not s) for s in Surface}
PUBLIC_URL = "http://testserver"
ME_URL = f"{PUBLIC_URL}/mobile/v1/me"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The URL clients are told to use (a DPoP proof's htu is compared with it): the test
    # client's own.
    return settings.model_copy(update={"public_url": PUBLIC_URL})


@pytest.fixture
async def platform_(settings: Settings, clock: FrozenClock) -> AsyncIterator[Platform]:
    platform = Platform.build(settings, clock=clock)
    await upgrade(platform.engine)
    yield platform
    await platform.close()


@pytest.fixture
def foreign(tmp_path: Path, clock: FrozenClock) -> IdentityRuntime:
    """Another deployment's keys: same issuer name, different signing key."""
    return IdentityRuntime.build(
        Settings(data_dir=tmp_path / "elsewhere", public_url=PUBLIC_URL), clock
    )


@pytest.fixture
def app(settings: Settings, platform_: Platform) -> FastAPI:
    app = build_app(settings, platform=platform_)
    router = APIRouter(prefix="/mobile/v1/test", route_class=CataloguedRoute)

    @router.post("/unlock")
    @catalogued(_test_entry("step-up check", Permission.VEHICLE_UNLOCK))
    async def unlock(
        caller: Annotated[Caller, Depends(authenticate(Surface.MOBILE, step_up=StepUp()))],
    ) -> dict[str, str]:
        return {"sub": caller.claims.sub}

    @router.get("/items/{item}")
    @catalogued(
        _test_entry("a DPoP-bound read with a path parameter", Permission.VEHICLE_READ_STATUS)
    )
    async def item(
        item: str, caller: Annotated[Caller, Depends(authenticate(Surface.MOBILE))]
    ) -> dict[str, str]:
        return {"item": item}

    app.include_router(router)
    return app


def _test_entry(purpose: str, permission: Permission) -> CatalogEntry:
    return CatalogEntry(
        surface=Surface.MOBILE,
        owner="test",
        purpose=purpose,
        callers=frozenset({CallerType.USER}),
        permission=permission,
        data_class=DataClass.VEHICLE_STATE,
    )


def mint(runtime: IdentityRuntime, clock: FrozenClock, surface: Surface, **changes: Any) -> str:
    kwargs: dict[str, Any] = {
        "subject": "usr_alice",
        "client_id": "cli_mobile",
        "tenant": "ten_consumer",
        "surface": surface,
        "scopes": ["vehicle:read_status", "vehicle:unlock"],
        "auth_time": clock.now(),
        "acr": Acr.MFA.value,
        "amr": ["pwd", "otp"],
        "token_family": "fam_1",
        "subject_type": "user",
    }
    kwargs.update(changes)
    return runtime.tokens.issue(**kwargs).token


@pytest.mark.parametrize("surface", list(Surface))
async def test_valid_token_is_accepted(
    app: FastAPI, platform_: Platform, clock: FrozenClock, surface: Surface
) -> None:
    token = mint(platform_.identity, clock, surface)
    async with client_for(app) as client:
        response = await client.get(
            f"/{surface.value}/v1/me", headers={"authorization": f"Bearer {token}"}
        )
    assert response.status_code == 200
    assert response.json()["subject"] == "usr_alice"
    assert response.json()["sender_constrained"] is False


class Ctx:
    def __init__(
        self, platform: Platform, foreign: IdentityRuntime, clock: FrozenClock, surface: Surface
    ) -> None:
        self.platform, self.foreign, self.clock, self.surface = platform, foreign, clock, surface

    def token(self, **changes: Any) -> str:
        return mint(self.platform.identity, self.clock, self.surface, **changes)


Build = Callable[[Ctx], dict[str, str]]


def _revoked(c: Ctx) -> dict[str, str]:
    token = c.token()
    c.platform.identity.revocations.revoke_user("usr_alice", c.clock.now())
    return {"authorization": f"Bearer {token}"}


def _expired(c: Ctx) -> dict[str, str]:
    token = c.token(lifetime=timedelta(minutes=1))
    c.clock.advance(timedelta(minutes=3))
    return {"authorization": f"Bearer {token}"}


def _bound_as_bearer(c: Ctx) -> dict[str, str]:
    key = generate_dpop_key()
    return {"authorization": f"Bearer {c.token(cnf_jkt=jwk_thumbprint(key))}"}


def _bound_without_proof(c: Ctx) -> dict[str, str]:
    key = generate_dpop_key()
    return {"authorization": f"DPoP {c.token(cnf_jkt=jwk_thumbprint(key))}"}


def _bound_with_other_key(c: Ctx) -> dict[str, str]:
    key, thief = generate_dpop_key(), generate_dpop_key()
    token = c.token(cnf_jkt=jwk_thumbprint(key))
    proof = make_dpop_proof(
        thief, "GET", f"http://testserver/{c.surface.value}/v1/me", token, iat=c.clock.now()
    )
    return {"authorization": f"DPoP {token}", "dpop": proof}


def _bound_proof_for_other_url(c: Ctx) -> dict[str, str]:
    key = generate_dpop_key()
    token = c.token(cnf_jkt=jwk_thumbprint(key))
    proof = make_dpop_proof(
        key, "GET", "http://testserver/admin/v1/other", token, iat=c.clock.now()
    )
    return {"authorization": f"DPoP {token}", "dpop": proof}


def _unbound_as_dpop(c: Ctx) -> dict[str, str]:
    return {"authorization": f"DPoP {c.token()}"}


CASES: list[tuple[str, Build, str]] = [
    # No credentials at all.
    ("missing", lambda c: {}, "missing-token"),
    # A scheme we do not speak, or two tokens in one header.
    ("basic-scheme", lambda c: {"authorization": "Basic YWxpY2U6cHc="}, "malformed-authorization"),
    (
        "two-tokens",
        lambda c: {"authorization": f"Bearer {c.token()} {c.token()}"},
        "malformed-authorization",
    ),
    # Oversized headers are refused before any parsing.
    ("oversized", lambda c: {"authorization": "Bearer " + "a" * 10_000}, "missing-token"),
    # Garbage in the token position.
    ("garbage", lambda c: {"authorization": "Bearer not.a.token"}, "malformed-header"),
    # A valid token for another surface: audiences never cross.
    (
        "other-surface",
        lambda c: {
            "authorization": "Bearer " + mint(c.platform.identity, c.clock, OTHER[c.surface])
        },
        "wrong-audience",
    ),
    # Another deployment's key, same claims: the signature decides.
    (
        "foreign-key",
        lambda c: {"authorization": "Bearer " + mint(c.foreign, c.clock, c.surface)},
        "unknown-key",
    ),
    # Revoked and expired tokens stop at once.
    ("revoked-user", _revoked, "revoked"),
    ("expired", _expired, "expired"),
    # DPoP: a bound token never degrades to Bearer, needs a proof, by the same key, for this URL.
    ("dpop-downgrade", _bound_as_bearer, "dpop-downgrade"),
    ("dpop-missing-proof", _bound_without_proof, "missing-dpop-proof"),
    ("dpop-thumbprint-mismatch", _bound_with_other_key, "dpop-key-mismatch"),
    ("dpop-wrong-url", _bound_proof_for_other_url, "dpop-wrong-url"),
    ("dpop-scheme-unbound-token", _unbound_as_dpop, "not-dpop-bound"),
]


@pytest.mark.parametrize("surface", list(Surface))
@pytest.mark.parametrize(("case", "build", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_attack_is_refused_on_every_surface(
    app: FastAPI,
    platform_: Platform,
    foreign: IdentityRuntime,
    clock: FrozenClock,
    surface: Surface,
    case: str,
    build: Build,
    reason: str,
) -> None:
    headers = build(Ctx(platform_, foreign, clock, surface))
    async with client_for(app) as client:
        response = await client.get(f"/{surface.value}/v1/me", headers=headers)
    assert response.status_code == 401, case
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "urn:fleetward:problem:authentication-required"
    assert body["reason"] == reason
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "usr_alice" not in response.text


def _bound(platform: Platform, clock: FrozenClock) -> tuple[ECKey | OKPKey, str]:
    """A DPoP key and a mobile token bound to it."""
    key = generate_dpop_key()
    return key, mint(platform.identity, clock, Surface.MOBILE, cnf_jkt=jwk_thumbprint(key))


async def test_valid_dpop_bound_token(
    app: FastAPI, platform_: Platform, clock: FrozenClock
) -> None:
    key, token = _bound(platform_, clock)
    url = ME_URL
    async with client_for(app) as client:
        first = await client.get(
            url,
            headers={
                "authorization": f"DPoP {token}",
                "dpop": make_dpop_proof(key, "GET", url, token, iat=clock.now()),
            },
        )
        proof = make_dpop_proof(key, "GET", url, token, iat=clock.now())
        second = await client.get(url, headers={"authorization": f"DPoP {token}", "dpop": proof})
        replay = await client.get(url, headers={"authorization": f"DPoP {token}", "dpop": proof})
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.json()["sender_constrained"] is True
    assert replay.status_code == 401  # a proof is single-use


async def test_more_than_one_dpop_header_is_refused(
    app: FastAPI, platform_: Platform, clock: FrozenClock
) -> None:
    # RFC 9449 section 4.3, check 1: one DPoP header field. With two, which proof was checked
    # would depend on the parser; the token endpoint already refuses them.
    key, token = _bound(platform_, clock)
    url = ME_URL
    proof = make_dpop_proof(key, "GET", url, token, iat=clock.now())
    other = make_dpop_proof(key, "GET", url, token, iat=clock.now())
    async with client_for(app) as client:
        response = await client.get(
            url, headers=[("authorization", f"DPoP {token}"), ("dpop", proof), ("dpop", other)]
        )
    assert response.status_code == 401
    assert response.json()["reason"] == "missing-dpop-proof"


@pytest.mark.parametrize(
    ("changes", "advance", "status", "reason"),
    [
        # Fresh MFA: allowed.
        ({}, timedelta(0), 200, None),
        # Password-only sign-in cannot unlock a car.
        ({"acr": Acr.PASSWORD.value, "amr": ["pwd"]}, timedelta(0), 401, "acr"),
        # An acr we do not know counts as none.
        ({"acr": "urn:evil:acr:max"}, timedelta(0), 401, "acr"),
        # MFA, but longer ago than the route allows.
        ({"auth_time": None}, timedelta(minutes=6), 401, "max-age"),
        # The token lacks the route's permission: 403 insufficient scope.
        ({"scopes": ["vehicle:read_status"]}, timedelta(0), 403, "scope"),
    ],
)
async def test_step_up_and_scope(
    app: FastAPI,
    platform_: Platform,
    clock: FrozenClock,
    changes: dict[str, Any],
    advance: timedelta,
    status: int,
    reason: str | None,
) -> None:
    if changes.get("auth_time", "") is None:
        changes = {"auth_time": clock.now() - advance}
    token = mint(platform_.identity, clock, Surface.MOBILE, **changes)
    async with client_for(app) as client:
        response = await client.post(
            "/mobile/v1/test/unlock", headers={"authorization": f"Bearer {token}"}
        )
    assert response.status_code == status
    if reason is None:
        return
    assert response.json()["reason"] == reason
    challenge = response.headers["www-authenticate"]
    if status == 401:
        assert 'error="insufficient_user_authentication"' in challenge
        assert 'acr_values="urn:fleetward:acr:mfa"' in challenge
        assert 'max_age="300"' in challenge
    else:
        assert 'error="insufficient_scope"' in challenge


async def test_a_dpop_proof_is_checked_against_the_configured_url_not_the_host_header(
    app: FastAPI, platform_: Platform, clock: FrozenClock
) -> None:
    # The Host header is the caller's to choose: a proof made for another host (a token and
    # proof mis-sent to another service, replayed here with that Host) does not match the
    # URL this deployment publishes.
    key, token = _bound(platform_, clock)
    elsewhere = "http://other.example/mobile/v1/me"
    proof = make_dpop_proof(key, "GET", elsewhere, token, iat=clock.now())
    async with client_for(app) as client:
        response = await client.get(
            "/mobile/v1/me",
            headers={"authorization": f"DPoP {token}", "dpop": proof, "host": "other.example"},
        )
    assert response.status_code == 401
    assert response.json()["reason"] == "dpop-wrong-url"


@pytest.mark.parametrize(
    ("proof_path", "request_path", "status"),
    [
        # An encoded "?" or "#" is part of the path, not its end: a proof for /items/a is
        # not a proof for /items/a%3Fb (the decoded path cut there matched it).
        ("/items/a", "/items/a%3Fb", 401),
        ("/items/a", "/items/a%23b", 401),
        # The same URL encoded alike, or with an unreserved character encoded, still matches.
        ("/items/a%3Fb", "/items/a%3Fb", 200),
        ("/items/a%20b", "/items/a%20b", 200),
        ("/items/a%2Db", "/items/a-b", 200),
    ],
)
async def test_a_dpop_proof_names_the_path_as_sent(
    app: FastAPI,
    platform_: Platform,
    clock: FrozenClock,
    proof_path: str,
    request_path: str,
    status: int,
) -> None:
    key, token = _bound(platform_, clock)
    base = f"{PUBLIC_URL}/mobile/v1/test"
    proof = make_dpop_proof(key, "GET", base + proof_path, token, iat=clock.now())
    async with client_for(app) as client:
        response = await client.get(
            base + request_path, headers={"authorization": f"DPoP {token}", "dpop": proof}
        )
    assert response.status_code == status, response.text
    if status == 401:
        assert response.json()["reason"] == "dpop-wrong-url"
