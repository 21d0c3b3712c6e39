"""Turning a :class:`Principal` into a token response: Authlib's token generator.

Access tokens come from the platform's :class:`AccessTokenIssuer` (RFC 9068 ``at+jwt``, one
audience, ``cnf.jkt`` when the request carried a verified DPoP proof). Refresh tokens are 256
random bits, stored as SHA-256 only, in the grant's family; a public client's refresh token is
bound to its DPoP key. Before anything is signed, :func:`check_subject` refuses any subject
that is not what the client type may hold: a user id for people, the client itself for
workloads, and never a vehicle or device id.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidScopeError

from fleetward.audit.events import ActorType, EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.ids import is_id, new_id
from fleetward.identity.oauth import hashing
from fleetward.identity.oauth.adapters import OAuthClient
from fleetward.identity.oauth.exchange import AuditNote, Exchange
from fleetward.identity.oauth.policy import (
    MACHINE_SCOPES,
    REFRESH_LIFETIMES,
    REFRESH_TOKEN,
    is_non_subject_id,
)
from fleetward.identity.oauth.principal import Principal
from fleetward.identity.oauth_models import ClientType, RefreshToken

_MACHINE_SCOPE_VALUES = frozenset(p.value for p in MACHINE_SCOPES)


class SubjectRefused(InvalidGrantError):  # type: ignore[misc]  # authlib is untyped
    """The grant led to a subject this client may never hold a token for."""

    def __init__(self) -> None:
        super().__init__(description="No token can be issued for this subject.")


def check_subject(principal: Principal, client: OAuthClient) -> None:
    subject = principal.subject
    if is_non_subject_id(subject):
        # Vehicles and their devices authenticate with device certificates at the gateway;
        # an OAuth token for one would let a device credential act as an API caller.
        raise SubjectRefused()
    if principal.subject_type == "user":
        if not is_id(subject, "usr") or not client.policy.human:
            raise SubjectRefused()
    elif subject != client.id or not client.policy.machine:
        raise SubjectRefused()


def actor_for(principal: Principal, client: OAuthClient) -> Actor:
    if principal.subject_type == "user":
        return Actor.user(principal.subject, principal.tenant_id)
    kind = ActorType.PARTNER if client.row.client_type is ClientType.PARTNER else ActorType.WORKLOAD
    return Actor(kind, client.id, principal.tenant_id)


class TokenMinter:
    """Registered as Authlib's default token generator for one request's server."""

    def __init__(self, exchange: Exchange) -> None:
        self._exchange = exchange

    def __call__(
        self,
        grant_type: str,
        client: OAuthClient,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        if not isinstance(user, Principal):
            raise TypeError("every grant must hand the minter a Principal")
        principal = user
        check_subject(principal, client)
        requested = set((scope or "").split())
        scopes = [s for s in client.scopes if s in requested]
        if principal.subject_type == "workload":
            scopes = [s for s in scopes if s in _MACHINE_SCOPE_VALUES]
        if not scopes or any(s not in principal.granted_scopes for s in scopes):
            raise InvalidScopeError()
        exchange = self._exchange
        issued = exchange.tokens.issue(
            subject=principal.subject,
            client_id=client.id,
            tenant=principal.tenant_id,
            surface=principal.surface,
            scopes=scopes,
            auth_time=principal.auth_time,
            acr=principal.acr,
            amr=principal.amr,
            token_family=principal.family_id,
            subject_type=principal.subject_type,
            cnf_jkt=exchange.dpop_jkt,
        )
        token: dict[str, Any] = {
            "access_token": issued.token,
            "token_type": "DPoP" if exchange.dpop_jkt else "Bearer",
            "expires_in": issued.expires_in,
            "scope": issued.claims.scope,
        }
        refresh = None
        if include_refresh_token and client.check_grant_type(REFRESH_TOKEN):
            refresh = self._refresh_token(client, principal)
            if refresh is not None:
                token["refresh_token"] = refresh
        exchange.note(
            AuditNote(
                EventName.OAUTH_TOKEN_ISSUED,
                actor=actor_for(principal, client),
                target=Target("access_token", issued.claims.jti, principal.tenant_id),
                details={
                    "client_id": client.id,
                    "grant_type": grant_type,
                    "surface": principal.surface.value,
                    "family": principal.family_id,
                    "refresh_token": refresh is not None,
                    "dpop": exchange.dpop_jkt is not None,
                },
            )
        )
        return token

    def _refresh_token(self, client: OAuthClient, principal: Principal) -> str | None:
        if principal.subject_type != "user" or principal.family_id is None:
            return None
        now = self._exchange.now
        lifetime = REFRESH_LIFETIMES[principal.surface]
        expires_at = min(now + lifetime.idle, principal.auth_time + lifetime.absolute)
        if expires_at - now < timedelta(minutes=1):
            return None  # the grant is at its absolute end: the person logs in again
        raw = hashing.new_secret()
        self._exchange.session.add(
            RefreshToken(
                id=new_id("rft"),
                token_hash=hashing.digest(raw),
                family_id=principal.family_id,
                client_id=client.id,
                user_id=principal.subject,
                tenant_id=principal.tenant_id,
                scope=" ".join(principal.granted_scopes),
                surface=principal.surface.value,
                # RFC 9449 section 5: a public client's refresh token is bound to its DPoP key;
                # a confidential client's is already bound by client authentication.
                dpop_jkt=self._exchange.dpop_jkt if client.is_public else None,
                auth_time=principal.auth_time,
                acr=principal.acr,
                amr=list(principal.amr),
                created_at=now,
                expires_at=expires_at,
                used_at=None,
                revoked_at=None,
                revoked_reason=None,
            )
        )
        return raw
