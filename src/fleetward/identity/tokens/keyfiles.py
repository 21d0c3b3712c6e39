"""On-disk form of the signing keyring.

Layout of the key directory (mode 0700)::

    manifest.json      {"format": "fleetward-keyring/1",
                        "keys": [{"kid": ..., "created_at": ..., "retired_at": ... | null}]}
    <kid>.pem          PKCS#8 PEM, encrypted with the passphrase (BestAvailableEncryption)

Every file is created 0600 with ``O_EXCL`` under a temporary name and renamed into place, so a
crash never leaves a half-written key and a pre-planted symlink is never followed. The
manifest is written last: it is the commit point, and key files it no longer names (pruned
keys) are deleted after it, so retired private keys do not linger on disk.

Loading refuses directories or files that group or others may access: a key store that was
ever world-readable must be treated as leaked, not silently used.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetward.identity.tokens.compact import dumps_compact_json, loads_object

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = "fleetward-keyring/1"
# RFC 7638 SHA-256 thumbprints are 43 base64url characters; anything else is not our file name.
_KID = re.compile(r"[A-Za-z0-9_-]{43}")
_MAX_FILE_BYTES = 1 << 20
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class KeyringError(Exception):
    """The keyring cannot be saved or loaded. Operator-facing; never shown to API callers."""


@dataclass(frozen=True, slots=True)
class StoredKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey = field(repr=False)
    created_at: datetime
    retired_at: datetime | None


def write_keys(directory: Path, keys: Sequence[StoredKey], passphrase: bytes) -> None:
    if not passphrase:
        raise KeyringError("a non-empty passphrase is required to save signing keys")
    _prepare_directory(directory)
    entries: list[dict[str, Any]] = []
    for key in keys:
        if _KID.fullmatch(key.kid) is None:
            raise KeyringError("refusing to save a key whose kid is not an RFC 7638 thumbprint")
        pem = key.private_key.private_bytes(
            encoding=serialization.Encoding.PEM,
            format=serialization.PrivateFormat.PKCS8,
            encryption_algorithm=serialization.BestAvailableEncryption(passphrase),
        )
        _write_private(directory, f"{key.kid}.pem", pem)
        entries.append(
            {
                "kid": key.kid,
                "created_at": key.created_at.astimezone(UTC).isoformat(),
                "retired_at": None
                if key.retired_at is None
                else key.retired_at.astimezone(UTC).isoformat(),
            }
        )
    manifest = {"format": MANIFEST_FORMAT, "keys": entries}
    _write_private(directory, MANIFEST_NAME, dumps_compact_json(manifest))
    kept = {f"{key.kid}.pem" for key in keys}
    for path in directory.iterdir():
        if path.suffix == ".pem" and _KID.fullmatch(path.stem) and path.name not in kept:
            path.unlink()
    _fsync_directory(directory)


def read_keys(directory: Path, passphrase: bytes) -> list[StoredKey]:
    _check_private(directory, is_dir=True)
    try:
        manifest = loads_object(_read_private(directory / MANIFEST_NAME))
    except ValueError as exc:
        raise KeyringError("the keyring manifest is not valid JSON") from exc
    if manifest.get("format") != MANIFEST_FORMAT or not isinstance(manifest.get("keys"), list):
        raise KeyringError(f"the keyring manifest is not in format {MANIFEST_FORMAT}")
    return [_read_entry(directory, entry, passphrase) for entry in manifest["keys"]]


def _read_entry(directory: Path, entry: object, passphrase: bytes) -> StoredKey:
    if not isinstance(entry, dict):
        raise KeyringError("a keyring manifest entry is not an object")
    kid = entry.get("kid")
    if not isinstance(kid, str) or _KID.fullmatch(kid) is None:
        # Also what keeps a manifest from naming "../../somewhere" as a key file.
        raise KeyringError("a keyring manifest entry has an invalid kid")
    created_at = _parse_time(entry.get("created_at"), kid)
    retired_raw = entry.get("retired_at")
    retired_at = None if retired_raw is None else _parse_time(retired_raw, kid)
    pem = _read_private(directory / f"{kid}.pem")
    try:
        private_key = serialization.load_pem_private_key(pem, password=passphrase)
    except TypeError as exc:
        raise KeyringError(f"signing key {kid} is not encrypted; refusing to load it") from exc
    except ValueError as exc:
        raise KeyringError(
            f"cannot decrypt signing key {kid}: wrong passphrase or damaged key file"
        ) from exc
    if not isinstance(private_key, ec.EllipticCurvePrivateKey) or not isinstance(
        private_key.curve, ec.SECP256R1
    ):
        raise KeyringError(f"signing key {kid} is not a P-256 key")
    return StoredKey(kid, private_key, created_at, retired_at)


def _parse_time(value: object, kid: str) -> datetime:
    if not isinstance(value, str):
        raise KeyringError(f"signing key {kid} has an invalid timestamp")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise KeyringError(f"signing key {kid} has an invalid timestamp") from exc
    if parsed.tzinfo is None:
        raise KeyringError(f"signing key {kid} has a timestamp without a time zone")
    return parsed.astimezone(UTC)


def _prepare_directory(directory: Path) -> None:
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask; be exact
    _check_private(directory, is_dir=True)


def _check_private(path: Path, *, is_dir: bool) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError as exc:
        raise KeyringError(f"{path} does not exist") from exc
    if is_dir != stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode):
        raise KeyringError(f"{path} is not a plain {'directory' if is_dir else 'file'}")
    if info.st_mode & 0o077:
        raise KeyringError(f"{path} is accessible to group or others; expected mode 0700/0600")
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        raise KeyringError(f"{path} is not owned by the current user")


def _read_private(path: Path) -> bytes:
    _check_private(path, is_dir=False)
    fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(_MAX_FILE_BYTES + 1)
    if len(data) > _MAX_FILE_BYTES:
        raise KeyringError(f"{path} is too large to be a keyring file")
    return data


def _write_private(directory: Path, name: str, data: bytes) -> None:
    final = directory / name
    temporary = directory / f".{name}.tmp"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()  # leftover of a crashed save; O_EXCL below must not trip on it
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, final)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
