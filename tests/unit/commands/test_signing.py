"""The command service's key: created once, encrypted at rest, and usable for commands only."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fleetward.commands.envelope import COMMAND_CONTEXT, RESULT_CONTEXT
from fleetward.commands.signing import (
    KEY_FILE,
    CommandSigner,
    CommandSignerError,
    command_key_directory,
)
from fleetward.core.datakey import DataKey
from fleetward.settings import Settings

PASSPHRASE = b"p" * 32


def test_created_on_first_use_encrypted_and_private(settings: Settings) -> None:
    data_key = DataKey(os.urandom(32))
    directory = command_key_directory(settings)
    assert not directory.exists()
    signer = CommandSigner.load_or_create(settings, data_key)
    assert directory == settings.data_dir / "command-key"
    assert directory.stat().st_mode & 0o777 == 0o700
    key_file = directory / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    again = CommandSigner.load_or_create(settings, data_key)
    assert again.key_id == signer.key_id
    # Another data key cannot open it: the passphrase is derived from the data key.
    with pytest.raises(CommandSignerError, match="does not load"):
        CommandSigner.load_or_create(settings, DataKey(os.urandom(32)))


def test_key_id_names_the_public_key() -> None:
    signer = CommandSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))
    raw = signer.public_key.public_bytes_raw()
    assert signer.key_id == "cmd-" + hashlib.sha256(raw).hexdigest()[:16]
    assert signer.verifying_keys() == {signer.key_id: signer.public_key}
    loaded = serialization.load_pem_public_key(signer.public_key_pem.encode())
    assert isinstance(loaded, ed25519.Ed25519PublicKey) and loaded.public_bytes_raw() == raw
    assert "PRIVATE" not in repr(signer) and signer.key_id in repr(signer)


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (RESULT_CONTEXT + b"x", "a vehicle's result: the platform must never vouch for one"),
        (b"fleetward-device-handshake-v1\x00", "a handshake signature input"),
        (b"", "an empty message"),
        (COMMAND_CONTEXT[:-1], "the label without its terminator"),
    ],
)
def test_signs_command_inputs_only(data: bytes, why: str) -> None:
    signer = CommandSigner.generate()
    with pytest.raises(ValueError, match="command envelopes only"):
        signer.sign(data)
    signature = signer.sign(COMMAND_CONTEXT + b"frame")
    signer.public_key.verify(signature, COMMAND_CONTEXT + b"frame")


def test_a_readable_key_file_is_refused(tmp_path: Path) -> None:
    CommandSigner.generate().save(tmp_path / "command-key", PASSPHRASE)
    (tmp_path / "command-key" / KEY_FILE).chmod(0o640)
    with pytest.raises(CommandSignerError, match="readable"):
        CommandSigner.load(tmp_path / "command-key", PASSPHRASE)


def test_a_key_of_another_type_is_refused(tmp_path: Path) -> None:
    # A P-256 key swapped in on disk (encrypted with the right passphrase) is not a command key.
    directory = tmp_path / "command-key"
    directory.mkdir(mode=0o700)
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE),
    )
    (directory / KEY_FILE).write_bytes(pem)
    (directory / KEY_FILE).chmod(0o600)
    with pytest.raises(CommandSignerError, match="not an Ed25519 key"):
        CommandSigner.load(directory, PASSPHRASE)


def test_concurrent_first_use_yields_one_key(tmp_path: Path) -> None:
    directory = tmp_path / "command-key"
    with ThreadPoolExecutor(8) as pool:
        signers = list(
            pool.map(lambda _: CommandSigner.load_or_create_in(directory, PASSPHRASE), range(8))
        )
    assert len({signer.key_id for signer in signers}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["command-key"]  # no staging left


def test_save_refuses_to_overwrite(tmp_path: Path) -> None:
    first = CommandSigner.generate()
    first.save(tmp_path / "command-key", PASSPHRASE)
    with pytest.raises(OSError):  # noqa: PT011 - the rename loses, whatever errno says
        CommandSigner.generate().save(tmp_path / "command-key", PASSPHRASE)
    assert CommandSigner.load(tmp_path / "command-key", PASSPHRASE).key_id == first.key_id
    assert sorted(p.name for p in tmp_path.iterdir()) == ["command-key"]
