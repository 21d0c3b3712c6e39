"""Revocation (RFC 7009), introspection (RFC 7662) and the revocation service: revoking a
user, tenant or client stops every already-issued access token at once, durably."""

from __future__ import annotations

from datetime import timedelta

import pytest
from joserfc.jwk import ECKey

from fleetward.audit.recorder import Actor
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth.client_side import assertion_form
from fleetward.identity.oauth.policy import CLIENT_CREDENTIALS
from fleetward.identity.oauth.revocation import RevocationService, load_revocations
from fleetward.identity.sessions import COOKIE_NAME, LoginSessions
from fleetward.identity.tokens import InvalidToken
from fleetward.platform import Platform
from unit.identity.oauth.kit import (
    CONSOLE,
    MOBILE,
    READ,
    WORKLOAD,
    OAuthWorld,
    build_world,
    code_flow,
    login,
    refresh,
)

ADMIN = Actor.system("test-admin")


@pytest.fixture
async def world(platform: Platform) -> OAuthWorld:
    return await build_world(platform)


async def _workload_token(world: OAuthWorld) -> str:
    response = await world.token({"grant_type": CLIENT_CREDENTIALS, **world.auth(WORKLOAD)})
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def _post(
    world: OAuthWorld, path: str, data: dict[str, str], client: str = CONSOLE
) -> dict[str, object]:
    if client in world.keys:
        data = {
            **data,
            **assertion_form(
                world.keys[client], client, world.urls.token, now=world.platform.clock.now()
            ),
        }
    else:
        data = {**data, "client_id": client}
    response = await world.http.post(path, data=data)
    body: dict[str, object] = response.json()
    body["_status"] = response.status_code
    return body


async def _refused(world: OAuthWorld, token: str, surface: Surface) -> str:
    with pytest.raises(InvalidToken) as raised:
        await world.claims(token, surface)
    return str(raised.value.reason)


async def test_revoking_a_refresh_token_revokes_its_family(world: OAuthWorld) -> None:
    issued = await code_flow(world, "erin", CONSOLE, scope=READ)
    answer = await _post(
        world,
        "/oauth/revoke",
        {"token": issued["refresh_token"], "token_type_hint": "refresh_token"},
    )
    assert answer == {"_status": 200}
    assert await _refused(world, issued["access_token"], Surface.FLEET) == "revoked"
    assert (await refresh(world, CONSOLE, issued["refresh_token"])).json()[
        "error"
    ] == "invalid_grant"


async def test_revoking_an_access_token_revokes_only_that_token(world: OAuthWorld) -> None:
    first = await code_flow(world, "erin", CONSOLE, scope=READ)
    second = (await refresh(world, CONSOLE, first["refresh_token"])).json()
    answer = await _post(world, "/oauth/revoke", {"token": second["access_token"]})
    assert answer["_status"] == 200
    assert await _refused(world, second["access_token"], Surface.FLEET) == "revoked"
    await world.claims(first["access_token"], Surface.FLEET)  # its sibling still works
    assert (await refresh(world, CONSOLE, second["refresh_token"])).status_code == 200


async def test_public_client_revokes_its_own_refresh_token(world: OAuthWorld) -> None:
    key = ECKey.generate_key("P-256")
    issued = await code_flow(world, "alice", MOBILE, scope=READ, dpop_key=key)
    answer = await _post(world, "/oauth/revoke", {"token": issued["refresh_token"]}, client=MOBILE)
    assert answer["_status"] == 200
    assert (await refresh(world, MOBILE, issued["refresh_token"], dpop_key=key)).json()[
        "error"
    ] == "invalid_grant"


async def test_a_client_cannot_revoke_another_clients_token(world: OAuthWorld) -> None:
    issued = await code_flow(world, "erin", CONSOLE, scope=READ)
    answer = await _post(world, "/oauth/revoke", {"token": issued["refresh_token"]}, client=MOBILE)
    assert answer["_status"] == 400
    await world.claims(issued["access_token"], Surface.FLEET)
    assert (await refresh(world, CONSOLE, issued["refresh_token"])).status_code == 200


async def test_revoking_garbage_is_a_quiet_success(world: OAuthWorld) -> None:
    assert (await _post(world, "/oauth/revoke", {"token": "not-a-token"}))["_status"] == 200


async def test_introspection_describes_own_live_tokens_only(world: OAuthWorld) -> None:
    issued = await code_flow(world, "erin", CONSOLE, scope=READ)
    access = await _post(world, "/oauth/introspect", {"token": issued["access_token"]})
    assert access["active"] is True
    assert access["sub"] == world.users["erin"].id
    assert access["aud"] == Surface.FLEET.audience
    assert access["client_id"] == CONSOLE
    refresh_info = await _post(world, "/oauth/introspect", {"token": issued["refresh_token"]})
    assert refresh_info["active"] is True
    # Anything invalid is simply inactive, with nothing else said.
    for token in ("garbage", issued["access_token"][:-4] + "AAAA", ""):
        assert await _post(world, "/oauth/introspect", {"token": token}) == {
            "active": False,
            "_status": 200,
        }
    # Another client's token is not this client's business.
    workload = await _post(world, "/oauth/introspect", {"token": await _workload_token(world)})
    assert workload == {"active": False, "_status": 200}
    # After revocation: inactive.
    await _post(world, "/oauth/revoke", {"token": issued["refresh_token"]})
    assert (await _post(world, "/oauth/introspect", {"token": issued["access_token"]}))[
        "active"
    ] is False
    assert (await _post(world, "/oauth/introspect", {"token": issued["refresh_token"]}))[
        "active"
    ] is False


async def test_introspection_needs_a_confidential_client(world: OAuthWorld) -> None:
    issued = await code_flow(world, "erin", CONSOLE, scope=READ)
    # A public client (id only) and an anonymous caller learn nothing.
    public = await _post(
        world, "/oauth/introspect", {"token": issued["access_token"]}, client=MOBILE
    )
    assert (public["_status"], public["error"]) == (400, "invalid_client")
    anonymous = await world.http.post("/oauth/introspect", data={"token": issued["access_token"]})
    assert anonymous.json()["error"] == "invalid_client"
    assert "sub" not in anonymous.text


async def _revoke(world: OAuthWorld, kind: str, subject: str) -> None:
    async with world.platform.services() as (uow, ctx):
        service = RevocationService(ctx, world.platform.identity.revocations)
        method = getattr(service, f"revoke_{kind}")
        await method(subject, reason="test", actor=ADMIN)
        await uow.commit()


async def test_revoking_a_user_stops_their_tokens_sessions_and_refreshes(world: OAuthWorld) -> None:
    key = ECKey.generate_key("P-256")
    issued = await code_flow(world, "alice", MOBILE, scope=READ, dpop_key=key)
    cookie = await login(world, "alice")
    other = await code_flow(world, "erin", CONSOLE, scope=READ)
    await _revoke(world, "user", world.users["alice"].id)
    assert await _refused(world, issued["access_token"], Surface.MOBILE) == "revoked"
    assert (await refresh(world, MOBILE, issued["refresh_token"], dpop_key=key)).json()[
        "error"
    ] == "invalid_grant"
    async with world.platform.services() as (_uow, ctx):
        assert (
            await LoginSessions(ctx).current(cookie["Cookie"].removeprefix(f"{COOKIE_NAME}="))
            is None
        )
    await world.claims(other["access_token"], Surface.FLEET)  # nobody else is affected


async def test_revoking_a_tenant_stops_people_and_workloads_in_it(world: OAuthWorld) -> None:
    person = await code_flow(world, "erin", CONSOLE, scope=READ)
    machine = await _workload_token(world)
    consumer = await code_flow(
        world, "alice", MOBILE, scope=READ, dpop_key=ECKey.generate_key("P-256")
    )
    await _revoke(world, "tenant", world.tenants["fleet"].id)
    assert await _refused(world, person["access_token"], Surface.FLEET) == "revoked"
    assert await _refused(world, machine, Surface.FLEET) == "revoked"
    await world.claims(consumer["access_token"], Surface.MOBILE)


async def test_revoking_a_client_stops_its_tokens_only_until_it_gets_new_ones(
    world: OAuthWorld,
) -> None:
    machine = await _workload_token(world)
    await _revoke(world, "client", WORKLOAD)
    assert await _refused(world, machine, Surface.FLEET) == "revoked"
    # Revocation is of issued tokens: a token minted after the epoch second is valid.
    clock = world.platform.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(seconds=1))
    await world.claims(await _workload_token(world), Surface.FLEET)


async def test_revocations_survive_a_restart(world: OAuthWorld) -> None:
    issued = await code_flow(world, "erin", CONSOLE, scope=READ)
    await _revoke(world, "user", world.users["erin"].id)
    platform = world.platform
    restarted = Platform.build(platform.settings, clock=platform.clock, engine=platform.engine)
    # A fresh process knows nothing until it loads the durable epochs.
    await restarted.identity.validator.validate(issued["access_token"], surface=Surface.FLEET)
    assert await load_revocations(restarted) == 1
    with pytest.raises(InvalidToken):
        await restarted.identity.validator.validate(issued["access_token"], surface=Surface.FLEET)
