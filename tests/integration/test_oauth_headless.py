"""The headless flow behind ``fleetward token``, through the real login pages, consent and
token endpoint (in process, SQLite and PostgreSQL), with the demo world and demo clients."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fleetward.app import build_app
from fleetward.core.surfaces import Surface
from fleetward.demo.clients import client_key_path, load_client_key, seed_demo_clients
from fleetward.demo.world import seed_demo_world
from fleetward.identity.oauth.headless import Account, ClientChoice, HeadlessError, HeadlessFlow
from fleetward.platform import Platform


@pytest.fixture
async def demo(platform: Platform) -> dict[str, Any]:
    async with platform.services() as (uow, ctx):
        seeded = await seed_demo_world(ctx, platform.passwords, data_key=platform.identity.data_key)
        await seed_demo_clients(ctx, platform.settings.data_dir)
        await uow.commit()
    logins: dict[str, Any] = dict(seeded.logins)
    return logins


def _account(logins: dict[str, Any], name: str) -> Account:
    return Account(name, logins[name]["password"], logins[name].get("totp_secret"))


async def _flow(platform: Platform, account: Account, client: ClientChoice) -> Any:
    app = build_app(platform.settings, platform=platform)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await HeadlessFlow(http, "http://testserver", platform.clock).obtain(account, client)


async def test_mobile_app_token_is_dpop_bound(platform: Platform, demo: dict[str, Any]) -> None:
    result = await _flow(platform, _account(demo, "alice"), ClientChoice("fleetward-mobile"))
    assert result.dpop_key is not None  # the server asked for DPoP; the flow proved a key
    assert result.as_json()["dpop_private_jwk"]["d"]
    claims = await platform.identity.validator.validate(
        result.response["access_token"], surface=Surface.MOBILE
    )
    assert claims.cnf_jkt == result.dpop_key.thumbprint()
    assert claims.client_id == "fleetward-mobile"


async def test_confidential_client_with_mfa_login(platform: Platform, demo: dict[str, Any]) -> None:
    key = load_client_key(client_key_path(platform.settings.data_dir, "fleet-console"))
    choice = ClientChoice("fleet-console", scope="vehicle:read_status fleet:manage_groups", key=key)
    result = await _flow(platform, _account(demo, "erin"), choice)
    claims = await platform.identity.validator.validate(
        result.response["access_token"], surface=Surface.FLEET
    )
    assert claims.scopes == {"vehicle:read_status", "fleet:manage_groups"}
    assert "otp" in claims.amr  # a fleet admin signed in with a second factor


async def test_cli_client_for_an_operator_surface(platform: Platform, demo: dict[str, Any]) -> None:
    choice = ClientChoice("fleetward-cli", scope="admin:manage_tenants", surface=Surface.ADMIN)
    result = await _flow(platform, _account(demo, "judy"), choice)
    claims = await platform.identity.validator.validate(
        result.response["access_token"], surface=Surface.ADMIN
    )
    assert claims.acr in ("urn:fleetward:acr:mfa", "urn:fleetward:acr:phr")


async def test_wrong_password_stops_the_flow(platform: Platform, demo: dict[str, Any]) -> None:
    account = Account("alice", "not-her-password", demo["alice"].get("totp_secret"))
    with pytest.raises(HeadlessError, match="refused the password"):
        await _flow(platform, account, ClientChoice("fleetward-mobile"))
