"""Discovery: RFC 8414 authorization server metadata and the public JWK Set.

The same document is served at ``/.well-known/oauth-authorization-server`` and, for clients
that only look there, ``/.well-known/openid-configuration``. We issue no ID tokens, so the
document claims nothing of OpenID Connect (no ``id_token`` response types or signing algs).
Every value here is derived from the same tables the server enforces.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fleetward.authz.permissions import Permission
from fleetward.identity.acr import Acr
from fleetward.identity.oauth.client_auth import ASSERTION_ALGORITHMS
from fleetward.identity.oauth.pkce import S256
from fleetward.identity.oauth.policy import (
    AUTH_NONE,
    AUTHORIZATION_CODE,
    CLIENT_CREDENTIALS,
    DEVICE_CODE,
    PRIVATE_KEY_JWT,
    REFRESH_TOKEN,
)
from fleetward.identity.oauth.urls import OAuthUrls
from fleetward.identity.tokens import Keyring
from fleetward.identity.tokens.dpop import DEFAULT_ALLOWED_ALGS


def server_metadata(urls: OAuthUrls) -> dict[str, Any]:
    return {
        "issuer": urls.issuer,
        "authorization_endpoint": urls.authorization,
        "token_endpoint": urls.token,
        "device_authorization_endpoint": urls.device_authorization,
        "revocation_endpoint": urls.revocation,
        "introspection_endpoint": urls.introspection,
        "jwks_uri": urls.jwks,
        "scopes_supported": sorted(p.value for p in Permission),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": [
            AUTHORIZATION_CODE,
            REFRESH_TOKEN,
            CLIENT_CREDENTIALS,
            DEVICE_CODE,
        ],
        "token_endpoint_auth_methods_supported": [PRIVATE_KEY_JWT, AUTH_NONE],
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "revocation_endpoint_auth_methods_supported": [PRIVATE_KEY_JWT, AUTH_NONE],
        "revocation_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "introspection_endpoint_auth_methods_supported": [PRIVATE_KEY_JWT],
        "introspection_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "code_challenge_methods_supported": [S256],
        "dpop_signing_alg_values_supported": list(DEFAULT_ALLOWED_ALGS),
        "authorization_response_iss_parameter_supported": True,
        "acr_values_supported": [acr.value for acr in Acr],
    }


def public_jwks(keyring: Keyring, now: datetime) -> dict[str, Any]:
    """The signing keys' public halves (``Keyring.jwks`` never includes private members)."""
    return dict(keyring.jwks(now))
