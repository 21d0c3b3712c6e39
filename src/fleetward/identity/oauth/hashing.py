"""One-way digests of bearer secrets (codes, refresh tokens, device codes).

Only the SHA-256 of a secret is stored; looking a secret up by its digest also means the
database never compares attacker-chosen bytes with a stored secret. The secrets are 256-bit
random values, so an unsalted hash is enough: there is nothing to brute-force.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Final

# Anything longer than this is not one of ours; refusing early bounds the work per request.
MAX_SECRET_LENGTH: Final = 256


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    """256 random bits, URL-safe (43 characters)."""
    return secrets.token_urlsafe(32)


def plausible(secret: object) -> bool:
    return isinstance(secret, str) and 0 < len(secret) <= MAX_SECRET_LENGTH
