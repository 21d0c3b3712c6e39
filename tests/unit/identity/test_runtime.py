"""Signing keys survive restarts (encrypted on disk) and tokens validate across them."""

from __future__ import annotations

import stat
from datetime import timedelta

from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.runtime import IdentityRuntime, rotate_keyring
from fleetward.settings import Settings


async def test_restart_keeps_keys_and_tokens_valid(settings: Settings, clock: FrozenClock) -> None:
    first = IdentityRuntime.build(settings, clock)
    issued = first.tokens.issue(
        subject="usr_1",
        client_id="cli_1",
        tenant="ten_1",
        surface=Surface.MOBILE,
        scopes=["vehicle:read_status"],
        auth_time=clock.now(),
        acr="urn:fleetward:acr:mfa",
        amr=["pwd", "otp"],
        token_family=None,
        subject_type="user",
    )
    second = IdentityRuntime.build(settings, clock)
    assert second.keyring.active.kid == first.keyring.active.kid
    claims = await second.validator.validate(issued.token, surface=Surface.MOBILE)
    assert claims.sub == "usr_1"
    keys_dir = settings.data_dir / "keys"
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700
    for pem in keys_dir.glob("*.pem"):
        assert b"ENCRYPTED" in pem.read_bytes()


async def test_rotation_on_disk_is_adopted_by_a_running_runtime(
    settings: Settings, clock: FrozenClock
) -> None:
    running = IdentityRuntime.build(settings, clock)
    old_kid = running.keyring.active.kid
    before = running.tokens.issue(
        subject="usr_1",
        client_id="cli_1",
        tenant="ten_1",
        surface=Surface.MOBILE,
        scopes=["vehicle:read_status"],
        auth_time=clock.now(),
        acr="urn:fleetward:acr:mfa",
        amr=["pwd", "otp"],
        token_family=None,
        subject_type="user",
    )
    clock.advance(timedelta(minutes=1))
    new_kid = rotate_keyring(settings, clock)  # what `fleetward keys rotate` does
    assert new_kid != old_kid
    assert running.keyring.active.kid == old_kid  # not yet seen
    assert running.keys_watcher.refresh()
    assert not running.keys_watcher.refresh()  # nothing new the second time
    assert running.keyring.active.kid == new_kid
    # Tokens signed before the rotation still validate; the JWKS publishes both keys.
    claims = await running.validator.validate(before.token, surface=Surface.MOBILE)
    assert claims.sub == "usr_1"
    published = {key["kid"] for key in running.keyring.jwks(clock.now())["keys"]}
    assert {old_kid, new_kid} <= published
