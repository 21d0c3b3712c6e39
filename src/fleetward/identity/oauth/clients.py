"""The client registry: registering clients within their type's policy, and looking them up.

Registration refuses anything the client type could never use (grant types, scopes, auth
method, a missing or extra tenant binding, inexact or insecure redirect URIs, private key
material in a JWKS), so an invalid client never reaches the store. Lookups (``load_client``)
refuse ids that are malformed, disabled or shaped like a vehicle or device id.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any, Final
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.authz.permissions import Permission
from fleetward.core.surfaces import Surface
from fleetward.identity.errors import DuplicateName
from fleetward.identity.models import Tenant
from fleetward.identity.oauth.adapters import OAuthClient
from fleetward.identity.oauth.errors import InvalidClientRegistration
from fleetward.identity.oauth.policy import (
    AUTHORIZATION_CODE,
    PRIVATE_KEY_JWT,
    SURFACE_TENANT_KIND,
    is_non_subject_id,
    policy_for,
)
from fleetward.identity.oauth_models import Client, ClientType
from fleetward.services import ServiceContext

_CLIENT_ID: Final = re.compile(r"^[a-z0-9][a-z0-9._-]{2,39}$")
# JWK members only private or symmetric keys have.
_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
_URI_FORBIDDEN: Final = frozenset("\"'\\<>`{}|^*; ,")
# authorization_codes.redirect_uri holds at most this many characters: a longer registered URI
# could never be recorded with a code, so every sign-in through the client would fail.
MAX_REDIRECT_URI: Final = 500


def valid_client_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and _CLIENT_ID.fullmatch(value) is not None
        and not is_non_subject_id(value)
    )


def load_client(session: Session, client_id: object) -> OAuthClient | None:
    """The enabled client with this id, or None. Knowing a client id proves nothing: the
    caller still authenticates as the client's type requires."""
    if not valid_client_id(client_id):
        return None
    row = session.get(Client, client_id)
    if row is None or row.disabled_at is not None:
        return None
    return OAuthClient(row)


@dataclass(frozen=True, slots=True)
class ClientSpec:
    client_id: str
    name: str
    client_type: ClientType
    surfaces: tuple[Surface, ...]
    scopes: tuple[Permission, ...]
    grant_types: tuple[str, ...]
    redirect_uris: tuple[str, ...] = ()
    tenant_id: str | None = None
    jwks: Mapping[str, Any] | None = None
    require_dpop: bool = False


def _refuse(reason: str, detail: str) -> InvalidClientRegistration:
    return InvalidClientRegistration(detail, reason=reason)


def valid_redirect_uri(uri: str) -> bool:
    """Absolute, no fragment or user info, ASCII without spaces or wildcard characters, at
    most MAX_REDIRECT_URI characters, and HTTPS unless it is a loopback IP literal (RFC 8252
    section 7.3)."""
    if len(uri) > MAX_REDIRECT_URI or not uri.isascii():
        return False
    if any(ord(ch) < 0x21 or ch in _URI_FORBIDDEN for ch in uri):
        return False
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number 0-65535
    except ValueError:  # e.g. an unclosed or invalid IPv6 literal
        return False
    if parts.fragment or parts.username or parts.password or not parts.hostname:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http":
        return False
    try:
        return ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def public_jwks(jwks: Mapping[str, Any]) -> dict[str, Any]:
    """``jwks`` if it is a set of public P-256 keys (what ES256 assertions need), else raise."""
    keys = jwks.get("keys")
    if not isinstance(keys, list) or not keys:
        raise _refuse("jwks", "the JWKS must hold at least one key")
    for key in keys:
        if not isinstance(key, dict) or not _PRIVATE_MEMBERS.isdisjoint(key):
            raise _refuse("jwks", "the JWKS must hold public keys only")
    try:
        imported = KeySet.import_key_set({"keys": keys})
    except (JoseError, ValueError, TypeError):
        raise _refuse("jwks", "the JWKS does not parse") from None
    for key in imported.keys:
        if not isinstance(key, ECKey) or key.curve_name != "P-256" or key.is_private:
            raise _refuse("jwks", "client keys must be public P-256 keys (ES256)")
    return {"keys": [dict(key) for key in keys]}


class ClientRegistry:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def get(self, client_id: str) -> Client | None:
        return await self._ctx.session.get(Client, client_id)

    async def register(self, spec: ClientSpec, *, actor: Actor) -> Client:
        jwks = await self._check(spec)
        session = self._ctx.session
        if await session.scalar(select(Client.id).where(Client.id == spec.client_id)):
            raise DuplicateName("a client with that id exists", reason="client")
        policy = policy_for(spec.client_type)
        row = Client(
            id=spec.client_id,
            name=spec.name,
            client_type=spec.client_type,
            tenant_id=spec.tenant_id,
            redirect_uris=list(spec.redirect_uris),
            grant_types=list(spec.grant_types),
            scopes=[p.value for p in spec.scopes],
            surfaces=[s.value for s in spec.surfaces],
            jwks=jwks,
            require_dpop=spec.require_dpop or policy.dpop_required,
            created_at=self._ctx.clock.now(),
            disabled_at=None,
        )
        session.add(row)
        self._ctx.audit.record(
            session,
            EventName.OAUTH_CLIENT_REGISTERED,
            actor=actor,
            target=Target("oauth_client", row.id, row.tenant_id),
            details={"client_type": row.client_type.value, "surfaces": list(row.surfaces)},
        )
        await session.flush()
        return row

    async def replace_keys(self, client: Client, jwks: Mapping[str, Any], *, actor: Actor) -> None:
        if policy_for(client.client_type).auth_method != PRIVATE_KEY_JWT:
            raise _refuse("jwks", "public clients have no keys")
        client.jwks = public_jwks(jwks)
        self._ctx.audit.record(
            self._ctx.session,
            EventName.OAUTH_CLIENT_KEYS_REPLACED,
            actor=actor,
            target=Target("oauth_client", client.id, client.tenant_id),
        )
        await self._ctx.session.flush()

    async def _check(self, spec: ClientSpec) -> dict[str, Any] | None:
        policy = policy_for(spec.client_type)
        if not valid_client_id(spec.client_id):
            raise _refuse("client-id", "client ids are 3-40 of a-z 0-9 . _ - (no device ids)")
        if not spec.grant_types or not set(spec.grant_types) <= policy.grants:
            raise _refuse("grant-type", "a grant type is not allowed for this client type")
        ceiling = policy.max_scopes
        if not spec.scopes or (ceiling is not None and not set(spec.scopes) <= ceiling):
            raise _refuse("scope", "a scope is not allowed for this client type")
        if not spec.surfaces:
            raise _refuse("surface", "a client needs at least one surface")
        if (spec.tenant_id is not None) != policy.needs_tenant:
            raise _refuse("tenant", "this client type is bound to a tenant exactly when required")
        if spec.tenant_id is not None:
            tenant = await self._ctx.session.get(Tenant, spec.tenant_id)
            if tenant is None or any(SURFACE_TENANT_KIND[s] != tenant.kind for s in spec.surfaces):
                raise _refuse("tenant-kind", "the bound tenant does not fit the client's surfaces")
        needs_redirect = AUTHORIZATION_CODE in spec.grant_types
        if needs_redirect != bool(spec.redirect_uris) or not all(
            valid_redirect_uri(uri) for uri in spec.redirect_uris
        ):
            raise _refuse("redirect-uri", "redirect URIs must be exact, absolute and secure")
        if policy.auth_method == PRIVATE_KEY_JWT:
            if spec.jwks is None:
                raise _refuse("jwks", "this client type authenticates with private_key_jwt")
            return public_jwks(spec.jwks)
        if spec.jwks is not None:
            raise _refuse("jwks", "public clients have no keys")
        return None
