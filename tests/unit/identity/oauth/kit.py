"""Test kit for the authorization server: a small world, clients, logins and flow helpers.

Everything goes through the real services and the real ASGI app: clients are registered by
the registry, logins are real LoginSessions (the login pages are tested by their own suite),
and tokens are obtained through the real endpoints. Imported as ``unit.identity.oauth.kit``.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
from fastapi import FastAPI
from joserfc.jwk import ECKey

from fleetward.app import build_app
from fleetward.authz.permissions import Permission
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr, Amr
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, Tenant, TenantKind, User
from fleetward.identity.oauth.client_side import (
    Pkce,
    assertion_form,
    client_assertion,
    public_jwks_of,
)
from fleetward.identity.oauth.clients import ClientRegistry, ClientSpec
from fleetward.identity.oauth.policy import (
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    DEVICE_CODE,
    REFRESH_TOKEN,
)
from fleetward.identity.oauth.urls import OAuthUrls
from fleetward.identity.oauth_models import ClientType
from fleetward.identity.sessions import COOKIE_NAME, LoginSessions
from fleetward.identity.tokens import AccessTokenClaims
from fleetward.identity.tokens.dpop_client import make_dpop_proof
from fleetward.platform import Platform
from support.factories import FACTORY, WorldFactory
from support.http import client_for

REDIRECT = "http://127.0.0.1/callback"
MOBILE = "test-mobile"
CLI = "test-cli"
CONSOLE = "test-console"
WORKLOAD = "test-workload"
PARTNER = "test-partner"

READ = Permission.VEHICLE_READ_STATUS.value
LOCATION = Permission.VEHICLE_READ_LOCATION.value
LOCK = Permission.VEHICLE_LOCK.value
GROUPS = Permission.FLEET_MANAGE_GROUPS.value


@dataclass
class OAuthWorld:
    platform: Platform
    app: FastAPI
    http: httpx.AsyncClient
    urls: OAuthUrls
    tenants: dict[str, Tenant] = field(default_factory=dict)
    users: dict[str, User] = field(default_factory=dict)
    keys: dict[str, ECKey] = field(default_factory=dict)

    def auth(self, client_id: str, *, audience: str | None = None) -> dict[str, str]:
        """private_key_jwt fields for a confidential client of this world."""
        return assertion_form(
            self.keys[client_id],
            client_id,
            audience or self.urls.token,
            now=self.platform.clock.now(),
        )

    def assertion(self, client_id: str, **kwargs: object) -> str:
        kwargs.setdefault("now", self.platform.clock.now())
        return client_assertion(
            self.keys[client_id],
            client_id,
            str(kwargs.pop("audience", self.urls.token)),
            **kwargs,  # type: ignore[arg-type]
        )

    def dpop(self, key: ECKey, url: str | None = None, method: str = "POST") -> str:
        return make_dpop_proof(key, method, url or self.urls.token, iat=self.platform.clock.now())

    async def token(
        self, data: dict[str, str], headers: dict[str, str] | None = None
    ) -> httpx.Response:
        return await self.http.post("/oauth/token", data=data, headers=headers or {})

    async def claims(self, access_token: str, surface: Surface) -> AccessTokenClaims:
        return await self.platform.identity.validator.validate(access_token, surface=surface)


async def build_world(platform: Platform) -> OAuthWorld:
    app = build_app(platform.settings, platform=platform)
    world = OAuthWorld(platform, app, client_for(app), OAuthUrls(platform.identity.issuer))
    async with platform.services() as (uow, ctx):
        factory = WorldFactory(ctx)
        directory = Directory(ctx)
        consumer = await factory.tenant(TenantKind.CONSUMER)
        fleet = await factory.tenant(TenantKind.FLEET)
        other_fleet = await factory.tenant(TenantKind.FLEET)
        operator = await factory.tenant(TenantKind.OPERATOR)
        partner = await factory.tenant(TenantKind.PARTNER)
        world.tenants = {
            "consumer": consumer,
            "fleet": fleet,
            "other_fleet": other_fleet,
            "operator": operator,
            "partner": partner,
        }
        world.users = {
            "alice": await factory.user(consumer, Role.CUSTOMER),
            "bob": await factory.user(consumer, Role.CUSTOMER),
            "erin": await factory.user(fleet, Role.FLEET_ADMIN),
            "judy": await factory.user(operator, Role.PLATFORM_ADMIN),
            "pat": await factory.user(partner, Role.PARTNER_ADMIN),
        }
        # Two fleet memberships: which fleet a fleet token would be for is ambiguous.
        twofleets = await factory.user(fleet, Role.FLEET_OPERATOR)
        await directory.grant_membership(twofleets, other_fleet, Role.FLEET_OPERATOR, actor=FACTORY)
        world.users["twofleets"] = twofleets

        registry = ClientRegistry(ctx)
        for client_id in (CONSOLE, WORKLOAD, PARTNER):
            world.keys[client_id] = ECKey.generate_key("P-256")
        specs = [
            ClientSpec(
                MOBILE,
                "Test mobile app",
                ClientType.PUBLIC_MOBILE,
                (Surface.MOBILE,),
                (
                    Permission.VEHICLE_READ_STATUS,
                    Permission.VEHICLE_READ_LOCATION,
                    Permission.VEHICLE_LOCK,
                ),
                (AUTHORIZATION_CODE, REFRESH_TOKEN),
                redirect_uris=(REDIRECT,),
            ),
            ClientSpec(
                CLI,
                "Test CLI",
                ClientType.FIRST_PARTY_CLI,
                (Surface.MOBILE, Surface.FLEET, Surface.SUPPORT, Surface.ADMIN),
                tuple(Permission),
                (AUTHORIZATION_CODE, REFRESH_TOKEN, DEVICE_CODE),
                redirect_uris=(REDIRECT,),
            ),
            ClientSpec(
                CONSOLE,
                "Test fleet console",
                ClientType.CONFIDENTIAL_WEB,
                (Surface.FLEET,),
                (
                    Permission.VEHICLE_READ_STATUS,
                    Permission.VEHICLE_LOCK,
                    Permission.FLEET_MANAGE_GROUPS,
                ),
                (AUTHORIZATION_CODE, REFRESH_TOKEN),
                redirect_uris=(REDIRECT,),
                jwks=public_jwks_of(world.keys[CONSOLE]),
            ),
            ClientSpec(
                WORKLOAD,
                "Test telemetry workload",
                ClientType.WORKLOAD,
                (Surface.FLEET,),
                (Permission.VEHICLE_READ_STATUS, Permission.VEHICLE_READ_LOCATION),
                (CLIENT_CREDENTIALS,),
                tenant_id=fleet.id,
                jwks=public_jwks_of(world.keys[WORKLOAD]),
            ),
            ClientSpec(
                PARTNER,
                "Test partner",
                ClientType.PARTNER,
                (Surface.PARTNER,),
                (Permission.VEHICLE_READ_STATUS,),
                (CLIENT_CREDENTIALS, AUTHORIZATION_CODE),
                redirect_uris=(REDIRECT,),
                tenant_id=partner.id,
                jwks=public_jwks_of(world.keys[PARTNER]),
            ),
        ]
        for spec in specs:
            await registry.register(spec, actor=FACTORY)
        await uow.commit()
    return world


async def login(
    world: OAuthWorld,
    username: str,
    *,
    acr: Acr = Acr.MFA,
    amr: tuple[Amr, ...] = (Amr.PASSWORD, Amr.OTP),
) -> dict[str, str]:
    """A live login session for ``username``; returns the Cookie header to send."""
    async with world.platform.services() as (uow, ctx):
        cookie, _session = await LoginSessions(ctx).start(world.users[username], acr=acr, amr=amr)
        await uow.commit()
    return {"Cookie": f"{COOKIE_NAME}={cookie}"}


def authorization_params(
    client_id: str,
    pkce: Pkce | None,
    *,
    scope: str,
    resource: Surface | None = None,
    **extra: str,
) -> dict[str, str]:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "state-123",
    }
    if pkce is not None:
        params.update(code_challenge=pkce.challenge, code_challenge_method="S256")
    if resource is not None:
        params["resource"] = resource.audience
    params.update(extra)
    return params


async def authorize(
    world: OAuthWorld, cookie: dict[str, str], params: dict[str, str]
) -> httpx.Response:
    return await world.http.get(f"/oauth/authorize?{urlencode(params)}", headers=cookie)


_HIDDEN = re.compile(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">')
_SCOPES = re.compile(r'<input type="checkbox" name="scope" value="([^"]*)" checked>')


def consent_fields(page: httpx.Response) -> dict[str, str]:
    assert page.status_code == 200, page.text
    return {name: html.unescape(value) for name, value in _HIDDEN.findall(page.text)}


def consent_scopes(page: httpx.Response) -> list[str]:
    return [html.unescape(v) for v in _SCOPES.findall(page.text)]


async def decide(
    world: OAuthWorld,
    cookie: dict[str, str],
    page: httpx.Response,
    decision: str = "approve",
    scopes: list[str] | None = None,
) -> httpx.Response:
    fields = consent_fields(page)
    body = [("request", fields["request"]), ("csrf_token", fields["csrf_token"])]
    body += [("scope", s) for s in (consent_scopes(page) if scopes is None else scopes)]
    body.append(("decision", decision))
    return await world.http.post(
        "/oauth/authorize",
        content=urlencode(body),
        headers={**cookie, "Content-Type": "application/x-www-form-urlencoded"},
    )


def redirect_params(response: httpx.Response) -> dict[str, str]:
    """The query of a redirect back to the client, one value per name."""
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(REDIRECT + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def obtain_code(
    world: OAuthWorld,
    username: str,
    client_id: str,
    pkce: Pkce,
    *,
    scope: str,
    resource: Surface | None = None,
    **extra: str,
) -> str:
    cookie = await login(world, username)
    params = authorization_params(client_id, pkce, scope=scope, resource=resource, **extra)
    page = await authorize(world, cookie, params)
    answer = await decide(world, cookie, page) if page.status_code == 200 else page
    result = redirect_params(answer)
    assert "code" in result, result
    return result["code"]


def code_request(client_id: str, code: str, pkce: Pkce | None) -> dict[str, str]:
    data = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": client_id,
    }
    if pkce is not None:
        data["code_verifier"] = pkce.verifier
    return data


async def code_flow(
    world: OAuthWorld,
    username: str,
    client_id: str,
    *,
    scope: str,
    resource: Surface | None = None,
    dpop_key: ECKey | None = None,
) -> dict[str, str]:
    """The whole authorization code + PKCE flow; returns the token response."""
    pkce = Pkce.generate()
    code = await obtain_code(world, username, client_id, pkce, scope=scope, resource=resource)
    data = code_request(client_id, code, pkce)
    if client_id in world.keys:
        data.update(world.auth(client_id))
    headers = {"DPoP": world.dpop(dpop_key)} if dpop_key is not None else {}
    response = await world.token(data, headers)
    assert response.status_code == 200, response.text
    body: dict[str, str] = response.json()
    return body


async def refresh(
    world: OAuthWorld, client_id: str, refresh_token: str, *, dpop_key: ECKey | None = None
) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": client_id}
    if client_id in world.keys:
        data.update(world.auth(client_id))
    headers = {"DPoP": world.dpop(dpop_key)} if dpop_key is not None else {}
    return await world.token(data, headers)
