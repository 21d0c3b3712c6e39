"""Client registration refuses anything the client type could never use; nothing is stored.

Each case names what it protects. Runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from joserfc.jwk import ECKey, RSAKey

from fleetward.audit.recorder import Actor
from fleetward.authz.permissions import Permission
from fleetward.core.errors import FleetwardError
from fleetward.core.surfaces import Surface
from fleetward.identity.errors import DuplicateName
from fleetward.identity.models import TenantKind
from fleetward.identity.oauth.client_side import public_jwks_of
from fleetward.identity.oauth.clients import ClientRegistry, ClientSpec, load_client
from fleetward.identity.oauth.errors import InvalidClientRegistration
from fleetward.identity.oauth.policy import (
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    DEVICE_CODE,
    REFRESH_TOKEN,
)
from fleetward.identity.oauth_models import ClientType
from fleetward.services import ServiceContext
from support.factories import WorldFactory
from support.snapshot import snapshot

ACTOR = Actor.system("test")
KEY = ECKey.generate_key("P-256")
READ = Permission.VEHICLE_READ_STATUS

WEB = ClientSpec(
    "web-app",
    "Web",
    ClientType.CONFIDENTIAL_WEB,
    (Surface.FLEET,),
    (READ,),
    (AUTHORIZATION_CODE, REFRESH_TOKEN),
    redirect_uris=("https://web.example/cb",),
    jwks=public_jwks_of(KEY),
)
MOBILE = ClientSpec(
    "mobile-app",
    "Mobile",
    ClientType.PUBLIC_MOBILE,
    (Surface.MOBILE,),
    (READ,),
    (AUTHORIZATION_CODE, REFRESH_TOKEN),
    redirect_uris=("http://127.0.0.1/cb",),
)


def _private_jwks() -> dict[str, Any]:
    return {"keys": [KEY.as_dict(private=True)]}


def _rsa_jwks() -> dict[str, Any]:
    return {"keys": [RSAKey.generate_key(2048).as_dict(private=False)]}


CASES: list[tuple[str, ClientSpec, type[FleetwardError], str | None]] = [
    # Device and vehicle ids are never clients.
    ("device-id", replace(WEB, client_id="dev_abcdef"), InvalidClientRegistration, "client-id"),
    ("vehicle-id", replace(WEB, client_id="veh_abcdef"), InvalidClientRegistration, "client-id"),
    ("odd-characters", replace(WEB, client_id="Web App!"), InvalidClientRegistration, "client-id"),
    # Grant types the type forbids: implicit/password do not exist, public clients have no
    # client credentials, web clients no device flow.
    ("implicit", replace(WEB, grant_types=("implicit",)), InvalidClientRegistration, "grant-type"),
    ("password", replace(WEB, grant_types=("password",)), InvalidClientRegistration, "grant-type"),
    (
        "public-client-credentials",
        replace(MOBILE, grant_types=(CLIENT_CREDENTIALS,)),
        InvalidClientRegistration,
        "grant-type",
    ),
    (
        "web-device-code",
        replace(WEB, grant_types=(DEVICE_CODE,)),
        InvalidClientRegistration,
        "grant-type",
    ),
    # The mobile app holds vehicle scopes only; no administration from a phone.
    (
        "mobile-admin-scope",
        replace(MOBILE, scopes=(Permission.ADMIN_MANAGE_TENANTS,)),
        InvalidClientRegistration,
        "scope",
    ),
    # Redirect URIs: exact, absolute, HTTPS unless loopback; no wildcards or fragments.
    (
        "redirect-http",
        replace(WEB, redirect_uris=("http://web.example/cb",)),
        InvalidClientRegistration,
        "redirect-uri",
    ),
    (
        "redirect-wildcard",
        replace(WEB, redirect_uris=("https://*.example/cb",)),
        InvalidClientRegistration,
        "redirect-uri",
    ),
    (
        "redirect-fragment",
        replace(WEB, redirect_uris=("https://web.example/cb#x",)),
        InvalidClientRegistration,
        "redirect-uri",
    ),
    (
        "redirect-custom-scheme",
        replace(WEB, redirect_uris=("javascript:alert(1)",)),
        InvalidClientRegistration,
        "redirect-uri",
    ),
    (
        "redirect-localhost-name",
        replace(MOBILE, redirect_uris=("http://localhost/cb",)),
        InvalidClientRegistration,
        "redirect-uri",
    ),
    ("redirect-missing", replace(WEB, redirect_uris=()), InvalidClientRegistration, "redirect-uri"),
    # Not URLs at all: an unclosed IPv6 literal (the parser raised) and a port that is no port.
    (
        "redirect-bad-ipv6",
        replace(WEB, redirect_uris=("https://[::1/cb",)),
        InvalidClientRegistration,
        "redirect-uri",
    ),
    (
        "redirect-bad-port",
        replace(WEB, redirect_uris=("https://web.example:abc/cb",)),
        InvalidClientRegistration,
        "redirect-uri",
    ),
    # Longer than an authorization code can record: every sign-in would fail at the store.
    (
        "redirect-too-long",
        replace(WEB, redirect_uris=("https://web.example/" + "a" * 481,)),
        InvalidClientRegistration,
        "redirect-uri",
    ),
    # Keys: confidential clients need public ES256 keys; a leaked private key is refused.
    ("no-jwks", replace(WEB, jwks=None), InvalidClientRegistration, "jwks"),
    ("private-jwks", replace(WEB, jwks=_private_jwks()), InvalidClientRegistration, "jwks"),
    ("rsa-jwks", replace(WEB, jwks=_rsa_jwks()), InvalidClientRegistration, "jwks"),
    ("empty-jwks", replace(WEB, jwks={"keys": []}), InvalidClientRegistration, "jwks"),
    (
        "public-with-jwks",
        replace(MOBILE, jwks=public_jwks_of(KEY)),
        InvalidClientRegistration,
        "jwks",
    ),
    # Tenant binding: required for workloads and partners, refused for others.
    ("web-bound", replace(WEB, tenant_id="ten_x"), InvalidClientRegistration, "tenant"),
    ("no-surface", replace(WEB, surfaces=()), InvalidClientRegistration, "surface"),
    ("duplicate", WEB, DuplicateName, "client"),
]


@pytest.mark.parametrize(("case", "spec", "error", "reason"), CASES, ids=[c[0] for c in CASES])
async def test_registration_refused_and_store_unchanged(
    ctx: ServiceContext,
    case: str,
    spec: ClientSpec,
    error: type[FleetwardError],
    reason: str | None,
) -> None:
    registry = ClientRegistry(ctx)
    await registry.register(WEB, actor=ACTOR)
    before = await snapshot(ctx.session)
    with pytest.raises(error) as raised:
        await registry.register(spec, actor=ACTOR)
    assert raised.value.reason == reason
    assert await snapshot(ctx.session) == before


async def test_workload_needs_a_tenant_that_fits_its_surfaces(ctx: ServiceContext) -> None:
    world = WorldFactory(ctx)
    consumer = await world.tenant(TenantKind.CONSUMER)
    fleet = await world.tenant(TenantKind.FLEET)
    spec = ClientSpec(
        "workload-x",
        "W",
        ClientType.WORKLOAD,
        (Surface.FLEET,),
        (READ,),
        (CLIENT_CREDENTIALS,),
        jwks=public_jwks_of(KEY),
    )
    registry = ClientRegistry(ctx)
    with pytest.raises(InvalidClientRegistration) as unbound:
        await registry.register(spec, actor=ACTOR)
    assert unbound.value.reason == "tenant"
    with pytest.raises(InvalidClientRegistration) as wrong_kind:
        await registry.register(replace(spec, tenant_id=consumer.id), actor=ACTOR)
    assert wrong_kind.value.reason == "tenant-kind"
    # Never a command scope for a workload.
    with pytest.raises(InvalidClientRegistration) as command:
        await registry.register(
            replace(spec, tenant_id=fleet.id, scopes=(Permission.VEHICLE_UNLOCK,)), actor=ACTOR
        )
    assert command.value.reason == "scope"
    row = await registry.register(replace(spec, tenant_id=fleet.id), actor=ACTOR)
    assert row.tenant_id == fleet.id


async def test_mobile_clients_always_require_dpop(ctx: ServiceContext) -> None:
    row = await ClientRegistry(ctx).register(MOBILE, actor=ACTOR)
    assert row.require_dpop is True


async def test_disabled_clients_are_not_found(ctx: ServiceContext) -> None:
    row = await ClientRegistry(ctx).register(WEB, actor=ACTOR)
    assert await ctx.session.run_sync(lambda s: load_client(s, "web-app")) is not None
    row.disabled_at = ctx.clock.now()
    await ctx.session.flush()
    assert await ctx.session.run_sync(lambda s: load_client(s, "web-app")) is None
