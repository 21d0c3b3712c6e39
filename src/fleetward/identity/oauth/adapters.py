"""Our rows seen through the model protocols Authlib calls (``ClientMixin``,
``AuthorizationCodeMixin``, ``TokenMixin``, ``DeviceCredentialMixin``).

The adapters are duck-typed rather than subclasses: Authlib never checks types, and this keeps
untyped base classes out of mypy's view. Every answer is narrowed by the client's policy.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleetward.authz.permissions import Permission
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth.policy import (
    AUTH_NONE,
    AUTHORIZATION_CODE,
    PRIVATE_KEY_JWT,
    ClientPolicy,
    policy_for,
)
from fleetward.identity.oauth_models import (
    AuthorizationCode,
    Client,
    DeviceAuthorization,
    RefreshToken,
)
from fleetward.identity.tokens import AccessTokenClaims

_PERMISSIONS = frozenset(p.value for p in Permission)
_SURFACES = {s.value: s for s in Surface}


class OAuthClient:
    """An ``oauth_clients`` row, as Authlib's client model."""

    def __init__(self, row: Client) -> None:
        self.row = row
        self.policy: ClientPolicy = policy_for(row.client_type)

    @property
    def id(self) -> str:
        return self.row.id

    @property
    def surfaces(self) -> tuple[Surface, ...]:
        return tuple(_SURFACES[s] for s in self.row.surfaces if s in _SURFACES)

    @property
    def scopes(self) -> tuple[str, ...]:
        """The row's scopes, minus anything unknown or beyond what the type may hold."""
        ceiling = self.policy.max_scopes
        return tuple(
            s
            for s in self.row.scopes
            if s in _PERMISSIONS and (ceiling is None or Permission(s) in ceiling)
        )

    @property
    def requires_dpop(self) -> bool:
        return self.policy.dpop_required or self.row.require_dpop

    @property
    def is_public(self) -> bool:
        return self.policy.auth_method == AUTH_NONE

    def narrow_scopes(self, requested: str | None) -> tuple[str, ...]:
        """Requested scopes the client holds, in the client's order; omitted means all of
        the client's scopes (RFC 6749 section 3.3 lets the server pick a default)."""
        mine = self.scopes
        if requested is None or not requested.strip():
            return mine
        wanted = set(requested.split())
        return tuple(s for s in mine if s in wanted)

    # --- ClientMixin -----------------------------------------------------------------------

    def get_client_id(self) -> str:
        return self.row.id

    def get_default_redirect_uri(self) -> None:
        # No default: every authorization request names its redirect URI, which must match
        # a registered one exactly.
        return None

    def get_allowed_scope(self, scope: str | None) -> str | None:
        narrowed = self.narrow_scopes(scope)
        return " ".join(narrowed) if narrowed else None

    def check_redirect_uri(self, redirect_uri: object) -> bool:
        # Exact string match: no prefix, wildcard, port or case leniency.
        return isinstance(redirect_uri, str) and redirect_uri in self.row.redirect_uris

    def check_client_secret(self, client_secret: object) -> bool:
        # No client of ours has a shared secret: confidential clients prove a private key.
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if method != self.policy.auth_method:
            return False
        if endpoint == "introspection":
            return method == PRIVATE_KEY_JWT and self.policy.may_introspect
        return True

    def check_response_type(self, response_type: object) -> bool:
        return response_type == "code" and self.check_grant_type(AUTHORIZATION_CODE)

    def check_grant_type(self, grant_type: object) -> bool:
        return (
            isinstance(grant_type, str)
            and grant_type in self.row.grant_types
            and grant_type in self.policy.grants
        )


class CodeRecord:
    """An authorization code row, as Authlib's authorization code model."""

    def __init__(self, row: AuthorizationCode) -> None:
        self.row = row

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


class RefreshRecord:
    """A refresh token row, as Authlib's token model (refresh grant, revocation,
    introspection)."""

    def __init__(self, row: RefreshToken, now: datetime) -> None:
        self.row = row
        self._now = now

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.row.client_id)

    def get_scope(self) -> str:
        return self.row.scope

    def is_expired(self) -> bool:
        return self.row.expires_at <= self._now

    def is_revoked(self) -> bool:
        # A spent token is as dead as a revoked one: presenting it again is reuse.
        return self.row.revoked_at is not None or self.row.used_at is not None

    def introspect(self) -> dict[str, Any]:
        row = self.row
        return {
            "active": True,
            "token_type": "refresh_token",
            "client_id": row.client_id,
            "scope": row.scope,
            "sub": row.user_id,
            "tenant": row.tenant_id,
            "exp": int(row.expires_at.timestamp()),
            "iat": int(row.created_at.timestamp()),
        }


class AccessRecord:
    """An access token that already validated (signature, audience, time, revocation)."""

    def __init__(self, claims: AccessTokenClaims) -> None:
        self.claims = claims

    def check_client(self, client: Any) -> bool:
        return bool(client.get_client_id() == self.claims.client_id)

    def get_scope(self) -> str:
        return self.claims.scope

    def is_expired(self) -> bool:
        return False  # the validator refused it otherwise

    def is_revoked(self) -> bool:
        return False  # likewise

    def introspect(self) -> dict[str, Any]:
        claims = self.claims
        body: dict[str, Any] = {
            "active": True,
            "token_type": "DPoP" if claims.cnf_jkt else "Bearer",
            "client_id": claims.client_id,
            "scope": claims.scope,
            "sub": claims.sub,
            "sub_type": claims.sub_type,
            "tenant": claims.tenant,
            "aud": claims.aud,
            "iss": claims.iss,
            "exp": claims.exp,
            "iat": claims.iat,
            "nbf": claims.nbf,
            "jti": claims.jti,
            "auth_time": claims.auth_time,
            "acr": claims.acr,
        }
        if claims.cnf_jkt is not None:
            body["cnf"] = {"jkt": claims.cnf_jkt}
        return body


class DeviceRecord:
    """A device authorization row, as Authlib's device credential model."""

    def __init__(self, row: DeviceAuthorization, now: datetime) -> None:
        self.row = row
        self._now = now

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_scope(self) -> str:
        return self.row.scope

    def get_user_code(self) -> str:
        return self.row.user_code

    def is_expired(self) -> bool:
        return self.row.expires_at <= self._now
