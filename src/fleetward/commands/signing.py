"""The command service's signing key: the only key a vehicle obeys.

An Ed25519 key in ``<data dir>/command-key/key.pem`` as encrypted PKCS#8 (passphrase derived
from the platform data key, purpose ``fleetward:command-key:v1``), mode 0600, created on first
use the way the device CA is (:mod:`fleetward.devices.ca`): written into a staging directory
that is renamed into place, so a crash leaves no half-written key and the loser of a race
between two processes reads the winner's key.

The key signs COMMAND frames only: :meth:`CommandSigner.sign` refuses any input that does not
start with the command context label, so this key can never be made to vouch for anything a
vehicle could take for another kind of message.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fleetward.commands.envelope import COMMAND_CONTEXT
from fleetward.core.datakey import DataKey
from fleetward.core.keydir import create_key_directory
from fleetward.settings import Settings

PASSPHRASE_PURPOSE: Final = "fleetward:command-key:v1"  # noqa: S105 - a KDF label, not a secret
DIRECTORY: Final = "command-key"
KEY_FILE: Final = "key.pem"
KEY_ID_PREFIX: Final = "cmd-"


class CommandSignerError(Exception):
    """The key on disk is unreadable, readable by others, does not decrypt, or is not Ed25519."""


def key_id_of(public_key: ed25519.Ed25519PublicKey) -> str:
    """``cmd-`` + the first 16 hex digits of SHA-256 of the raw 32-byte public key."""
    return KEY_ID_PREFIX + hashlib.sha256(public_key.public_bytes_raw()).hexdigest()[:16]


class CommandSigner:
    """Immutable after construction: safe to share between tasks and threads."""

    __slots__ = ("_key", "_key_id", "_public_key")

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self._public_key = key.public_key()
        self._key_id = key_id_of(self._public_key)

    def __repr__(self) -> str:
        return f"CommandSigner(key_id={self._key_id!r})"

    @property
    def key_id(self) -> str:
        return self._key_id

    @property
    def public_key(self) -> ed25519.Ed25519PublicKey:
        return self._public_key

    @property
    def public_key_pem(self) -> str:
        """What a vehicle is provisioned with (SubjectPublicKeyInfo PEM)."""
        return self._public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def verifying_keys(self) -> dict[str, ed25519.Ed25519PublicKey]:
        """key id -> public key: the trusted set a vehicle checks envelopes against."""
        return {self._key_id: self._public_key}

    def sign(self, data: bytes) -> bytes:
        """Ed25519 over ``data``, which must be a command signature input."""
        if not data.startswith(COMMAND_CONTEXT):
            raise ValueError("the command key signs command envelopes only")
        return self._key.sign(data)

    @classmethod
    def generate(cls) -> CommandSigner:
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, directory: Path, passphrase: bytes) -> CommandSigner:
        path = directory / KEY_FILE
        if path.stat().st_mode & 0o077:
            raise CommandSignerError(f"{path} must not be readable by group or others")
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), passphrase)
        except (ValueError, TypeError):
            raise CommandSignerError("the command key does not load (wrong data key?)") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise CommandSignerError("the command key is not an Ed25519 key")
        return cls(key)

    def save(self, directory: Path, passphrase: bytes) -> None:
        """Write the key into a new ``directory``; fails if it exists (core/keydir.py)."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        )
        create_key_directory(directory, {KEY_FILE: (pem, 0o600)})

    @classmethod
    def load_or_create_in(cls, directory: Path, passphrase: bytes) -> CommandSigner:
        if (directory / KEY_FILE).exists():
            return cls.load(directory, passphrase)
        signer = cls.generate()
        try:
            signer.save(directory, passphrase)
        except OSError:
            if (directory / KEY_FILE).exists():
                return cls.load(directory, passphrase)  # another process created it first
            raise
        return signer

    @classmethod
    def load_or_create(cls, settings: Settings, data_key: DataKey) -> CommandSigner:
        """The deployment's command key, created on first use."""
        return cls.load_or_create_in(
            command_key_directory(settings), data_key.derive(PASSPHRASE_PURPOSE)
        )


def command_key_directory(settings: Settings) -> Path:
    return settings.data_dir / DIRECTORY
