"""The data key: secrets at rest are bound to their purpose and the key file is private."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from fleetward.core.datakey import DataKey, DataKeyError


def test_round_trip_and_purpose_binding() -> None:
    key = DataKey(b"k" * 32)
    sealed = key.encrypt(b"JBSWY3DPEHPK3PXP", purpose="totp:usr_1")
    assert key.decrypt(sealed, purpose="totp:usr_1") == b"JBSWY3DPEHPK3PXP"
    # A ciphertext copied to another user's row does not decrypt there.
    with pytest.raises(DataKeyError):
        key.decrypt(sealed, purpose="totp:usr_2")
    # Nonces are random: the same plaintext never encrypts the same way twice.
    assert sealed != key.encrypt(b"JBSWY3DPEHPK3PXP", purpose="totp:usr_1")


@pytest.mark.parametrize(
    "mutate",
    [
        lambda b: b[:-1] + bytes([b[-1] ^ 1]),  # flipped tag bit
        lambda b: b"\x02" + b[1:],  # unknown version
        lambda b: b[:10],  # truncated
    ],
)
def test_tampered_ciphertext_is_refused(mutate: object) -> None:
    key = DataKey(b"k" * 32)
    sealed = key.encrypt(b"secret", purpose="p")
    with pytest.raises(DataKeyError):
        key.decrypt(mutate(sealed), purpose="p")  # type: ignore[operator]


def test_file_is_created_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "data.key"
    first = DataKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    second = DataKey.load_or_create(path)
    assert second.decrypt(first.encrypt(b"x", purpose="p"), purpose="p") == b"x"
    assert first.derive("a") == second.derive("a") != first.derive("b")


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.key"
    DataKey.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(DataKeyError, match="readable"):
        DataKey.load_or_create(path)


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"short").decode()])
def test_bad_configured_keys_are_refused(text: str) -> None:
    with pytest.raises(DataKeyError):
        DataKey.from_base64(text)
