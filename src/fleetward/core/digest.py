"""SHA-256 over a sequence of strings, each framed by its length: ("ab", "c") and ("a", "bc")
never digest alike."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def framed_sha256(parts: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for part in parts:
        encoded = part.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "big"))
        digest.update(encoded)
    return digest.hexdigest()


__all__ = ["framed_sha256"]
