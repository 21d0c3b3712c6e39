"""The authorization server's routes (surfaces ``oauth`` and ``well-known``).

Thin: each route hands the Starlette request to a flow of :mod:`fleetward.identity.oauth`.
These routes are reached before any access token exists, so they are catalogued as public;
each authenticates what it needs itself (a login session, a client assertion, PKCE, DPoP).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.responses import Response

from fleetward.api.routing import CataloguedRoute
from fleetward.catalog.entry import PUBLIC, CallerType, CatalogEntry, DataClass, Impact, catalogued
from fleetward.identity.oauth import authorize, device_approval, endpoints
from fleetward.identity.oauth.metadata import public_jwks, server_metadata
from fleetward.identity.oauth.running import oauth_urls
from fleetward.identity.oauth.urls import (
    AUTHORIZE_PATH,
    DEVICE_AUTHORIZATION_PATH,
    DEVICE_PATH,
    INTROSPECT_PATH,
    JWKS_PATH,
    REVOKE_PATH,
    TOKEN_PATH,
)
from fleetward.platform import Platform

router = APIRouter(tags=["oauth"], route_class=CataloguedRoute)

OAUTH = "oauth"
WELL_KNOWN = "well-known"
OWNER = "identity-team"
_BROWSER = frozenset({CallerType.ANONYMOUS, CallerType.USER})
_CLIENTS = frozenset(
    {
        CallerType.ANONYMOUS,
        CallerType.USER,
        CallerType.WORKLOAD,
        CallerType.PARTNER,
        CallerType.TOOL,
    }
)
_SECURITY = frozenset({Impact.PRIVACY, Impact.SAFETY})


def _entry(
    surface: str, purpose: str, callers: frozenset[CallerType], rate: int, **kw: Any
) -> CatalogEntry:
    return CatalogEntry(
        surface=surface,
        owner=OWNER,
        purpose=purpose,
        callers=callers,
        permission=PUBLIC,
        expected_rate_per_minute=rate,
        **kw,
    )


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


@router.get(AUTHORIZE_PATH, include_in_schema=True)
@catalogued(
    _entry(
        OAUTH,
        "authorization endpoint: validates the request, sends to login, shows consent",
        _BROWSER,
        30,
        data_class=DataClass.CREDENTIAL,
        impact=_SECURITY,
    )
)
async def authorization_request(request: Request) -> Response:
    return await authorize.authorize_get(_platform(request), request)


@router.post(AUTHORIZE_PATH)
@catalogued(
    _entry(
        OAUTH,
        "consent decision (CSRF-protected): issues the code or access_denied",
        _BROWSER,
        30,
        data_class=DataClass.CREDENTIAL,
        impact=_SECURITY,
    )
)
async def authorization_decision(request: Request) -> Response:
    return await authorize.authorize_post(_platform(request), request)


@router.post(TOKEN_PATH)
@catalogued(
    _entry(
        OAUTH,
        "token endpoint: code+PKCE, refresh (rotated), client credentials, device code",
        _CLIENTS,
        60,
        data_class=DataClass.CREDENTIAL,
        impact=_SECURITY,
    )
)
async def token(request: Request) -> Response:
    return await endpoints.token(_platform(request), request)


@router.post(DEVICE_AUTHORIZATION_PATH)
@catalogued(
    _entry(
        OAUTH,
        "device authorization (RFC 8628): issues device and user codes to the first-party CLI",
        frozenset({CallerType.ANONYMOUS, CallerType.TOOL}),
        10,
        data_class=DataClass.CREDENTIAL,
        impact=_SECURITY,
    )
)
async def device_authorization(request: Request) -> Response:
    return await endpoints.device_authorization(_platform(request), request)


@router.get(DEVICE_PATH)
@catalogued(
    _entry(
        OAUTH,
        "device page: a logged-in person enters and reviews a user code",
        _BROWSER,
        10,
        data_class=DataClass.CREDENTIAL,
        impact=_SECURITY,
    )
)
async def device_page(request: Request) -> Response:
    return await device_approval.device_get(_platform(request), request)


@router.post(DEVICE_PATH)
@catalogued(
    _entry(
        OAUTH,
        "device decision (CSRF-protected): approves or denies a user code",
        _BROWSER,
        10,
        data_class=DataClass.CREDENTIAL,
        impact=_SECURITY,
    )
)
async def device_decision(request: Request) -> Response:
    return await device_approval.device_post(_platform(request), request)


@router.post(REVOKE_PATH)
@catalogued(
    _entry(
        OAUTH,
        "token revocation (RFC 7009): a refresh token revokes its family, an access token its jti",
        _CLIENTS,
        30,
        data_class=DataClass.CREDENTIAL,
        impact=_SECURITY,
    )
)
async def revoke(request: Request) -> Response:
    # Revocations are loaded first: a token revoked before a restart is not "active" here.
    await request.app.state.revocation_gate.ensure()
    return await endpoints.revoke(_platform(request), request)


@router.post(INTROSPECT_PATH)
@catalogued(
    _entry(
        OAUTH,
        "token introspection (RFC 7662) for confidential clients, about their own tokens",
        frozenset({CallerType.ANONYMOUS, CallerType.WORKLOAD, CallerType.PARTNER, CallerType.TOOL}),
        120,
        data_class=DataClass.CREDENTIAL,
        impact=_SECURITY,
    )
)
async def introspect(request: Request) -> Response:
    await request.app.state.revocation_gate.ensure()
    return await endpoints.introspect(_platform(request), request)


def _metadata(request: Request) -> JSONResponse:
    body = server_metadata(oauth_urls(_platform(request)))
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=300"})


@router.get("/.well-known/oauth-authorization-server")
@catalogued(
    _entry(
        WELL_KNOWN,
        "authorization server metadata (RFC 8414)",
        _CLIENTS,
        30,
        data_class=DataClass.PUBLIC,
    )
)
async def authorization_server_metadata(request: Request) -> JSONResponse:
    return _metadata(request)


@router.get("/.well-known/openid-configuration")
@catalogued(
    _entry(
        WELL_KNOWN,
        "the same metadata for clients that only look here (no ID tokens are issued)",
        _CLIENTS,
        30,
        data_class=DataClass.PUBLIC,
    )
)
async def openid_configuration(request: Request) -> JSONResponse:
    return _metadata(request)


@router.get(JWKS_PATH)
@catalogued(
    _entry(
        WELL_KNOWN,
        "public signing keys of access tokens (JWKS)",
        _CLIENTS,
        60,
        data_class=DataClass.PUBLIC,
    )
)
async def jwks(request: Request) -> JSONResponse:
    platform = _platform(request)
    body = public_jwks(platform.identity.keyring, platform.clock.now())
    # Short caching: a rotated key must reach verifiers well within a token lifetime.
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=60"})
