"""The platform device CA: created on first use, encrypted at rest, tamper-evident."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from fleetward.core.clock import FrozenClock
from fleetward.core.datakey import DataKey
from fleetward.devices.ca import (
    CERTIFICATE_FILE,
    KEY_FILE,
    DeviceCa,
    DeviceCaError,
    ca_directory,
    load_device_ca,
)
from fleetward.gateway.device_client import generate_key
from fleetward.settings import Settings

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
PASSPHRASE = b"p" * 32
DEVICE = "dev_" + "d" * 26
VEHICLE = "veh_" + "v" * 26


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


def test_created_on_first_use_with_the_key_encrypted(
    settings: Settings, clock: FrozenClock
) -> None:
    data_key = DataKey(os.urandom(32))
    directory = ca_directory(settings)
    assert not directory.exists()
    ca = load_device_ca(settings, data_key, clock)
    assert directory.stat().st_mode & 0o777 == 0o700
    key_file = directory / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().startswith("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    usage = ca.certificate.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and not usage.digital_signature
    again = load_device_ca(settings, data_key, clock)
    assert again.certificate == ca.certificate
    # Another data key cannot open it: the passphrase is derived from the data key.
    with pytest.raises(DeviceCaError):
        load_device_ca(settings, DataKey(os.urandom(32)), clock)


def test_a_swapped_certificate_is_detected(tmp_path: Path, clock: FrozenClock) -> None:
    DeviceCa.generate(clock).save(tmp_path / "ca", PASSPHRASE)
    DeviceCa.generate(clock).save(tmp_path / "other", PASSPHRASE)
    (tmp_path / "ca" / CERTIFICATE_FILE).write_bytes(
        (tmp_path / "other" / CERTIFICATE_FILE).read_bytes()
    )
    # Trusting the swapped certificate would make the gateway accept another issuer's devices.
    with pytest.raises(DeviceCaError, match="does not match"):
        DeviceCa.load(tmp_path / "ca", PASSPHRASE)


def test_a_readable_key_file_is_refused(tmp_path: Path, clock: FrozenClock) -> None:
    DeviceCa.generate(clock).save(tmp_path / "ca", PASSPHRASE)
    (tmp_path / "ca" / KEY_FILE).chmod(0o640)
    with pytest.raises(DeviceCaError, match="readable"):
        DeviceCa.load(tmp_path / "ca", PASSPHRASE)


def test_concurrent_first_use_yields_one_ca(tmp_path: Path, clock: FrozenClock) -> None:
    directory = tmp_path / "device-ca"
    with ThreadPoolExecutor(8) as pool:
        cas = list(
            pool.map(lambda _: DeviceCa.load_or_create(directory, PASSPHRASE, clock), range(8))
        )
    fingerprints = {ca.certificate.fingerprint(hashes.SHA256()) for ca in cas}
    assert len(fingerprints) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["device-ca"]  # no staging left over


def test_issues_only_leaves_and_knows_its_own(clock: FrozenClock) -> None:
    ca, other = DeviceCa.generate(clock), DeviceCa.generate(clock)
    key = generate_key()
    leaf = ca.issue(key.public_key(), device_id=DEVICE, vehicle_id=VEHICLE, now=T0)
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is False
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=365)
    assert ca.issued(leaf) and not other.issued(leaf)
    stranger = other.issue(key.public_key(), device_id=DEVICE, vehicle_id=VEHICLE, now=T0)
    assert not ca.issued(stranger)
