"""Client authentication (private_key_jwt) and the client credentials grant.

Each refusal case names the attack it stands for. SQLite and PostgreSQL.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from sqlalchemy import select

from fleetward.audit.models import AuditRecord
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth.client_side import ASSERTION_TYPE, public_jwks_of
from fleetward.identity.oauth.policy import CLIENT_CREDENTIALS, WORKLOAD_ACR
from fleetward.identity.oauth_models import Client, ClientType
from fleetward.platform import Platform
from unit.identity.oauth.kit import (
    CLI,
    CONSOLE,
    LOCATION,
    LOCK,
    PARTNER,
    READ,
    WORKLOAD,
    OAuthWorld,
    build_world,
)


@pytest.fixture
async def world(platform: Platform) -> OAuthWorld:
    return await build_world(platform)


def _credentials(world: OAuthWorld, client_id: str, assertion: str, **extra: str) -> dict[str, str]:
    return {
        "grant_type": CLIENT_CREDENTIALS,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": assertion,
        **extra,
    }


def _signed(
    world: OAuthWorld,
    client_id: str,
    *,
    key: ECKey | None = None,
    claims: dict[str, object] | None = None,
    drop: tuple[str, ...] = (),
) -> str:
    now = int(world.platform.clock.now().timestamp())
    payload: dict[str, object] = {
        "iss": client_id,
        "sub": client_id,
        "aud": world.urls.token,
        "iat": now,
        "exp": now + 60,
        "jti": new_id("jti"),
    }
    payload.update(claims or {})
    for name in drop:
        payload.pop(name)
    signer = key or world.keys[client_id]
    return jwt.encode({"alg": "ES256"}, payload, signer, algorithms=["ES256"])


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


async def test_workload_token_is_its_own_and_read_only(world: OAuthWorld) -> None:
    data = _credentials(
        world, WORKLOAD, _signed(world, WORKLOAD), scope=f"{READ} {LOCATION} {LOCK}"
    )
    response = await world.token(data)
    assert response.status_code == 200, response.text
    body = response.json()
    assert "refresh_token" not in body
    claims = await world.claims(body["access_token"], Surface.FLEET)
    assert (claims.sub, claims.sub_type, claims.client_id) == (WORKLOAD, "workload", WORKLOAD)
    assert claims.tenant == world.tenants["fleet"].id
    # A command scope is never in a token without a person behind it.
    assert claims.scopes == {READ, LOCATION}
    assert claims.acr == WORKLOAD_ACR


async def test_assertion_audience_may_be_the_issuer(world: OAuthWorld) -> None:
    assertion = _signed(world, WORKLOAD, claims={"aud": world.urls.issuer})
    assert (await world.token(_credentials(world, WORKLOAD, assertion))).status_code == 200


async def test_partner_machine_token_is_bound_to_the_partner_tenant(world: OAuthWorld) -> None:
    response = await world.token(_credentials(world, PARTNER, _signed(world, PARTNER)))
    claims = await world.claims(response.json()["access_token"], Surface.PARTNER)
    assert claims.tenant == world.tenants["partner"].id
    assert claims.sub_type == "workload"


Forge = Callable[[OAuthWorld], dict[str, str]]


def _other_key(world: OAuthWorld) -> dict[str, str]:
    return _credentials(world, WORKLOAD, _signed(world, WORKLOAD, key=ECKey.generate_key("P-256")))


def _claims(**claims: object) -> Forge:
    return lambda world: _credentials(world, WORKLOAD, _signed(world, WORKLOAD, claims=claims))


def _unsigned(world: OAuthWorld) -> dict[str, str]:
    now = int(world.platform.clock.now().timestamp())
    body = {"iss": WORKLOAD, "sub": WORKLOAD, "aud": world.urls.token, "exp": now + 60, "jti": "x1"}
    return _credentials(world, WORKLOAD, f"{_b64({'alg': 'none'})}.{_b64(body)}.")


def _hmac_with_public_key(world: OAuthWorld) -> dict[str, str]:
    # Algorithm confusion: the public key's JSON used as an HMAC secret.
    secret = OctKey.import_key(json.dumps(public_jwks_of(world.keys[WORKLOAD])["keys"][0]).encode())
    now = int(world.platform.clock.now().timestamp())
    body = {"iss": WORKLOAD, "sub": WORKLOAD, "aud": world.urls.token, "exp": now + 60, "jti": "x2"}
    token = jwt.encode({"alg": "HS256"}, body, secret, algorithms=["HS256"])
    return _credentials(world, WORKLOAD, token)


def _nested_payload(world: OAuthWorld) -> dict[str, str]:
    # Well-formed JSON nested deeper than the parser recurses, before any signature check.
    payload = base64.urlsafe_b64encode(b"[" * 5000 + b"]" * 5000).decode().rstrip("=")
    return _credentials(world, WORKLOAD, f"{_b64({'alg': 'ES256'})}.{payload}.c2ln")


def _impersonation(world: OAuthWorld) -> dict[str, str]:
    # The workload signs an assertion claiming to be the console, with its own key.
    assertion = _signed(world, CONSOLE, key=world.keys[WORKLOAD])
    return _credentials(world, CONSOLE, assertion)


FORGERIES: list[tuple[str, Forge, str]] = [
    # Signed by a key that is not registered for the client.
    ("forged-signature", _other_key, "invalid_client"),
    # Meant for another server or endpoint.
    ("wrong-audience", _claims(aud="https://other-as.example/token"), "invalid_client"),
    # Long-lived assertions are credentials in all but name.
    (
        "exp-too-far",
        _claims(exp=int(datetime(2030, 1, 1, tzinfo=UTC).timestamp())),
        "invalid_client",
    ),
    ("expired", _claims(exp=1_700_000_000), "invalid_client"),
    # iss and sub must both be the client (RFC 7523 section 3).
    ("iss-not-sub", _claims(iss="someone-else"), "invalid_client"),
    # Without a jti, single use cannot be enforced.
    (
        "no-jti",
        lambda w: _credentials(w, WORKLOAD, _signed(w, WORKLOAD, drop=("jti",))),
        "invalid_client",
    ),
    # alg=none and HS256-with-the-public-key: only ES256 is ever verified.
    ("alg-none", _unsigned, "invalid_client"),
    ("alg-hs256-public-key", _hmac_with_public_key, "invalid_client"),
    # One client's key never authenticates another.
    ("impersonate-other-client", _impersonation, "invalid_client"),
    # A copied client id alone grants nothing.
    (
        "client-id-only",
        lambda w: {"grant_type": CLIENT_CREDENTIALS, "client_id": WORKLOAD},
        "invalid_client",
    ),
    # Garbage in the assertion.
    ("assertion-garbage", lambda w: _credentials(w, WORKLOAD, "a.b.c"), "invalid_client"),
    ("assertion-nested-payload", _nested_payload, "invalid_client"),
    # A public client has no credentials to use this grant with.
    (
        "public-client",
        lambda w: {"grant_type": CLIENT_CREDENTIALS, "client_id": CLI},
        "invalid_client",
    ),
    # A client acting for people never acts on its own behalf.
    (
        "human-client",
        lambda w: _credentials(w, CONSOLE, _signed(w, CONSOLE)),
        "unauthorized_client",
    ),
    # A surface the workload was not registered for.
    (
        "resource-not-allowed",
        lambda w: _credentials(w, WORKLOAD, _signed(w, WORKLOAD), resource=Surface.ADMIN.audience),
        "invalid_target",
    ),
    # Only command scopes requested: nothing it may hold.
    (
        "command-scope-only",
        lambda w: _credentials(w, WORKLOAD, _signed(w, WORKLOAD), scope=LOCK),
        "invalid_scope",
    ),
]


@pytest.mark.parametrize(("case", "forge", "error"), FORGERIES, ids=[c[0] for c in FORGERIES])
async def test_client_credentials_refused(
    world: OAuthWorld, case: str, forge: Forge, error: str
) -> None:
    response = await world.token(forge(world))
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == error
    assert "access_token" not in response.json()


async def test_replayed_assertion_is_refused(world: OAuthWorld) -> None:
    assertion = _signed(world, WORKLOAD)
    first = await world.token(_credentials(world, WORKLOAD, assertion))
    assert first.status_code == 200
    replay = await world.token(_credentials(world, WORKLOAD, assertion))
    assert replay.json()["error"] == "invalid_client"


async def test_assertion_used_at_a_failing_request_is_still_spent(world: OAuthWorld) -> None:
    assertion = _signed(world, WORKLOAD)
    failing = await world.token(_credentials(world, WORKLOAD, assertion, scope=LOCK))
    assert failing.json()["error"] == "invalid_scope"
    replay = await world.token(_credentials(world, WORKLOAD, assertion))
    assert replay.json()["error"] == "invalid_client"


async def test_a_device_shaped_client_never_gets_a_token(world: OAuthWorld) -> None:
    # Even a row slipped into the store behind the registry's back (a device id as client
    # id, of the one type that gets tokens of its own) is never a token subject.
    key = ECKey.generate_key("P-256")
    device_id = new_id("dev")
    async with world.platform.services() as (uow, ctx):
        ctx.session.add(
            Client(
                id=device_id,
                name="a TCU",
                client_type=ClientType.WORKLOAD,
                tenant_id=world.tenants["fleet"].id,
                redirect_uris=[],
                grant_types=[CLIENT_CREDENTIALS],
                scopes=[READ],
                surfaces=[Surface.FLEET.value],
                jwks=public_jwks_of(key),
                require_dpop=False,
                created_at=ctx.clock.now(),
                disabled_at=None,
            )
        )
        await uow.commit()
    now = int(world.platform.clock.now().timestamp())
    claims = {
        "iss": device_id,
        "sub": device_id,
        "aud": world.urls.token,
        "exp": now + 60,
        "jti": "d1",
    }
    assertion = jwt.encode({"alg": "ES256"}, claims, key, algorithms=["ES256"])
    response = await world.token(_credentials(world, device_id, assertion))
    assert response.json()["error"] == "invalid_client"
    assert not {t.value for t in ClientType} & {"device", "vehicle", "tcu"}


async def test_refused_token_requests_are_audited_without_secrets(world: OAuthWorld) -> None:
    assertion = _signed(world, WORKLOAD, key=ECKey.generate_key("P-256"))
    await world.token({**_credentials(world, WORKLOAD, assertion), "client_id": WORKLOAD})
    async with world.platform.unit_of_work() as uow:
        events = list(
            await uow.session.scalars(
                select(AuditRecord).where(AuditRecord.name == "oauth:token:refused")
            )
        )
    assert [(e.object_id, e.reason) for e in events] == [(WORKLOAD, "invalid_client")]
    assert assertion not in json.dumps(events[0].details)
