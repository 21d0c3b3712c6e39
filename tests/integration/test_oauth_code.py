"""Authorization code + PKCE through the real endpoints (SQLite and PostgreSQL).

Table-driven where the threat varies and the flow does not; each case says what it defends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from joserfc.jwk import ECKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr, Amr
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role
from fleetward.identity.oauth.client_side import Pkce
from fleetward.identity.oauth.consent import ConsentSubject, record_consent
from fleetward.identity.oauth_models import ConsentGrant
from fleetward.identity.tokens import InvalidToken
from fleetward.platform import Platform
from support.factories import FACTORY
from support.locks import settled
from unit.identity.oauth.kit import (
    CLI,
    CONSOLE,
    GROUPS,
    LOCATION,
    LOCK,
    MOBILE,
    PARTNER,
    READ,
    REDIRECT,
    OAuthWorld,
    authorization_params,
    authorize,
    build_world,
    code_flow,
    code_request,
    consent_scopes,
    decide,
    login,
    obtain_code,
    redirect_params,
)


@pytest.fixture
async def world(platform: Platform) -> OAuthWorld:
    return await build_world(platform)


async def test_confidential_client_gets_a_token_for_one_surface_and_tenant(
    world: OAuthWorld,
) -> None:
    body = await code_flow(world, "erin", CONSOLE, scope=f"{READ} {GROUPS}")
    assert body["token_type"] == "Bearer"
    assert "refresh_token" in body
    claims = await world.claims(body["access_token"], Surface.FLEET)
    assert claims.sub == world.users["erin"].id
    assert claims.sub_type == "user"
    assert claims.client_id == CONSOLE
    assert claims.tenant == world.tenants["fleet"].id
    assert claims.scopes == {READ, GROUPS}
    # Login facts travel into the token: acr/amr/auth_time of the LoginSession.
    assert claims.acr == Acr.MFA.value
    assert claims.amr == (Amr.PASSWORD.value, Amr.OTP.value)
    assert claims.auth_time == int(world.platform.clock.now().timestamp())
    # One audience per token: the same token is refused on every other surface.
    with pytest.raises(InvalidToken):
        await world.claims(body["access_token"], Surface.MOBILE)


async def test_scopes_are_requested_intersected_with_the_clients(world: OAuthWorld) -> None:
    # A scope the client was never registered for is silently dropped, never granted.
    body = await code_flow(world, "erin", CONSOLE, scope=f"{READ} admin:manage_tenants")
    assert body["scope"] == READ


async def test_mobile_client_needs_dpop_and_its_token_is_bound(world: OAuthWorld) -> None:
    pkce = Pkce.generate()
    code = await obtain_code(world, "alice", MOBILE, pkce, scope=READ)
    # Without a proof the public client's code is worthless (and not spent).
    refused = await world.token(code_request(MOBILE, code, pkce))
    assert (refused.status_code, refused.json()["error"]) == (400, "invalid_dpop_proof")
    key = ECKey.generate_key("P-256")
    answer = await world.token(code_request(MOBILE, code, pkce), {"DPoP": world.dpop(key)})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["token_type"] == "DPoP"
    claims = await world.claims(body["access_token"], Surface.MOBILE)
    assert claims.cnf_jkt == key.thumbprint()
    assert claims.tenant == world.tenants["consumer"].id


async def test_authorization_request_dpop_jkt_binds_the_code(world: OAuthWorld) -> None:
    bound, other = ECKey.generate_key("P-256"), ECKey.generate_key("P-256")
    pkce = Pkce.generate()
    code = await obtain_code(world, "alice", MOBILE, pkce, scope=READ, dpop_jkt=bound.thumbprint())
    # A thief with the code and verifier but another key gets nothing (RFC 9449 section 10).
    stolen = await world.token(code_request(MOBILE, code, pkce), {"DPoP": world.dpop(other)})
    assert stolen.json()["error"] == "invalid_dpop_proof"
    good = await world.token(code_request(MOBILE, code, pkce), {"DPoP": world.dpop(bound)})
    assert good.status_code == 200, good.text


AuthorizeCase = tuple[str, Callable[[Pkce], dict[str, str]], str]

AUTHORIZE_REFUSALS: list[AuthorizeCase] = [
    # PKCE is mandatory (OAuth 2.1): a code without a challenge could be redeemed by a thief.
    (
        "pkce-missing",
        lambda p: authorization_params(CONSOLE, None, scope=READ),
        "invalid_request",
    ),
    # "plain" reveals the verifier in the front channel: only S256.
    (
        "pkce-plain",
        lambda p: authorization_params(
            CONSOLE, None, scope=READ, code_challenge=p.verifier, code_challenge_method="plain"
        ),
        "invalid_request",
    ),
    # An absent method means plain (RFC 7636 section 4.3).
    (
        "pkce-method-absent",
        lambda p: authorization_params(CONSOLE, None, scope=READ, code_challenge=p.challenge),
        "invalid_request",
    ),
    # An S256 challenge is a base64url SHA-256 (43 characters). A trailing newline slipped
    # past the library's "$"-anchored pattern, and a 128-character one can never be met: both
    # led to a code no verifier can redeem (on PostgreSQL the longer one was a 500).
    (
        "pkce-challenge-trailing-newline",
        lambda p: authorization_params(
            CONSOLE,
            None,
            scope=READ,
            code_challenge=p.challenge + "\n",
            code_challenge_method="S256",
        ),
        "invalid_request",
    ),
    (
        "pkce-challenge-not-sha256",
        lambda p: authorization_params(
            CONSOLE, None, scope=READ, code_challenge="a" * 128, code_challenge_method="S256"
        ),
        "invalid_request",
    ),
    # Implicit grant: tokens in the front channel; not offered.
    (
        "implicit",
        lambda p: {**authorization_params(CONSOLE, p, scope=READ), "response_type": "token"},
        "unsupported_response_type",
    ),
    # A response type with characters an error description may not carry ('"', non-ASCII,
    # controls): Authlib quoted it there and refused its own error, which was a 500.
    (
        "response-type-non-ascii",
        lambda p: {**authorization_params(CONSOLE, p, scope=READ), "response_type": "\u00e9"},
        "unsupported_response_type",
    ),
    (
        "response-type-quote",
        lambda p: {**authorization_params(CONSOLE, p, scope=READ), "response_type": '"'},
        "unsupported_response_type",
    ),
    # A surface the client may not use.
    (
        "resource-not-allowed",
        lambda p: authorization_params(CONSOLE, p, scope=READ, resource=Surface.ADMIN),
        "invalid_target",
    ),
    # An audience we do not have.
    (
        "resource-unknown",
        lambda p: {
            **authorization_params(CONSOLE, p, scope=READ),
            "resource": "https://evil.example/",
        },
        "invalid_target",
    ),
    # A client with several surfaces must say which one: the server never guesses.
    (
        "resource-missing-multi-surface",
        lambda p: authorization_params(CLI, p, scope=READ),
        "invalid_target",
    ),
    # Scopes the client cannot hold at all.
    (
        "scope-none-usable",
        lambda p: authorization_params(CONSOLE, p, scope="admin:manage_tenants"),
        "invalid_scope",
    ),
    # dpop_jkt is a base64url thumbprint: other letters and digits (here Unicode ones that
    # str.isalnum() accepts) are a malformed request, not a binding to a key that cannot exist.
    (
        "dpop-jkt-not-base64url",
        lambda p: authorization_params(CONSOLE, p, scope=READ, dpop_jkt="\u00e9" * 42 + "\u0663"),
        "invalid_request",
    ),
    # Unknown authentication classes are refused, not ignored (no silent downgrade).
    (
        "acr-unknown",
        lambda p: authorization_params(CONSOLE, p, scope=READ, acr_values="urn:evil:acr"),
        "invalid_request",
    ),
]


@pytest.mark.parametrize(
    ("case", "make", "error"), AUTHORIZE_REFUSALS, ids=[c[0] for c in AUTHORIZE_REFUSALS]
)
async def test_authorization_request_refused_back_to_client(
    world: OAuthWorld, case: str, make: Callable[[Pkce], dict[str, str]], error: str
) -> None:
    cookie = await login(world, "erin")
    params = make(Pkce.generate())
    response = await authorize(world, cookie, params)
    result = redirect_params(response)
    assert result["error"] == error
    assert result["state"] == "state-123"
    assert result["iss"] == world.urls.issuer  # RFC 9207: mix-up defence on errors too
    assert "code" not in result


UNTRUSTED_REDIRECTS = [
    # Not registered at all: an open redirector would hand codes or errors to an attacker.
    ("https://evil.example/callback", "unregistered"),
    # Prefix match would let an attacker append a path they control.
    (REDIRECT + "/../evil", "path-suffix"),
    # Port and query variations are different URIs: exact match only.
    ("http://127.0.0.1:8080/callback", "other-port"),
    (REDIRECT + "?next=https://evil.example", "extra-query"),
    ("HTTP://127.0.0.1/callback", "case-variant"),
    ("", "empty"),
]


@pytest.mark.parametrize(
    ("redirect_uri", "why"), UNTRUSTED_REDIRECTS, ids=[c[1] for c in UNTRUSTED_REDIRECTS]
)
async def test_untrusted_redirect_uri_gets_a_page_never_a_redirect(
    world: OAuthWorld, redirect_uri: str, why: str
) -> None:
    cookie = await login(world, "erin")
    params = authorization_params(CONSOLE, Pkce.generate(), scope=READ, redirect_uri=redirect_uri)
    response = await authorize(world, cookie, params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "evil" not in response.text  # the rejected URI is not echoed
    assert response.headers["x-frame-options"] == "DENY"


async def test_unknown_client_gets_a_page(world: OAuthWorld) -> None:
    cookie = await login(world, "erin")
    response = await authorize(
        world, cookie, authorization_params("no-such-client", Pkce.generate(), scope=READ)
    )
    assert response.status_code == 400
    assert "location" not in response.headers


def _without_assertion(data: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in data.items() if not k.startswith("client_assertion")}


TokenCase = tuple[str, Callable[[dict[str, str], Pkce], dict[str, str]], str]

TOKEN_REFUSALS: list[TokenCase] = [
    # A stolen code without the verifier is useless.
    (
        "verifier-missing",
        lambda d, p: {k: v for k, v in d.items() if k != "code_verifier"},
        "invalid_request",
    ),
    (
        "verifier-wrong",
        lambda d, p: {**d, "code_verifier": Pkce.generate().verifier},
        "invalid_grant",
    ),
    # The verifier itself is not the challenge (a front-channel value).
    ("verifier-is-challenge", lambda d, p: {**d, "code_verifier": p.challenge}, "invalid_grant"),
    # The code is bound to the redirect URI it was issued for.
    ("redirect-mismatch", lambda d, p: {**d, "redirect_uri": REDIRECT + "/other"}, "invalid_grant"),
    (
        "redirect-missing",
        lambda d, p: {k: v for k, v in d.items() if k != "redirect_uri"},
        "invalid_grant",
    ),
    # A code is bound to the client it was issued to: another (public) client gets nothing.
    (
        "other-client",
        lambda d, p: {**_without_assertion(d), "client_id": CLI},
        "invalid_grant",
    ),
    # RFC 7521 section 4.2: client_id and the assertion must name the same client.
    ("client-id-not-the-assertions", lambda d, p: {**d, "client_id": CLI}, "invalid_client"),
    # A confidential client's id alone authenticates nothing.
    (
        "client-id-only",
        lambda d, p: {k: v for k, v in d.items() if not k.startswith("client_assertion")},
        "invalid_client",
    ),
    # The grant's surface cannot be switched at the token endpoint.
    (
        "resource-switched",
        lambda d, p: {**d, "resource": Surface.MOBILE.audience},
        "invalid_target",
    ),
    # A guessed code.
    ("code-guessed", lambda d, p: {**d, "code": "A" * 48}, "invalid_grant"),
    # Password grant: the client would see the password; not offered.
    (
        "password-grant",
        lambda d, p: {**d, "grant_type": "password", "username": "erin", "password": "x"},
        "unsupported_grant_type",
    ),
]


@pytest.mark.parametrize(
    ("case", "mutate", "error"), TOKEN_REFUSALS, ids=[c[0] for c in TOKEN_REFUSALS]
)
async def test_code_exchange_refused(
    world: OAuthWorld,
    case: str,
    mutate: Callable[[dict[str, str], Pkce], dict[str, str]],
    error: str,
) -> None:
    pkce = Pkce.generate()
    code = await obtain_code(world, "erin", CONSOLE, pkce, scope=READ)
    data = {**code_request(CONSOLE, code, pkce), **world.auth(CONSOLE)}
    response = await world.token(mutate(data, pkce))
    assert response.status_code in (400, 401), response.text
    assert response.json()["error"] == error
    assert "access_token" not in response.json()


async def test_code_reuse_fails_and_revokes_what_the_first_use_issued(world: OAuthWorld) -> None:
    pkce = Pkce.generate()
    code = await obtain_code(world, "erin", CONSOLE, pkce, scope=READ)
    first = await world.token({**code_request(CONSOLE, code, pkce), **world.auth(CONSOLE)})
    assert first.status_code == 200, first.text
    issued = first.json()
    await world.claims(issued["access_token"], Surface.FLEET)  # valid until the replay

    replay = await world.token({**code_request(CONSOLE, code, pkce), **world.auth(CONSOLE)})
    assert replay.json()["error"] == "invalid_grant"
    with pytest.raises(InvalidToken) as refused:
        await world.claims(issued["access_token"], Surface.FLEET)
    assert refused.value.reason == "revoked"
    again = await world.token(
        {
            "grant_type": "refresh_token",
            "refresh_token": issued["refresh_token"],
            **world.auth(CONSOLE),
        }
    )
    assert again.json()["error"] == "invalid_grant"


async def test_expired_code_is_refused(world: OAuthWorld) -> None:
    pkce = Pkce.generate()
    code = await obtain_code(world, "erin", CONSOLE, pkce, scope=READ)
    clock = world.platform.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(minutes=3))
    response = await world.token({**code_request(CONSOLE, code, pkce), **world.auth(CONSOLE)})
    assert response.json()["error"] == "invalid_grant"


async def test_consent_denial_returns_access_denied_and_issues_nothing(world: OAuthWorld) -> None:
    cookie = await login(world, "erin")
    page = await authorize(
        world, cookie, authorization_params(CONSOLE, Pkce.generate(), scope=READ)
    )
    assert consent_scopes(page) == [READ]
    result = redirect_params(await decide(world, cookie, page, "deny"))
    assert (result["error"], result["state"], result["iss"]) == (
        "access_denied",
        "state-123",
        world.urls.issuer,
    )
    assert "code" not in result
    # Nothing was remembered: the next request asks again.
    again = await authorize(
        world, cookie, authorization_params(CONSOLE, Pkce.generate(), scope=READ)
    )
    assert again.status_code == 200


async def test_consent_can_narrow_and_is_remembered(world: OAuthWorld) -> None:
    cookie = await login(world, "erin")
    pkce = Pkce.generate()
    page = await authorize(
        world, cookie, authorization_params(CONSOLE, pkce, scope=f"{READ} {LOCK}")
    )
    assert sorted(consent_scopes(page)) == sorted([READ, LOCK])
    code = redirect_params(await decide(world, cookie, page, scopes=[READ]))["code"]
    token = await world.token({**code_request(CONSOLE, code, pkce), **world.auth(CONSOLE)})
    assert token.json()["scope"] == READ
    # The consented scope is remembered; a wider request asks again.
    remembered = await authorize(
        world, cookie, authorization_params(CONSOLE, Pkce.generate(), scope=READ)
    )
    assert "code" in redirect_params(remembered)
    wider = await authorize(
        world, cookie, authorization_params(CONSOLE, Pkce.generate(), scope=f"{READ} {LOCK}")
    )
    assert wider.status_code == 200


async def test_a_scope_unticked_on_the_consent_screen_is_no_longer_remembered(
    world: OAuthWorld,
) -> None:
    # Withdrawing consent at the screen: erin once allowed READ and LOCK; when the client
    # asks again (with GROUPS, so the screen shows), she keeps only READ. The client must
    # not then get LOCK back silently on its next request.
    cookie = await login(world, "erin")
    both = f"{READ} {LOCK}"
    first = await authorize(
        world, cookie, authorization_params(CONSOLE, Pkce.generate(), scope=both)
    )
    assert "code" in redirect_params(await decide(world, cookie, first))
    wider = await authorize(
        world, cookie, authorization_params(CONSOLE, Pkce.generate(), scope=f"{both} {GROUPS}")
    )
    assert sorted(consent_scopes(wider)) == sorted([READ, LOCK, GROUPS])
    assert "code" in redirect_params(await decide(world, cookie, wider, scopes=[READ]))
    still_read = await authorize(
        world, cookie, authorization_params(CONSOLE, Pkce.generate(), scope=READ)
    )
    assert "code" in redirect_params(still_read)
    again = await authorize(
        world, cookie, authorization_params(CONSOLE, Pkce.generate(), scope=both)
    )
    assert again.status_code == 200, again.headers.get("location")
    assert sorted(consent_scopes(again)) == sorted([READ, LOCK])


async def test_consent_is_remembered_per_surface_and_tenant(world: OAuthWorld) -> None:
    # The CLI serves several surfaces with the same scope names. Alice allowed it to read
    # her cars' status on the mobile surface; that is not consent to read the status of
    # the fleet she also works for: the fleet request shows the consent screen.
    async with world.platform.services() as (uow, ctx):
        alice = world.users["alice"]
        await Directory(ctx).grant_membership(
            alice, world.tenants["fleet"], Role.FLEET_OPERATOR, actor=FACTORY
        )
        await uow.commit()
    cookie = await login(world, "alice")
    mobile = authorization_params(CLI, Pkce.generate(), scope=READ, resource=Surface.MOBILE)
    first = await authorize(world, cookie, mobile)
    assert consent_scopes(first) == [READ]
    assert "code" in redirect_params(await decide(world, cookie, first))
    again = {**mobile, **authorization_params(CLI, Pkce.generate(), scope=READ)}
    assert "code" in redirect_params(await authorize(world, cookie, again))
    fleet = authorization_params(CLI, Pkce.generate(), scope=READ, resource=Surface.FLEET)
    other_surface = await authorize(world, cookie, fleet)
    assert other_surface.status_code == 200, other_surface.headers.get("location")
    assert consent_scopes(other_surface) == [READ]


async def test_consent_post_is_csrf_protected(world: OAuthWorld) -> None:
    erin = await login(world, "erin")
    page = await authorize(world, erin, authorization_params(CONSOLE, Pkce.generate(), scope=READ))
    # A forged token, a token from another browser session, and a token replayed for a
    # widened request are all refused without deciding anything.
    from unit.identity.oauth.kit import consent_fields

    fields = consent_fields(page)
    other_session = await login(world, "erin")
    widened = fields["request"].replace("scope=", f"scope={LOCK}+")
    attempts = [
        (erin, fields["request"], "1.forged"),
        (other_session, fields["request"], fields["csrf_token"]),
        (erin, widened, fields["csrf_token"]),
    ]
    for cookie, request_string, token in attempts:
        response = await world.http.post(
            "/oauth/authorize",
            data={
                "request": request_string,
                "csrf_token": token,
                "decision": "approve",
                "scope": READ,
            },
            headers=cookie,
        )
        assert response.status_code == 403, response.text
        assert "location" not in response.headers


async def test_a_forged_consent_decision_is_audited(world: OAuthWorld) -> None:
    # A consent decision the server refuses as forged is a security decision like a denied
    # consent: it leaves an oauth:consent:denied event (reason request-forgery), and nothing else.
    erin = await login(world, "erin")
    page = await authorize(world, erin, authorization_params(CONSOLE, Pkce.generate(), scope=READ))
    from unit.identity.oauth.kit import consent_fields

    request_string = consent_fields(page)["request"]
    data = {"request": request_string, "csrf_token": "1.forged", "decision": "approve"}
    response = await world.http.post("/oauth/authorize", data=data, headers=erin)
    assert response.status_code == 403, response.text
    async with world.platform.unit_of_work() as uow:
        events = list(
            await uow.session.scalars(
                select(AuditRecord).where(AuditRecord.name.like("oauth:consent:%"))
            )
        )
        consents = list(await uow.session.scalars(select(ConsentGrant)))
    refused = [(e.name, e.object_id, e.reason) for e in events]
    assert refused == [("oauth:consent:denied", CONSOLE, "request-forgery")]
    assert events[0].actor_id == world.users["erin"].id
    assert consents == []


LOGIN_REDIRECTS = [
    # No session at all.
    ("no-session", None, {}, None, None),
    # A password-only session is too weak for a client asking for MFA (step-up).
    ("acr-step-up", Acr.PASSWORD, {"acr_values": Acr.MFA.value}, Acr.MFA.value, None),
    # max_age: the session is older than the client allows.
    ("max-age", Acr.MFA, {"max_age": "60"}, None, "60"),
]


@pytest.mark.parametrize(
    ("case", "acr", "extra", "want_acr", "want_max_age"),
    LOGIN_REDIRECTS,
    ids=[c[0] for c in LOGIN_REDIRECTS],
)
async def test_reauthentication_goes_through_the_login_page(
    world: OAuthWorld,
    case: str,
    acr: Acr | None,
    extra: dict[str, str],
    want_acr: str | None,
    want_max_age: str | None,
) -> None:
    cookie = {} if acr is None else await login(world, "erin", acr=acr)
    clock = world.platform.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(minutes=5))
    response = await authorize(
        world, cookie, authorization_params(CONSOLE, Pkce.generate(), scope=READ, **extra)
    )
    assert response.status_code == 303
    target = urlsplit(response.headers["location"])
    assert target.path == "/login"
    query = {k: v[0] for k, v in parse_qs(target.query).items()}
    assert query["return_to"].startswith("/oauth/authorize?")
    assert "max_age" not in parse_qs(urlsplit(query["return_to"]).query)
    assert query.get("acr") == want_acr
    assert query.get("max_age") == want_max_age


async def test_operator_surface_needs_mfa_whatever_the_client_asks(world: OAuthWorld) -> None:
    cookie = await login(world, "judy", acr=Acr.PASSWORD, amr=(Amr.PASSWORD,))
    params = authorization_params(CLI, Pkce.generate(), scope=READ, resource=Surface.ADMIN)
    response = await authorize(world, cookie, params)
    assert response.status_code == 303
    assert parse_qs(urlsplit(response.headers["location"]).query)["acr"] == [Acr.MFA.value]


TENANT_REFUSALS = [
    # Member of two fleets: which one the token is for would be a guess.
    ("twofleets", CONSOLE, None),
    # A consumer has no fleet membership: no fleet token.
    ("alice", CONSOLE, None),
    # The partner surface is only for the partner client's own tenant.
    ("alice", PARTNER, Surface.PARTNER),
]


@pytest.mark.parametrize(
    ("user", "client", "surface"), TENANT_REFUSALS, ids=["ambiguous", "none", "partner-binding"]
)
async def test_no_single_fitting_tenant_is_access_denied(
    world: OAuthWorld, user: str, client: str, surface: Surface | None
) -> None:
    cookie = await login(world, user)
    params = authorization_params(client, Pkce.generate(), scope=READ, resource=surface)
    result = redirect_params(await authorize(world, cookie, params))
    assert result["error"] == "access_denied"


async def test_partner_client_token_carries_its_own_tenant(world: OAuthWorld) -> None:
    body = await code_flow(world, "pat", PARTNER, scope=READ)
    claims = await world.claims(body["access_token"], Surface.PARTNER)
    assert claims.tenant == world.tenants["partner"].id


async def test_cli_with_loopback_redirect_and_resource(world: OAuthWorld) -> None:
    body = await code_flow(world, "alice", CLI, scope=f"{READ} {LOCATION}", resource=Surface.MOBILE)
    claims = await world.claims(body["access_token"], Surface.MOBILE)
    assert claims.client_id == CLI
    assert claims.scopes == {READ, LOCATION}


async def test_concurrent_code_exchanges_have_one_winner(world: OAuthWorld) -> None:
    pkce = Pkce.generate()
    code = await obtain_code(world, "erin", CONSOLE, pkce, scope=READ)
    answers = await asyncio.gather(
        world.token({**code_request(CONSOLE, code, pkce), **world.auth(CONSOLE)}),
        world.token({**code_request(CONSOLE, code, pkce), **world.auth(CONSOLE)}),
    )
    assert sorted(a.status_code for a in answers) == [200, 400], [a.text for a in answers]


# PostgreSQL only: on SQLite (one writer) the second decision waits for the first's write
# lock and then reads what it wrote.
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_concurrent_consent_decisions_leave_one_remembered_consent(
    world: OAuthWorld,
) -> None:
    # Two consent decisions at once for one person, client, surface and tenant (two tabs; a
    # device approval and a browser consent): each ends the rows it can see and adds its own,
    # and neither sees the other's. Two active rows would break "the current consent is one
    # row that says exactly what was allowed", and the second answer would silently drop
    # what the first allowed.
    platform = world.platform
    alice = world.users["alice"]
    subject = ConsentSubject(alice.id, CLI, Surface.MOBILE, world.tenants["consumer"].id)
    now = platform.clock.now()

    def remember(scope: str) -> Callable[[Session], ConsentGrant]:
        return lambda session: record_consent(session, subject, scopes=[scope], now=now)

    async def decide_alone(scope: str) -> None:
        async with platform.services() as (uow, ctx):
            await ctx.session.run_sync(remember(scope))
            await uow.commit()

    await decide_alone(READ)  # an earlier consent, superseded by both decisions
    async with platform.services() as (first_uow, first):
        await first.session.run_sync(remember(LOCATION))
        await first.session.flush()
        second = asyncio.create_task(decide_alone(LOCK))
        await settled(platform, second)
        await first_uow.commit()
    await second
    async with platform.services() as (_uow, ctx):
        active = list(
            await ctx.session.scalars(
                select(ConsentGrant).where(
                    ConsentGrant.user_id == alice.id, ConsentGrant.revoked_at.is_(None)
                )
            )
        )
    assert len(active) == 1, [grant.scopes for grant in active]
    assert set(active[0].scopes) == {READ, LOCATION, LOCK}
