"""Opaque, non-guessable identifiers: a type prefix and 128 random bits.

Knowing an id grants nothing (authorization decides); unguessable ids are defence in depth
against enumeration, and the prefix stops one kind of id being passed where another belongs.
"""

from __future__ import annotations

import base64
import re
import secrets

_ID_RE = re.compile(r"^[a-z]{2,5}_[a-z2-7]{26}$")


def new_id(prefix: str) -> str:
    if not re.fullmatch(r"[a-z]{2,5}", prefix):
        raise ValueError("id prefixes are 2-5 lowercase letters")
    raw = base64.b32encode(secrets.token_bytes(16)).decode("ascii").rstrip("=").lower()
    return f"{prefix}_{raw}"


def is_id(value: object, prefix: str) -> bool:
    """Whether ``value`` is syntactically an id of this kind (says nothing about existence)."""
    return (
        isinstance(value, str)
        and _ID_RE.fullmatch(value) is not None
        and value.startswith(prefix + "_")
    )
