"""The server's endpoint URLs, derived from the configured issuer (never from a Host header).

A request's own Host header is attacker-controlled; every URL we publish, compare a DPoP
``htu`` with or accept as an assertion audience comes from the issuer setting instead.
"""

from __future__ import annotations

from dataclasses import dataclass

AUTHORIZE_PATH = "/oauth/authorize"
TOKEN_PATH = "/oauth/token"  # noqa: S105 - a path
DEVICE_AUTHORIZATION_PATH = "/oauth/device_authorization"
DEVICE_PATH = "/oauth/device"
REVOKE_PATH = "/oauth/revoke"
INTROSPECT_PATH = "/oauth/introspect"
JWKS_PATH = "/.well-known/jwks.json"
LOGIN_PATH = "/login"


@dataclass(frozen=True, slots=True)
class OAuthUrls:
    issuer: str

    def _at(self, path: str) -> str:
        return self.issuer.rstrip("/") + path

    @property
    def authorization(self) -> str:
        return self._at(AUTHORIZE_PATH)

    @property
    def token(self) -> str:
        return self._at(TOKEN_PATH)

    @property
    def device_authorization(self) -> str:
        return self._at(DEVICE_AUTHORIZATION_PATH)

    @property
    def device(self) -> str:
        return self._at(DEVICE_PATH)

    @property
    def revocation(self) -> str:
        return self._at(REVOKE_PATH)

    @property
    def introspection(self) -> str:
        return self._at(INTROSPECT_PATH)

    @property
    def jwks(self) -> str:
        return self._at(JWKS_PATH)

    def at(self, path: str) -> str:
        """The absolute URL of one of our paths (used to build Authlib request URIs)."""
        return self._at(path)
