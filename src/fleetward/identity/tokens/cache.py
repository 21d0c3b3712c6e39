"""A bounded cache of access tokens whose signature and static claims already verified.

What a hit skips: base64/JSON parsing, the ES256 signature check, and the checks whose answer
cannot change for the same bytes (header allow-list, claim types, issuer, lifetime cap).
What a hit never skips: the time checks, the audience (it depends on the calling surface),
whether the signing key is still publishable, and the revocation check. The validator runs
those on every call, cached or not, so the cache can only ever save work, never let a token
through that an uncached call would refuse.

Keys are SHA-256 digests of the token, so the cache holds no bearer credentials. Entries are
dropped once the token's ``exp`` has passed, and the least recently used entry is evicted
when the cache is full, so memory stays bounded whatever callers send (only tokens that
verified can get in at all).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from fleetward.identity.tokens.claims import AccessTokenClaims


@dataclass(frozen=True, slots=True)
class CachedToken:
    claims: AccessTokenClaims
    kid: str


def token_digest(raw: str) -> bytes:
    return hashlib.sha256(raw.encode("ascii")).digest()


class VerifiedTokenCache:
    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1; disable the cache instead")
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, CachedToken] = OrderedDict()
        # Validators are normally used from one event loop, but nothing stops a caller from
        # sharing one across threads; OrderedDict reordering is not atomic.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes, now_seconds: float) -> CachedToken | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if now_seconds >= entry.claims.exp:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return entry

    def put(self, digest: bytes, entry: CachedToken, now_seconds: float) -> None:
        if now_seconds >= entry.claims.exp:
            return  # only valid through leeway now; not worth keeping
        with self._lock:
            self._entries[digest] = entry
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
