"""The platform data key: encrypts secrets at rest (TOTP seeds, signing-key passphrases).

AES-256-GCM with a random 96-bit nonce per message and associated data that binds each
ciphertext to its purpose and owner, so a ciphertext copied to another row does not decrypt.
The key comes from ``FLEETWARD_DATA_KEY`` (base64, 32 bytes) or, on the embedded default,
from ``<data dir>/secrets/data.key`` created with mode 0600 on first use.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_NONCE = 12
_VERSION = b"\x01"


class DataKeyError(Exception):
    """The data key is missing, malformed, or a ciphertext does not authenticate."""


class DataKey:
    """Thread-safe (stateless after construction)."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise DataKeyError("the data key must be 32 bytes")
        self._aead = AESGCM(key)
        self._key = key

    @classmethod
    def from_base64(cls, text: str) -> DataKey:
        try:
            return cls(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise DataKeyError("FLEETWARD_DATA_KEY is not valid base64") from None

    @classmethod
    def load_or_create(cls, path: Path) -> DataKey:
        if path.exists():
            if path.stat().st_mode & 0o077:
                raise DataKeyError(f"{path} must not be readable by group or others")
            return cls(path.read_bytes())
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return cls(key)

    def derive(self, purpose: str) -> bytes:
        """A 32-byte subkey for ``purpose`` (HKDF-SHA256), e.g. the signing-key passphrase."""
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(
            self._key
        )

    def encrypt(self, plaintext: bytes, *, purpose: str) -> bytes:
        nonce = secrets.token_bytes(_NONCE)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext, purpose.encode())

    def decrypt(self, ciphertext: bytes, *, purpose: str) -> bytes:
        if len(ciphertext) < 1 + _NONCE + 16 or ciphertext[:1] != _VERSION:
            raise DataKeyError("ciphertext is malformed")
        nonce = ciphertext[1 : 1 + _NONCE]
        try:
            return self._aead.decrypt(nonce, ciphertext[1 + _NONCE :], purpose.encode())
        except InvalidTag:
            raise DataKeyError("ciphertext does not authenticate") from None
