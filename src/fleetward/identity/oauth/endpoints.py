"""The non-interactive endpoints: token, device authorization, revocation, introspection.

Each reads and checks the form first (size, media type, no repeated parameters), verifies a
DPoP proof if one is sent (token endpoint), pre-validates a presented access token
(revocation, introspection), then hands the request to Authlib (see :mod:`.running`).
Refusals at the token endpoint are audited with the client id and the OAuth error code (a
DPoP proof refused before Authlib runs too, with the proof's reason); the request's secrets
never are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from authlib.oauth2.rfc6749.errors import OAuth2Error
from starlette.requests import Request
from starlette.responses import Response

from fleetward.audit.events import Decision, EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import JsonValue
from fleetward.identity.oauth.clients import valid_client_id
from fleetward.identity.oauth.exchange import AuditNote, Exchange
from fleetward.identity.oauth.http import (
    BadForm,
    FleetwardRequest,
    OAuthResponse,
    json_error,
    read_form,
    repeated,
    to_starlette,
)
from fleetward.identity.oauth.inspection import validated_access_token
from fleetward.identity.oauth.running import (
    build_request,
    new_exchange,
    oauth_urls,
    run_authlib,
    settle,
)
from fleetward.identity.oauth.server import FleetwardAuthorizationServer
from fleetward.identity.tokens import InvalidDpopProof
from fleetward.platform import Platform

# Device-flow polling answers: the normal rhythm of a pending request, not refusals.
_NOT_REFUSALS = frozenset({"authorization_pending", "slow_down"})

Call = Callable[[FleetwardAuthorizationServer, FleetwardRequest], OAuthResponse]


async def _form_request(
    platform: Platform, request: Request
) -> tuple[FleetwardRequest | None, Response | None]:
    try:
        pairs = await read_form(request)
    except BadForm as refused:
        return None, json_error(
            "invalid_request", f"The request body is not accepted ({refused.reason})."
        )
    if repeated(pairs):
        return None, json_error("invalid_request", "A parameter is repeated.")
    try:
        return build_request(platform, request, pairs, in_body=True), None
    except OAuth2Error as error:
        return None, json_error(str(error.error), "The server is not configured for OAuth.")


async def _run(
    platform: Platform,
    exchange: Exchange,
    oauth_request: FleetwardRequest,
    call: Call,
    *,
    audit_refusal: bool = False,
) -> Response:
    async with platform.services() as (uow, ctx):
        response = await run_authlib(ctx, exchange, lambda server: call(server, oauth_request))
        error = response.error
        if audit_refusal and error is not None and error not in _NOT_REFUSALS:
            exchange.note(_refusal(oauth_request, error))
        await settle(platform, ctx, exchange)
        await uow.commit()
    return to_starlette(response)


def _refusal(oauth_request: FleetwardRequest, error: str, *, dpop: str | None = None) -> AuditNote:
    claimed: Any = oauth_request.payload.data.get("client_id")
    client_id = claimed if valid_client_id(claimed) else "unidentified"
    details: dict[str, JsonValue] = {
        "grant_type": str(oauth_request.payload.data.get("grant_type", ""))[:64]
    }
    if dpop is not None:
        details["dpop"] = dpop  # the proof's stable refusal reason
    return AuditNote(
        EventName.OAUTH_TOKEN_REFUSED,
        actor=Actor.system("oauth-token-endpoint"),
        target=Target("oauth_client", client_id),
        decision=Decision.DENIED,
        reason=error,
        details=details,
    )


async def _dpop_refused(
    platform: Platform, oauth_request: FleetwardRequest, description: str, reason: str
) -> Response:
    """A proof refused before Authlib runs is a token endpoint refusal too (a replayed proof
    is what a captured request looks like): audited, with the proof's stable reason only."""
    exchange = new_exchange(platform)
    exchange.note(_refusal(oauth_request, "invalid_dpop_proof", dpop=reason))
    async with platform.services() as (uow, ctx):
        await settle(platform, ctx, exchange)
        await uow.commit()
    return json_error("invalid_dpop_proof", description)


async def token(platform: Platform, request: Request) -> Response:
    oauth_request, refused = await _form_request(platform, request)
    if oauth_request is None:
        return refused or json_error("invalid_request", "The request is not accepted.")
    exchange = new_exchange(platform)
    proofs = request.headers.getlist("dpop")
    if len(proofs) > 1:
        return await _dpop_refused(
            platform, oauth_request, "Send at most one DPoP proof.", "several-proofs"
        )
    if proofs:
        try:
            exchange.dpop_jkt = await platform.identity.dpop.verify(
                proofs[0],
                method="POST",
                url=oauth_urls(platform).token,
                access_token=None,
                expected_jkt=None,
            )
        except InvalidDpopProof as invalid:
            return await _dpop_refused(
                platform, oauth_request, "The DPoP proof is not valid.", invalid.reason or "invalid"
            )
    return await _run(
        platform,
        exchange,
        oauth_request,
        lambda server, req: server.create_token_response(req),
        audit_refusal=True,
    )


async def device_authorization(platform: Platform, request: Request) -> Response:
    oauth_request, refused = await _form_request(platform, request)
    if oauth_request is None:
        return refused or json_error("invalid_request", "The request is not accepted.")
    return await _run(
        platform,
        new_exchange(platform),
        oauth_request,
        lambda server, req: server.create_endpoint_response("device_authorization", req),
    )


async def _token_endpoint(platform: Platform, request: Request, name: str) -> Response:
    oauth_request, refused = await _form_request(platform, request)
    if oauth_request is None:
        return refused or json_error("invalid_request", "The request is not accepted.")
    exchange = new_exchange(platform)
    exchange.presented_access = await validated_access_token(
        platform.identity.validator, oauth_request.form.get("token")
    )
    return await _run(
        platform,
        exchange,
        oauth_request,
        lambda server, req: server.create_endpoint_response(name, req),
    )


async def revoke(platform: Platform, request: Request) -> Response:
    return await _token_endpoint(platform, request, "revocation")


async def introspect(platform: Platform, request: Request) -> Response:
    return await _token_endpoint(platform, request, "introspection")
