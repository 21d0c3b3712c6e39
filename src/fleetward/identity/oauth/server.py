"""The per-request Authlib ``AuthorizationServer``.

One server is built per request, around that request's :class:`Exchange` (the synchronous
session, clock reading, verified DPoP key...). Registrations are a handful of list appends,
cheaper than making shared state request-aware, and nothing leaks between requests.

Registered: authorization code + S256 PKCE, refresh token, client credentials and device code
grants; ``private_key_jwt`` and ``none`` client authentication (no shared secrets: Authlib's
``client_secret_*`` methods are never listed by any grant or endpoint); device authorization,
revocation and introspection endpoints; the RFC 9207 ``iss`` authorization response
parameter. Not registered, so refused by Authlib itself: the implicit grant
(``unsupported_response_type``) and the password grant (``unsupported_grant_type``).
"""

from __future__ import annotations

import logging
from typing import Any

from authlib.oauth2.rfc6749 import AuthorizationServer
from authlib.oauth2.rfc6749.errors import UnsupportedResponseTypeError
from authlib.oauth2.rfc9207 import IssuerParameter

from fleetward.authz.permissions import Permission
from fleetward.identity.oauth.adapters import OAuthClient
from fleetward.identity.oauth.client_auth import PrivateKeyJwt
from fleetward.identity.oauth.clients import load_client
from fleetward.identity.oauth.code_grant import CodeGrant
from fleetward.identity.oauth.device import DeviceAuthorizationStart, DeviceGrant
from fleetward.identity.oauth.exchange import Exchange
from fleetward.identity.oauth.http import OAuthResponse
from fleetward.identity.oauth.machine_grant import MachineGrant
from fleetward.identity.oauth.minting import TokenMinter
from fleetward.identity.oauth.pkce import S256CodeChallenge
from fleetward.identity.oauth.policy import PRIVATE_KEY_JWT
from fleetward.identity.oauth.refresh_grant import RefreshGrant
from fleetward.identity.oauth.token_endpoints import Introspection, Revocation

# Authlib logs each issued token response at DEBUG ("Issue token %r"). Its loggers never go
# below INFO, whatever the configured level: no deployment's log ever holds a token (the
# redaction layer is the net, not the policy).
logging.getLogger("authlib").setLevel(logging.INFO)


class _Issuer(IssuerParameter):  # type: ignore[misc]  # authlib is untyped
    def __init__(self, issuer: str) -> None:
        self._issuer = issuer

    def get_issuer(self) -> str:
        return self._issuer


class FleetwardAuthorizationServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, exchange: Exchange) -> None:
        super().__init__(scopes_supported=[p.value for p in Permission])
        self.exchange = exchange
        self._clients: dict[str, OAuthClient | None] = {}
        self.issuer_parameter = _Issuer(exchange.urls.issuer)
        self.register_token_generator("default", TokenMinter(exchange))
        self.register_client_auth_method(PRIVATE_KEY_JWT, PrivateKeyJwt(exchange))
        self.register_grant(CodeGrant, [S256CodeChallenge()])
        self.register_grant(RefreshGrant)
        self.register_grant(MachineGrant)
        self.register_grant(DeviceGrant)
        self.register_endpoint(DeviceAuthorizationStart(self))
        self.register_endpoint(Revocation(self))
        self.register_endpoint(Introspection(self))
        self.register_extension(lambda server: self.issuer_parameter(server))

    def query_client(self, client_id: object) -> OAuthClient | None:
        # Authlib asks several times per request; one lookup is enough.
        key = client_id if isinstance(client_id, str) else ""
        if key not in self._clients:
            self._clients[key] = load_client(self.exchange.session, client_id)
        return self._clients[key]

    def get_authorization_grant(self, request: Any) -> Any:
        try:
            return super().get_authorization_grant(request)
        except ValueError:
            # An unsupported response_type is quoted into the error's description, and Authlib
            # refuses (ValueError) to build an error whose description holds characters
            # RFC 6749 forbids there ('"', '\\', controls, non-ASCII). Same answer, without
            # the echo: redirected only to a registered redirect URI of a known client.
            client = self.query_client(request.payload.client_id)
            uri = request.payload.redirect_uri
            trusted = uri if client is not None and client.check_redirect_uri(uri) else None
            raise UnsupportedResponseTypeError("(not shown)", redirect_uri=trusted) from None

    def save_token(self, token: dict[str, Any], request: Any) -> None:
        # The minter already stored what needs storing (the hashed refresh token); access
        # tokens are self-contained JWTs and are never stored.
        return None

    def create_oauth2_request(self, request: Any) -> Any:
        # Requests are built (async) by the HTTP adapter before Authlib runs.
        return request

    def create_json_request(self, request: Any) -> Any:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> OAuthResponse:
        return OAuthResponse(status, body, list(headers))

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        # Audit events are noted by the grants themselves, with their facts.
        return None
