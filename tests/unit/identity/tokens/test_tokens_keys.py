"""Keyring: rotation, JWKS publication windows, kid lookups, encrypted persistence."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleetward.core.clock import FrozenClock
from fleetward.identity.tokens.keyfiles import MANIFEST_NAME
from fleetward.identity.tokens.keys import Keyring, KeyringError, SigningKey

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PASSPHRASE = b"correct horse battery staple"
# Retired keys stay publishable for max token lifetime (15 min) + skew (60 s) by default.
WINDOW = timedelta(minutes=15) + timedelta(seconds=60)


def rfc7638_thumbprint(jwk: dict[str, str]) -> str:
    """Independent RFC 7638 computation, so the test does not trust the code under test."""
    canonical = json.dumps(
        {name: jwk[name] for name in ("crv", "kty", "x", "y")},
        separators=(",", ":"),
        sort_keys=True,
    )
    digest = hashlib.sha256(canonical.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture
def umask_zero() -> Iterator[None]:
    # A permissive umask must not leak into key file modes.
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)


def test_generate_has_one_active_key_with_thumbprint_kid() -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    (key,) = keyring.keys
    assert keyring.active is key
    assert key.retired_at is None
    assert key.created_at == T0
    assert key.kid == rfc7638_thumbprint(key.public_jwk())


def test_rotate_retires_old_key_and_activates_a_new_one() -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    old = keyring.active
    fresh = keyring.rotate(T0 + timedelta(hours=1))
    assert keyring.active is fresh
    assert fresh.kid != old.kid
    assert fresh.created_at == T0 + timedelta(hours=1)
    retired = next(key for key in keyring.keys if key.kid == old.kid)
    assert retired.retired_at == T0 + timedelta(hours=1)


def test_rotate_refuses_time_before_active_key() -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    with pytest.raises(KeyringError):
        keyring.rotate(T0 - timedelta(seconds=1))


def test_jwks_lists_public_parts_only() -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    keyring.rotate(T0 + timedelta(minutes=1))
    jwks = keyring.jwks(T0 + timedelta(minutes=2), timedelta(minutes=15))
    assert len(jwks["keys"]) == 2
    for jwk in jwks["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg", "use"}
        assert "d" not in jwk
        assert jwk["alg"] == "ES256"
        assert jwk["use"] == "sig"
        assert jwk["kid"] == rfc7638_thumbprint(jwk)


def test_retired_key_published_until_lifetime_plus_skew_then_dropped() -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    old_kid = keyring.active.kid
    retired_at = T0 + timedelta(minutes=1)
    keyring.rotate(retired_at)

    def published(at: datetime) -> set[str]:
        return {jwk["kid"] for jwk in keyring.jwks(at, timedelta(minutes=15))["keys"]}

    assert old_kid in published(retired_at + WINDOW)
    assert old_kid not in published(retired_at + WINDOW + timedelta(seconds=1))
    assert keyring.active.kid in published(retired_at + timedelta(days=365))


def test_jwks_window_follows_the_lifetime_argument() -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    old_kid = keyring.active.kid
    keyring.rotate(T0)
    at = T0 + timedelta(minutes=5)
    assert old_kid in {k["kid"] for k in keyring.jwks(at, timedelta(minutes=15))["keys"]}
    assert old_kid not in {k["kid"] for k in keyring.jwks(at, timedelta(minutes=1))["keys"]}


@pytest.mark.parametrize(
    "kid",
    [
        "../../etc/passwd",  # path traversal: kids are dictionary keys, never paths
        "' OR 1=1 --",  # injection: never reaches a query
        "https://attacker.example/jwks.json",  # a URL is never fetched
        "",  # empty kid
        None,  # non-string kid from a hostile header
        ["a"],  # list kid from a hostile header
    ],
)
def test_verification_key_refuses_unknown_kids(kid: object) -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    assert keyring.verification_key(kid, T0) is None


def test_verification_key_serves_retired_key_only_inside_window() -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    old = keyring.active
    keyring.rotate(T0)
    key = keyring.verification_key(old.kid, T0 + WINDOW)
    assert key is not None
    assert key.thumbprint() == old.kid
    assert not key.is_private  # verification never hands out the private key
    assert keyring.verification_key(old.kid, T0 + WINDOW + timedelta(seconds=1)) is None


def test_prune_drops_only_aged_out_keys() -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    first = keyring.active.kid
    keyring.rotate(T0)
    second = keyring.active.kid
    keyring.rotate(T0 + timedelta(minutes=10))
    assert keyring.prune(T0 + WINDOW + timedelta(seconds=1)) == (first,)
    assert {key.kid for key in keyring.keys} == {second, keyring.active.kid}


def test_withdraw_active_key_installs_a_fresh_one() -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    leaked = keyring.active.kid
    active = keyring.withdraw(leaked, T0 + timedelta(minutes=1))
    assert active.kid != leaked
    assert keyring.verification_key(leaked, T0 + timedelta(minutes=1)) is None
    assert [key.kid for key in keyring.keys] == [active.kid]


def test_keyring_requires_exactly_one_active_key() -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    key = keyring.active
    retired = SigningKey(key.kid, key.private_key, key.public_key, T0, retired_at=T0)
    with pytest.raises(KeyringError, match="exactly one active"):
        Keyring([retired])
    other = Keyring.generate(FrozenClock(T0)).active
    with pytest.raises(KeyringError, match="exactly one active"):
        Keyring([key, other])


def test_signing_key_repr_has_no_key_material() -> None:
    key = Keyring.generate(FrozenClock(T0)).active
    private_d = key.private_key.as_dict(private=True)["d"]
    assert isinstance(private_d, str)
    assert private_d not in repr(key)
    assert key.kid in repr(key)


def test_save_load_round_trip(tmp_path: Path) -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    keyring.rotate(T0 + timedelta(minutes=3))
    directory = tmp_path / "keys"
    keyring.save(directory, PASSPHRASE)

    loaded = Keyring.load(directory, PASSPHRASE)
    assert [(k.kid, k.created_at, k.retired_at) for k in loaded.keys] == [
        (k.kid, k.created_at, k.retired_at) for k in keyring.keys
    ]
    assert loaded.active.kid == keyring.active.kid
    assert loaded.jwks(T0) == keyring.jwks(T0)
    # The private halves survived too: a loaded key signs what the original key verifies.
    message = b"round trip"
    loaded_private = loaded.active.private_key.private_key
    assert loaded_private is not None
    signature = loaded_private.sign(message, ec.ECDSA(hashes.SHA256()))
    keyring.active.public_key.public_key.verify(signature, message, ec.ECDSA(hashes.SHA256()))


def test_saved_files_are_private_and_encrypted(tmp_path: Path, umask_zero: None) -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    directory = tmp_path / "keys"
    keyring.save(directory, PASSPHRASE)

    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    names = sorted(path.name for path in directory.iterdir())
    assert names == sorted([MANIFEST_NAME, f"{keyring.active.kid}.pem"])
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name
    pem = (directory / f"{keyring.active.kid}.pem").read_bytes()
    assert pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    assert manifest["keys"] == [
        {"kid": keyring.active.kid, "created_at": T0.isoformat(), "retired_at": None}
    ]


def test_save_removes_files_of_pruned_keys(tmp_path: Path) -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    old = keyring.active.kid
    keyring.rotate(T0)
    directory = tmp_path / "keys"
    keyring.save(directory, PASSPHRASE)
    assert (directory / f"{old}.pem").exists()
    keyring.prune(T0 + WINDOW + timedelta(seconds=1))
    keyring.save(directory, PASSPHRASE)
    assert not (directory / f"{old}.pem").exists()  # no retired private key left behind


def test_wrong_passphrase_fails_clearly(tmp_path: Path) -> None:
    Keyring.generate(FrozenClock(T0)).save(tmp_path / "keys", PASSPHRASE)
    with pytest.raises(KeyringError, match="wrong passphrase"):
        Keyring.load(tmp_path / "keys", b"not the passphrase")


def test_empty_passphrase_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="passphrase"):
        Keyring.generate(FrozenClock(T0)).save(tmp_path / "keys", b"")


def test_unencrypted_key_file_is_refused(tmp_path: Path) -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    directory = tmp_path / "keys"
    keyring.save(directory, PASSPHRASE)
    private = keyring.active.private_key.private_key
    assert private is not None
    plain = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (directory / f"{keyring.active.kid}.pem").write_bytes(plain)
    with pytest.raises(KeyringError, match="not encrypted"):
        Keyring.load(directory, PASSPHRASE)


@pytest.mark.parametrize("target", ["directory", "key", "manifest"])
def test_load_refuses_group_or_world_access(tmp_path: Path, target: str) -> None:
    keyring = Keyring.generate(FrozenClock(T0))
    directory = tmp_path / "keys"
    keyring.save(directory, PASSPHRASE)
    path = {
        "directory": directory,
        "key": directory / f"{keyring.active.kid}.pem",
        "manifest": directory / MANIFEST_NAME,
    }[target]
    path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o044)
    with pytest.raises(KeyringError, match="group or others"):
        Keyring.load(directory, PASSPHRASE)


def test_save_refuses_existing_world_accessible_directory(tmp_path: Path) -> None:
    directory = tmp_path / "shared"
    directory.mkdir()
    directory.chmod(0o755)
    with pytest.raises(KeyringError, match="group or others"):
        Keyring.generate(FrozenClock(T0)).save(directory, PASSPHRASE)


def _rewrite_manifest(directory: Path, kid: str) -> None:
    manifest = json.loads((directory / MANIFEST_NAME).read_text())
    manifest["keys"][0]["kid"] = kid
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest))


def test_manifest_cannot_point_outside_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    Keyring.generate(FrozenClock(T0)).save(directory, PASSPHRASE)
    _rewrite_manifest(directory, "../../../../etc/passwd")
    with pytest.raises(KeyringError, match="invalid kid"):
        Keyring.load(directory, PASSPHRASE)


def test_key_file_must_match_its_kid(tmp_path: Path) -> None:
    # A swapped key file (attacker's key under our kid) must not be loaded as ours.
    directory = tmp_path / "keys"
    keyring = Keyring.generate(FrozenClock(T0))
    keyring.save(directory, PASSPHRASE)
    other_dir = tmp_path / "other"
    other = Keyring.generate(FrozenClock(T0))
    other.save(other_dir, PASSPHRASE)
    os.replace(other_dir / f"{other.active.kid}.pem", directory / f"{keyring.active.kid}.pem")
    with pytest.raises(KeyringError, match="does not match its kid"):
        Keyring.load(directory, PASSPHRASE)
