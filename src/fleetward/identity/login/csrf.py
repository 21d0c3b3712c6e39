"""CSRF protection for the login pages: a signed double-submit token.

The browser holds a random value in an HttpOnly, SameSite=Strict cookie (``__Host-`` prefixed
when served over https, so a sibling subdomain cannot plant one). Each form carries
HMAC-SHA256(key, value) and JSON calls send it in ``X-CSRF-Token``. A forged cross-site post
has neither the cookie (SameSite) nor the means to compute the HMAC for a cookie it plants
(the key is derived from the platform data key and never leaves the server), and the same
key on every replica keeps it stateless. Login CSRF (signing a victim into the attacker's
account) is covered because the check runs before anything else, on anonymous pages too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

HEADER = "x-csrf-token"
_MAX = 128


class CsrfGuard:
    """Thread-safe (stateless after construction)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the CSRF key must be at least 32 bytes")
        self._key = key

    @staticmethod
    def new_cookie_value() -> str:
        return secrets.token_urlsafe(32)

    def token_for(self, cookie_value: str) -> str:
        digest = hmac.new(self._key, cookie_value.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def valid(self, cookie_value: str | None, token: str | None) -> bool:
        if not cookie_value or not token or len(cookie_value) > _MAX or len(token) > _MAX:
            return False
        if not cookie_value.isascii() or not token.isascii():
            return False
        return hmac.compare_digest(self.token_for(cookie_value), token)
