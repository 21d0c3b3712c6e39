"""The authorization server's ES256 signing keyring.

Invariants:

* exactly one key is active (``retired_at is None``); it signs every new token;
* ``kid`` is the RFC 7638 SHA-256 thumbprint of the public key, so a kid can never name
  anything but the key it was computed from;
* a retired key stays publishable (in the JWKS, and usable for verification) until
  ``retired_at + max_token_lifetime + skew``: a token it signed just before rotation lives at
  most ``max_token_lifetime``, and ``skew`` must be at least every verifier's leeway;
* verification looks keys up by kid in memory only; a kid is never a path or a URL.

Readers never take a lock: the key list is replaced as one immutable tuple on rotation.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec
from joserfc.jwk import ECKey

from fleetward.core.clock import Clock
from fleetward.identity.tokens.keyfiles import KeyringError, StoredKey, read_keys, write_keys

SIGNING_ALG: Final = "ES256"
DEFAULT_MAX_TOKEN_LIFETIME: Final = timedelta(minutes=15)
DEFAULT_SKEW: Final = timedelta(seconds=60)

__all__ = [
    "DEFAULT_MAX_TOKEN_LIFETIME",
    "DEFAULT_SKEW",
    "SIGNING_ALG",
    "Keyring",
    "KeyringError",
    "SigningKey",
]


@dataclass(frozen=True, slots=True)
class SigningKey:
    """One P-256 key pair with its lifecycle. ``repr`` never shows key material."""

    kid: str
    private_key: ECKey = field(repr=False, compare=False)
    public_key: ECKey = field(repr=False, compare=False)
    created_at: datetime
    retired_at: datetime | None = None

    @classmethod
    def from_private(
        cls,
        private: ec.EllipticCurvePrivateKey,
        created_at: datetime,
        retired_at: datetime | None = None,
    ) -> SigningKey:
        if not isinstance(private.curve, ec.SECP256R1):
            raise KeyringError("ES256 signing keys must be on curve P-256")
        public = ECKey.import_key(private.public_key())
        return cls(
            kid=public.thumbprint(),
            private_key=ECKey.import_key(private),
            public_key=public,
            created_at=created_at,
            retired_at=retired_at,
        )

    def publishable(self, now: datetime, max_token_lifetime: timedelta, skew: timedelta) -> bool:
        return self.retired_at is None or now <= self.retired_at + max_token_lifetime + skew

    def public_jwk(self) -> dict[str, str]:
        jwk = {k: str(v) for k, v in self.public_key.as_dict(private=False).items()}
        jwk.update(kid=self.kid, alg=SIGNING_ALG, use="sig")
        return jwk


class Keyring:
    def __init__(
        self,
        keys: Iterable[SigningKey],
        *,
        max_token_lifetime: timedelta = DEFAULT_MAX_TOKEN_LIFETIME,
        skew: timedelta = DEFAULT_SKEW,
    ) -> None:
        self.max_token_lifetime = max_token_lifetime
        self.skew = skew
        self._lock = threading.Lock()
        self._keys: tuple[SigningKey, ...] = ()
        self._by_kid: dict[str, SigningKey] = {}
        self._replace(tuple(keys))

    @classmethod
    def generate(
        cls,
        clock: Clock,
        *,
        max_token_lifetime: timedelta = DEFAULT_MAX_TOKEN_LIFETIME,
        skew: timedelta = DEFAULT_SKEW,
    ) -> Keyring:
        """A keyring with one fresh active key created at ``clock.now()``."""
        key = SigningKey.from_private(ec.generate_private_key(ec.SECP256R1()), clock.now())
        return cls([key], max_token_lifetime=max_token_lifetime, skew=skew)

    def _replace(self, keys: tuple[SigningKey, ...]) -> None:
        active = [key for key in keys if key.retired_at is None]
        if len(active) != 1:
            raise KeyringError(f"a keyring needs exactly one active key, found {len(active)}")
        by_kid = {key.kid: key for key in keys}
        if len(by_kid) != len(keys):
            raise KeyringError("duplicate kid in keyring")
        # Each assignment is atomic; readers use one attribute per lookup, never both.
        self._by_kid = by_kid
        self._keys = keys

    @property
    def keys(self) -> tuple[SigningKey, ...]:
        return self._keys

    @property
    def active(self) -> SigningKey:
        for key in self._keys:
            if key.retired_at is None:
                return key
        raise KeyringError("keyring has no active key")  # unreachable: _replace guarantees one

    def adopt(self, other: Keyring) -> None:
        """Take over ``other``'s keys in place (a keyring reloaded from disk after a rotation
        by another process), so every issuer and validator holding this object sees them."""
        with self._lock:
            self._replace(other.keys)

    def rotate(self, now: datetime) -> SigningKey:
        """Create a new active key; the old one is retired at ``now`` and kept for verifying."""
        with self._lock:
            current = self.active
            if now < current.created_at:
                raise KeyringError("refusing to rotate to a time before the active key's creation")
            fresh = SigningKey.from_private(ec.generate_private_key(ec.SECP256R1()), now)
            retired = replace(current, retired_at=now)
            others = tuple(key for key in self._keys if key.kid != current.kid)
            self._replace((*others, retired, fresh))
            return fresh

    def prune(self, now: datetime) -> tuple[str, ...]:
        """Forget retired keys no token can still depend on; returns the dropped kids."""
        with self._lock:
            keep = tuple(
                key
                for key in self._keys
                if key.publishable(now, self.max_token_lifetime, self.skew)
            )
            dropped = tuple(key.kid for key in self._keys if key not in keep)
            self._replace(keep)
            return dropped

    def withdraw(self, kid: str, now: datetime) -> SigningKey:
        """Remove a key at once, e.g. after a compromise: every token it signed stops
        validating on the next call, cached or not. If it was the active key, a fresh key takes
        over. Returns the active key afterwards."""
        with self._lock:
            if kid not in self._by_kid:
                raise KeyringError("no such key")
            remaining = tuple(key for key in self._keys if key.kid != kid)
            if not any(key.retired_at is None for key in remaining):
                fresh = SigningKey.from_private(ec.generate_private_key(ec.SECP256R1()), now)
                remaining = (*remaining, fresh)
            self._replace(remaining)
            return self.active

    def jwks(
        self, now: datetime, max_token_lifetime: timedelta | None = None
    ) -> dict[str, list[dict[str, str]]]:
        """The public JWK Set: public parts only, every key whose tokens may still be valid."""
        lifetime = self.max_token_lifetime if max_token_lifetime is None else max_token_lifetime
        return {
            "keys": [
                key.public_jwk() for key in self._keys if key.publishable(now, lifetime, self.skew)
            ]
        }

    def verification_key(
        self, kid: object, now: datetime, max_token_lifetime: timedelta | None = None
    ) -> ECKey | None:
        """The public key for ``kid`` if it is ours and still publishable, else ``None``."""
        if not isinstance(kid, str):
            return None
        key = self._by_kid.get(kid)
        lifetime = self.max_token_lifetime if max_token_lifetime is None else max_token_lifetime
        if key is None or not key.publishable(now, lifetime, self.skew):
            return None
        return key.public_key

    def save(self, directory: Path, passphrase: bytes) -> None:
        """Write every key, encrypted with ``passphrase``; see :mod:`.keyfiles` for the layout."""
        stored = [
            StoredKey(key.kid, _private_of(key), key.created_at, key.retired_at)
            for key in self._keys
        ]
        write_keys(directory, stored, passphrase)

    @classmethod
    def load(
        cls,
        directory: Path,
        passphrase: bytes,
        *,
        max_token_lifetime: timedelta = DEFAULT_MAX_TOKEN_LIFETIME,
        skew: timedelta = DEFAULT_SKEW,
    ) -> Keyring:
        keys: list[SigningKey] = []
        for stored in read_keys(directory, passphrase):
            key = SigningKey.from_private(stored.private_key, stored.created_at, stored.retired_at)
            if key.kid != stored.kid:
                raise KeyringError(f"key file {stored.kid}.pem does not match its kid")
            keys.append(key)
        return cls(keys, max_token_lifetime=max_token_lifetime, skew=skew)


def _private_of(key: SigningKey) -> ec.EllipticCurvePrivateKey:
    private = key.private_key.private_key
    if private is None:
        raise KeyringError(f"signing key {key.kid} has no private part")
    return private
