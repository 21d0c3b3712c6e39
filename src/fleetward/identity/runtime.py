"""Identity services that live as long as the process: signing keys, token issue and
validation, revocation and DPoP replay state. Built by the composition root."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from redis.asyncio import Redis

from fleetward.core.clock import Clock
from fleetward.core.datakey import DataKey
from fleetward.identity.redis_replay import RedisReplayCache
from fleetward.identity.redis_revocations import RedisRevocations
from fleetward.identity.tokens import (
    AccessTokenIssuer,
    AccessTokenValidator,
    DpopVerifier,
    InMemoryReplayCache,
    InMemoryRevocations,
    Keyring,
)
from fleetward.settings import Settings

_KEYRING_PURPOSE = "fleetward:signing-keys:v1"


def load_data_key(settings: Settings) -> DataKey:
    if settings.data_key is not None:
        return DataKey.from_base64(settings.data_key.get_secret_value())
    return DataKey.load_or_create(settings.data_dir / "secrets" / "data.key")


def rotate_keyring(settings: Settings, clock: Clock) -> str:
    """Rotate the signing keys on disk: a new active key, the old one kept for verification
    until its tokens have expired, keys past that pruned. Running servers pick the change up
    through :class:`KeyringWatcher`. Returns the new key's kid."""
    directory = settings.data_dir / "keys"
    data_key = load_data_key(settings)
    keyring = load_keyring(directory, data_key, clock)
    fresh = keyring.rotate(clock.now())
    keyring.prune(clock.now())
    keyring.save(directory, data_key.derive(_KEYRING_PURPOSE))
    return fresh.kid


class KeyringWatcher:
    """Reloads the keyring when its manifest changes on disk (a rotation by the CLI or
    another replica sharing the directory). Keys only ever come from this local, encrypted
    directory, never from anything a caller sends."""

    def __init__(self, directory: Path, data_key: DataKey, keyring: Keyring) -> None:
        self._directory = directory
        self._data_key = data_key
        self._keyring = keyring
        self._seen = self._stamp()

    def _stamp(self) -> int | None:
        try:
            return (self._directory / "manifest.json").stat().st_mtime_ns
        except FileNotFoundError:
            return None

    def refresh(self) -> bool:
        """Adopt the keys on disk if they changed; True when it did."""
        stamp = self._stamp()
        if stamp is None or stamp == self._seen:
            return False
        loaded = Keyring.load(self._directory, self._data_key.derive(_KEYRING_PURPOSE))
        self._keyring.adopt(loaded)
        self._seen = stamp
        return True


def load_keyring(directory: Path, data_key: DataKey, clock: Clock) -> Keyring:
    """The signing keyring from disk, or a new one saved there on first start."""
    passphrase = data_key.derive(_KEYRING_PURPOSE)
    if (directory / "manifest.json").exists():
        return Keyring.load(directory, passphrase)
    keyring = Keyring.generate(clock)
    keyring.save(directory, passphrase)
    return keyring


@dataclass(frozen=True, slots=True)
class IdentityRuntime:
    data_key: DataKey
    keyring: Keyring
    issuer: str
    tokens: AccessTokenIssuer
    validator: AccessTokenValidator
    # In-process on the embedded default; Redis (shared by every replica) when configured.
    revocations: InMemoryRevocations | RedisRevocations
    dpop: DpopVerifier
    keys_watcher: KeyringWatcher

    @classmethod
    def build(cls, settings: Settings, clock: Clock) -> IdentityRuntime:
        data_key = load_data_key(settings)
        keyring = load_keyring(settings.data_dir / "keys", data_key, clock)
        issuer = settings.base_url
        revocations: InMemoryRevocations | RedisRevocations
        replay: InMemoryReplayCache | RedisReplayCache
        if settings.redis_url is None:
            revocations = InMemoryRevocations()
            replay = InMemoryReplayCache(clock)
        else:
            # Connections are made on first use, not here (nothing connects at build time).
            # One client for both: revocations and DPoP proofs seen by every replica.
            redis = Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=1.0)
            revocations = RedisRevocations(redis)
            replay = RedisReplayCache(redis)
        return cls(
            data_key=data_key,
            keyring=keyring,
            issuer=issuer,
            tokens=AccessTokenIssuer(
                keyring, issuer, clock, timedelta(minutes=settings.access_token_minutes)
            ),
            validator=AccessTokenValidator(keyring, issuer, clock, revocations),
            revocations=revocations,
            dpop=DpopVerifier(clock, replay),
            keys_watcher=KeyringWatcher(settings.data_dir / "keys", data_key, keyring),
        )

    async def close(self) -> None:
        """Release connections (the Redis revocation store's pool, when configured)."""
        if isinstance(self.revocations, RedisRevocations):
            await self.revocations.close()
