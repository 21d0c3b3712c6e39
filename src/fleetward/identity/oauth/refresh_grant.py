"""The refresh token grant (RFC 6749 section 6) with rotation and reuse detection.

Authlib authenticates the client, finds the token, checks it belongs to that client (another
client presenting it gets ``invalid_grant`` and nothing rotates) and that a narrower scope is
a subset (judged only after the token's state, so reuse is detected whatever scope is asked
for). Added here: every use rotates (the old token is spent by a conditional UPDATE, so
of two concurrent refreshes exactly one wins); presenting a spent token, or losing that race,
revokes the whole family; revoked and expired tokens are refused, and so is a request that
would mint no scope (before anything is spent); a public client's token
only works with a DPoP proof of the key it is bound to; and the person must still hold the
membership the grant was made in.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidScopeError
from authlib.oauth2.rfc6749.grants import RefreshTokenGrant
from sqlalchemy import select, update

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth import hashing
from fleetward.identity.oauth.adapters import RefreshRecord
from fleetward.identity.oauth.exchange import Exchange
from fleetward.identity.oauth.grant_checks import (
    person_principal,
    require_dpop_binding,
    reuse_detected,
)
from fleetward.identity.oauth.policy import AUTH_NONE, PRIVATE_KEY_JWT
from fleetward.identity.oauth.principal import Principal
from fleetward.identity.oauth.rows import changed_rows
from fleetward.identity.oauth.targets import check_same_surface
from fleetward.identity.oauth_models import RefreshToken


class RefreshGrant(RefreshTokenGrant):  # type: ignore[misc]  # authlib is untyped
    TOKEN_ENDPOINT_AUTH_METHODS = [PRIVATE_KEY_JWT, AUTH_NONE]
    INCLUDE_NEW_REFRESH_TOKEN = True

    def __init__(self, request: Any, server: Any) -> None:
        super().__init__(request, server)
        self.exchange: Exchange = server.exchange

    def authenticate_refresh_token(self, refresh_token: object) -> RefreshRecord | None:
        if not hashing.plausible(refresh_token):
            return None
        row = self.exchange.session.scalar(
            select(RefreshToken).where(
                RefreshToken.token_hash == hashing.digest(str(refresh_token))
            )
        )
        return None if row is None else RefreshRecord(row, self.exchange.now)

    def validate_token_request(self) -> None:
        # Authlib's own order (client, token of this client, scope), with the token's state
        # judged before the requested scope: a spent token presented with a wider scope is
        # still reuse and still revokes the family (otherwise invalid_scope would answer
        # first and a thief could probe with a stolen spent token without consequence).
        client = self._validate_request_client()
        self.request.client = client
        record: RefreshRecord = self._validate_request_token(client)
        row = record.row
        if row.revoked_at is not None:
            raise InvalidGrantError(description="The refresh token was revoked.")
        if row.used_at is not None:
            raise self._reused(row, "refresh-token-reused")
        if row.expires_at <= self.exchange.now:
            raise InvalidGrantError(description="The refresh token expired.")
        self._validate_token_scope(record)
        # What the minter will put in the token (the requested scope, else the grant's, that
        # the client still holds) must not be nothing: found out there, after the token was
        # spent, the refusal would leave the client with no refresh token at all. A scope of
        # blanks passes Authlib's subset check while naming nothing.
        requested = set((self.request.payload.scope or row.scope).split())
        if requested.isdisjoint(client.scopes):
            raise InvalidScopeError()
        self.request.refresh_token = record
        check_same_surface(self.request.payload.datalist.get("resource", []), Surface(row.surface))
        require_dpop_binding(self.exchange, self.request.client, row.dpop_jkt)

    def create_token_response(self) -> Any:
        row = self.request.refresh_token.row
        exchange = self.exchange
        spent = changed_rows(
            exchange.session,
            update(RefreshToken)
            .where(
                RefreshToken.id == row.id,
                RefreshToken.used_at.is_(None),
                RefreshToken.revoked_at.is_(None),
            )
            .values(used_at=exchange.now),
        )
        if spent != 1:
            # A concurrent refresh spent it first: one rotation only, and the family is
            # treated as leaked (a thief and the client racing look exactly like this).
            raise self._reused(row, "refresh-race-lost")
        return super().create_token_response()

    def authenticate_user(self, record: RefreshRecord) -> Principal | None:
        row = record.row
        return person_principal(self.exchange, self.request.client, row, family_id=row.family_id)

    def revoke_old_credential(self, refresh_token: RefreshRecord) -> None:
        # Already spent atomically in create_token_response, before the new token was minted.
        return None

    def _reused(self, row: RefreshToken, reason: str) -> Exception:
        return reuse_detected(
            self.exchange,
            family_id=row.family_id,
            event=EventName.OAUTH_REFRESH_TOKEN_REUSED,
            actor=Actor.user(row.user_id, row.tenant_id),
            target=Target("token_family", row.family_id, row.tenant_id),
            reason=reason,
        )
