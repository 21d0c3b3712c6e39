"""Discovery metadata (RFC 8414) and the JWKS: complete, consistent, public parts only."""

from __future__ import annotations

import pytest
from authlib.oauth2 import rfc8414, rfc9207

from fleetward.catalog.inventory import inventory
from fleetward.platform import Platform
from unit.identity.oauth.kit import OAuthWorld, build_world

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k"}


@pytest.fixture
async def world(platform: Platform) -> OAuthWorld:
    return await build_world(platform)


async def test_metadata_is_valid_and_served_at_both_addresses(world: OAuthWorld) -> None:
    oauth = (await world.http.get("/.well-known/oauth-authorization-server")).json()
    openid = (await world.http.get("/.well-known/openid-configuration")).json()
    assert oauth == openid
    rfc8414.AuthorizationServerMetadata(oauth).validate(
        metadata_classes=[rfc9207.AuthorizationServerMetadata]
    )
    assert oauth["issuer"] == world.platform.identity.issuer
    # What is advertised is exactly what is enforced: S256 only, no implicit, no secrets.
    assert oauth["code_challenge_methods_supported"] == ["S256"]
    assert oauth["response_types_supported"] == ["code"]
    assert "password" not in oauth["grant_types_supported"]
    assert "implicit" not in oauth["grant_types_supported"]
    assert not {"client_secret_basic", "client_secret_post"} & set(
        oauth["token_endpoint_auth_methods_supported"]
    )
    assert "id_token_signing_alg_values_supported" not in oauth  # no ID tokens issued


async def test_every_advertised_endpoint_is_served_and_catalogued(world: OAuthWorld) -> None:
    metadata = (await world.http.get("/.well-known/oauth-authorization-server")).json()
    served = {item.path: item for item in inventory(world.app.router.routes)}
    for name in (
        "authorization_endpoint",
        "token_endpoint",
        "device_authorization_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
        "jwks_uri",
    ):
        path = metadata[name].removeprefix(metadata["issuer"])
        assert path in served, name
        assert served[path].entry.surface in ("oauth", "well-known")


async def test_jwks_holds_public_keys_only(world: OAuthWorld) -> None:
    jwks = (await world.http.get("/.well-known/jwks.json")).json()
    assert jwks["keys"], "at least the active key"
    for key in jwks["keys"]:
        assert not PRIVATE_MEMBERS & set(key)
        assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("EC", "P-256", "ES256", "sig")
    active = world.platform.identity.keyring.active.kid
    assert active in {key["kid"] for key in jwks["keys"]}
