"""The demo clients: seeded once, keys on disk for their owner only, JWKS public, usable."""

from __future__ import annotations

import stat

from sqlalchemy import select

from fleetward.app import build_app
from fleetward.core.surfaces import Surface
from fleetward.demo.clients import DEMO_CLIENTS, client_key_path, load_client_key, seed_demo_clients
from fleetward.demo.world import seed_demo_world
from fleetward.identity.directory import Directory
from fleetward.identity.oauth.client_side import assertion_form
from fleetward.identity.oauth.policy import CLIENT_CREDENTIALS
from fleetward.identity.oauth.urls import OAuthUrls
from fleetward.identity.oauth_models import Client, ClientType
from fleetward.platform import Platform
from support.http import client_for

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


async def _seed(platform: Platform) -> list[str]:
    async with platform.services() as (uow, ctx):
        await seed_demo_world(ctx, platform.passwords)
        changed = await seed_demo_clients(ctx, platform.settings.data_dir)
        await uow.commit()
    return changed


async def test_demo_clients_are_seeded_once_with_private_keys_on_disk(platform: Platform) -> None:
    data_dir = platform.settings.data_dir
    assert await _seed(platform) == [c.client_id for c in DEMO_CLIENTS]
    assert await _seed(platform) == []  # idempotent
    async with platform.services() as (_uow, ctx):
        rows = {c.id: c for c in await ctx.session.scalars(select(Client))}
        directory = Directory(ctx)
        insureco = await directory.tenant("insureco")
        acme = await directory.tenant("acme-logistics")
    assert set(rows) == {c.client_id for c in DEMO_CLIENTS}
    assert rows["insureco-partner"].tenant_id == insureco.id
    assert rows["telemetry-workload"].tenant_id == acme.id
    assert rows["fleetward-mobile"].require_dpop
    for row in rows.values():
        path = client_key_path(data_dir, row.id)
        if row.client_type in (ClientType.PUBLIC_MOBILE, ClientType.FIRST_PARTY_CLI):
            assert row.jwks is None and not path.exists()
            continue
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert b"DEMO" in path.read_bytes()
        assert row.jwks is not None
        (jwk,) = row.jwks["keys"]
        assert not PRIVATE_MEMBERS & set(jwk)
        assert jwk["kid"] == load_client_key(path).thumbprint()


async def test_a_lost_key_file_is_replaced_and_the_jwks_follows(platform: Platform) -> None:
    await _seed(platform)
    path = client_key_path(platform.settings.data_dir, "telemetry-workload")
    old = load_client_key(path).thumbprint()
    path.unlink()
    assert await _seed(platform) == ["telemetry-workload"]
    new = load_client_key(path)
    assert new.thumbprint() != old
    # The new key works at the real token endpoint; the client's token is its own.
    app = build_app(platform.settings, platform=platform)
    urls = OAuthUrls(platform.identity.issuer)
    form = {"grant_type": CLIENT_CREDENTIALS}
    form.update(assertion_form(new, "telemetry-workload", urls.token, now=platform.clock.now()))
    async with client_for(app) as http:
        response = await http.post("/oauth/token", data=form)
    assert response.status_code == 200, response.text
    claims = await platform.identity.validator.validate(
        response.json()["access_token"], surface=Surface.FLEET
    )
    assert (claims.sub, claims.sub_type) == ("telemetry-workload", "workload")
