"""Running Authlib inside our async request handling.

The shape of every flow: read what needs awaiting (body, login session, DPoP proof, access
token validation), build an :class:`Exchange`, call Authlib inside
``AsyncSession.run_sync`` (Authlib's hooks then use a plain ``Session`` over the async
driver, in the same transaction), then carry out what the run asked for (audit events,
revocations) and commit. OAuth errors are answers, not failures, so their side effects
(a revoked family, a burnt assertion, a slower device poll, the refusal's audit event) are
committed too; only an unexpected exception rolls the transaction back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session
from starlette.requests import Request

from fleetward.audit.recorder import Actor
from fleetward.identity.oauth.csrf import CSRF_KEY_PURPOSE, CsrfGuard
from fleetward.identity.oauth.exchange import Exchange
from fleetward.identity.oauth.http import FleetwardRequest, Pairs
from fleetward.identity.oauth.revocation import RevocationService
from fleetward.identity.oauth.server import FleetwardAuthorizationServer
from fleetward.identity.oauth.urls import OAuthUrls
from fleetward.platform import Platform
from fleetward.services import ServiceContext

T = TypeVar("T")

REVOKER = Actor.system("oauth")


def oauth_urls(platform: Platform) -> OAuthUrls:
    return OAuthUrls(platform.identity.issuer)


def csrf_guard(platform: Platform) -> CsrfGuard:
    return CsrfGuard(platform.identity.data_key.derive(CSRF_KEY_PURPOSE))


def new_exchange(platform: Platform) -> Exchange:
    return Exchange(
        urls=oauth_urls(platform), now=platform.clock.now(), tokens=platform.identity.tokens
    )


def build_request(
    platform: Platform, request: Request, pairs: Pairs, *, in_body: bool
) -> FleetwardRequest:
    """Raises ``OAuth2Error`` (insecure_transport) when the issuer is neither HTTPS nor
    loopback: Authlib refuses to run OAuth over anything else."""
    uri = oauth_urls(platform).at(request.url.path)
    return FleetwardRequest(request.method, uri, request.headers, pairs, in_body=in_body)


async def run_authlib(
    ctx: ServiceContext, exchange: Exchange, call: Callable[[FleetwardAuthorizationServer], T]
) -> T:
    def synchronous(session: Session) -> T:
        return call(FleetwardAuthorizationServer(exchange.bind(session)))

    return await ctx.session.run_sync(synchronous)


async def settle(platform: Platform, ctx: ServiceContext, exchange: Exchange) -> None:
    """Record the run's audit events and carry out the revocations it asked for."""
    for note in exchange.notes:
        platform.audit.record(
            ctx.session,
            note.name,
            actor=note.actor,
            target=note.target,
            decision=note.decision,
            reason=note.reason,
            details=note.details,
        )
    service = RevocationService(ctx, platform.identity.revocations)
    for revocation in exchange.revocations:
        await service.revoke(
            revocation.kind,
            revocation.subject,
            reason=revocation.reason,
            actor=REVOKER,
            until=revocation.until,
        )
