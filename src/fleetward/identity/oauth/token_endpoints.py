"""Token revocation (RFC 7009) and introspection (RFC 7662) on Authlib's endpoints.

Both look a presented token up the same way: a refresh token by its digest; an access token
only if it already validated (signature, issuer, audience, time, revocation) before Authlib
ran, which is why the flow passes pre-validated claims in the exchange. Anything else is "no
such token": revocation answers 200 (RFC 7009 section 2.2), introspection ``active: false``.

Revoking a refresh token revokes its whole family; revoking an access token revokes its
``jti`` until it would have expired. Introspection needs a confidential client
(``private_key_jwt``) and only describes that client's own tokens.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import select

from fleetward.identity.oauth import hashing
from fleetward.identity.oauth.adapters import AccessRecord, OAuthClient, RefreshRecord
from fleetward.identity.oauth.exchange import Exchange, RevocationRequest
from fleetward.identity.oauth.policy import AUTH_NONE, PRIVATE_KEY_JWT
from fleetward.identity.oauth_models import RefreshToken, RevocationKind

PresentedToken = RefreshRecord | AccessRecord


def find_token(exchange: Exchange, raw: object, hint: object) -> PresentedToken | None:
    access = exchange.presented_access
    access_record = AccessRecord(access) if access is not None else None
    if hint == "access_token" and access_record is not None:
        return access_record
    if hashing.plausible(raw):
        row = exchange.session.scalar(
            select(RefreshToken).where(RefreshToken.token_hash == hashing.digest(str(raw)))
        )
        if row is not None:
            return RefreshRecord(row, exchange.now)
    return access_record


class Revocation(RevocationEndpoint):  # type: ignore[misc]  # authlib is untyped
    # Public clients revoke their own tokens too (RFC 7009 section 2.1).
    CLIENT_AUTH_METHODS = [PRIVATE_KEY_JWT, AUTH_NONE]

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.exchange: Exchange = server.exchange

    def query_token(self, token_string: object, token_type_hint: object) -> PresentedToken | None:
        return find_token(self.exchange, token_string, token_type_hint)

    def revoke_token(self, token: PresentedToken, request: Any) -> None:
        if isinstance(token, RefreshRecord):
            self.exchange.revoke(
                RevocationRequest(RevocationKind.FAMILY, token.row.family_id, "revoked-by-client")
            )
            return
        claims = token.claims
        self.exchange.revoke(
            RevocationRequest(
                RevocationKind.JTI, claims.jti, "revoked-by-client", until=claims.expires_at
            )
        )


class Introspection(IntrospectionEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = [PRIVATE_KEY_JWT]

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.exchange: Exchange = server.exchange

    def query_token(self, token_string: object, token_type_hint: object) -> PresentedToken | None:
        return find_token(self.exchange, token_string, token_type_hint)

    def check_permission(self, token: PresentedToken, client: OAuthClient, request: Any) -> bool:
        # A client learns about its own tokens only: introspection is not a directory of
        # other clients' users, tenants and scopes.
        return token.check_client(client)

    def introspect_token(self, token: PresentedToken) -> dict[str, Any]:
        return token.introspect()
