"""CSRF tokens for the consent and device-approval forms.

A token is ``<issued-at>.<HMAC>`` over the purpose, the login session id, the issue time and
a binding (a digest of exactly what the form approves). So a token cannot be replayed by
another browser session, for another authorization request or device code, for the other
form, or after ``MAX_AGE``; and it needs no server-side state. The key is derived from the
platform data key for this purpose only.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Final

CSRF_KEY_PURPOSE: Final = "fleetward:oauth-csrf:v1"
MAX_AGE: Final = timedelta(minutes=15)
_MAX_TOKEN_LENGTH: Final = 128


def binding_of(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CsrfGuard:
    """Stateless and thread-safe."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the CSRF key must be at least 256 bits")
        self._key = key

    def _mac(self, purpose: str, session_id: str, issued: int, binding: str) -> str:
        message = f"{purpose}\x00{session_id}\x00{issued}\x00{binding}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")

    def issue(self, *, purpose: str, session_id: str, binding: str, now: datetime) -> str:
        issued = int(now.timestamp())
        return f"{issued}.{self._mac(purpose, session_id, issued, binding)}"

    def verify(
        self, token: object, *, purpose: str, session_id: str, binding: str, now: datetime
    ) -> bool:
        if not isinstance(token, str) or len(token) > _MAX_TOKEN_LENGTH or "." not in token:
            return False
        issued_text, mac = token.split(".", 1)
        if not issued_text.isascii() or not issued_text.isdigit():
            return False
        issued = int(issued_text)
        age = now.timestamp() - issued
        if age < -60 or age > MAX_AGE.total_seconds():
            return False
        expected = self._mac(purpose, session_id, issued, binding)
        return hmac.compare_digest(expected.encode(), mac.encode())
