"""The client credentials grant (RFC 6749 section 4.4): tokens that stand for no person.

Only workload and partner clients, authenticated by ``private_key_jwt``, may use it. The token
is the client's own: ``sub`` = client id, ``sub_type`` = ``workload``, ``tenant`` = the tenant
the client is bound to (which must fit the surface). Scopes are the requested ones the client
holds, and never more than the read-only machine set: no vehicle command, transfer or
administration scope can ever be in a token without a person behind it. No refresh token.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidScopeError, UnauthorizedClientError
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant

from fleetward.identity.acr import Amr
from fleetward.identity.oauth.adapters import OAuthClient
from fleetward.identity.oauth.exchange import Exchange
from fleetward.identity.oauth.grant_checks import require_dpop_binding
from fleetward.identity.oauth.policy import MACHINE_SCOPES, PRIVATE_KEY_JWT, WORKLOAD_ACR
from fleetward.identity.oauth.principal import Principal
from fleetward.identity.oauth.targets import bound_tenant, requested_surface

_MACHINE = frozenset(p.value for p in MACHINE_SCOPES)


class MachineGrant(ClientCredentialsGrant):  # type: ignore[misc]  # authlib is untyped
    TOKEN_ENDPOINT_AUTH_METHODS = [PRIVATE_KEY_JWT]

    def __init__(self, request: Any, server: Any) -> None:
        super().__init__(request, server)
        self.exchange: Exchange = server.exchange

    def validate_token_request(self) -> None:
        super().validate_token_request()  # client authentication, grant type, known scopes
        request = self.request
        client: OAuthClient = request.client
        if not client.policy.machine:
            raise UnauthorizedClientError("This client never acts on its own behalf.")
        surface = requested_surface(request.payload.datalist.get("resource", []), client)
        tenant = bound_tenant(self.exchange.session, client, surface)
        if tenant is None:
            raise UnauthorizedClientError("The client's tenant cannot use this surface.")
        scopes = tuple(s for s in client.narrow_scopes(request.payload.scope) if s in _MACHINE)
        if not scopes:
            raise InvalidScopeError()
        require_dpop_binding(self.exchange, client, None)
        request.facts.principal = Principal(
            subject=client.id,
            subject_type="workload",
            tenant_id=tenant.id,
            surface=surface,
            auth_time=self.exchange.now,
            acr=WORKLOAD_ACR,
            amr=(Amr.PRIVATE_KEY_JWT.value,),
            family_id=None,
            granted_scopes=scopes,
        )

    def create_token_response(self) -> Any:
        principal: Principal = self.request.facts.principal
        token = self.generate_token(
            user=principal, scope=" ".join(principal.granted_scopes), include_refresh_token=False
        )
        self.save_token(token)
        return 200, token, self.TOKEN_RESPONSE_HEADER
