"""Revocation shared through the real Redis: two 'replicas' (two clients, two validators) see
a revocation at once; Redis failures refuse tokens (fail closed)."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from redis.asyncio import Redis

from conftest import require_service
from fleetward.core.clock import SystemClock
from fleetward.core.surfaces import Surface
from fleetward.identity.redis_revocations import RedisRevocations
from fleetward.identity.runtime import IdentityRuntime
from fleetward.identity.tokens import (
    AccessTokenIssuer,
    AccessTokenValidator,
    InvalidDpopProof,
    InvalidToken,
    Keyring,
)
from fleetward.identity.tokens.dpop_client import jwk_thumbprint, make_dpop_proof
from fleetward.settings import Settings

REDIS_URL = os.environ.get("FLEETWARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
async def redis_pair() -> AsyncIterator[tuple[Redis, Redis, str]]:
    require_service("Redis", REDIS_URL)
    first, second = Redis.from_url(REDIS_URL), Redis.from_url(REDIS_URL)
    prefix = f"fw:test:{secrets.token_hex(4)}:"
    try:
        yield first, second, prefix
    finally:
        keys = [k async for k in first.scan_iter(match=prefix + "*")]
        if keys:
            await first.delete(*keys)
        await first.aclose()
        await second.aclose()


def _replica(redis: Redis, prefix: str, keyring: Keyring) -> AccessTokenValidator:
    return AccessTokenValidator(
        keyring,
        "https://fw.test",
        SystemClock(),
        RedisRevocations(redis, prefix=prefix),
        cache_size=1000,
    )


def _issue(keyring: Keyring, **changes: Any) -> str:
    issuer = AccessTokenIssuer(keyring, "https://fw.test", SystemClock())
    kwargs: dict[str, Any] = {
        "subject": "usr_a",
        "client_id": "cli_a",
        "tenant": "ten_a",
        "surface": Surface.FLEET,
        "scopes": ["fleet:bulk_command"],
        "auth_time": SystemClock().now(),
        "acr": "x",
        "amr": ["pwd"],
        "token_family": "fam_a",
        "subject_type": "user",
    }
    kwargs.update(changes)
    return issuer.issue(**kwargs).token


@pytest.mark.parametrize(
    ("kind", "subject", "reason"),
    [
        ("revoke_user", "usr_a", "user-revoked"),  # a compromised account
        ("revoke_client", "cli_a", "client-revoked"),  # a leaked client registration
        ("revoke_tenant", "ten_a", "tenant-revoked"),  # a whole customer suspended
        ("revoke_family", "fam_a", "family-revoked"),  # refresh token reuse detected
    ],
)
async def test_revocation_on_one_replica_refuses_on_the_other(
    redis_pair: tuple[Redis, Redis, str], kind: str, subject: str, reason: str
) -> None:
    first, second, prefix = redis_pair
    keyring = Keyring.generate(SystemClock())
    token = _issue(keyring)
    replica_b = _replica(second, prefix, keyring)
    assert (await replica_b.validate(token, surface=Surface.FLEET)).sub == "usr_a"  # cached now
    await getattr(RedisRevocations(first, prefix=prefix), kind)(subject, SystemClock().now())
    with pytest.raises(InvalidToken) as refused:
        await replica_b.validate(token, surface=Surface.FLEET)
    assert refused.value.reason == "revoked"


async def test_jti_revocation_and_unrelated_tokens(redis_pair: tuple[Redis, Redis, str]) -> None:
    first, second, prefix = redis_pair
    keyring = Keyring.generate(SystemClock())
    victim, bystander = _issue(keyring), _issue(keyring, subject="usr_b", token_family="fam_b")
    replica = _replica(second, prefix, keyring)
    claims = await replica.validate(victim, surface=Surface.FLEET)
    await RedisRevocations(first, prefix=prefix).revoke_jti(claims.jti, claims.expires_at)
    with pytest.raises(InvalidToken):
        await replica.validate(victim, surface=Surface.FLEET)
    assert (await replica.validate(bystander, surface=Surface.FLEET)).sub == "usr_b"


async def test_a_revoked_jti_outlives_the_token_by_the_skew(
    redis_pair: tuple[Redis, Redis, str],
) -> None:
    # Verifiers accept a token until its expiry plus their leeway (at most the skew): the
    # revocation must live that long, not just until the expiry.
    first, _second, prefix = redis_pair
    expires = SystemClock().now() + timedelta(seconds=5)
    await RedisRevocations(first, prefix=prefix, skew=timedelta(seconds=60)).revoke_jti(
        "jti_skew", expires
    )
    assert await first.ttl(f"{prefix}jti:jti_skew") >= 60


async def test_epochs_only_move_forward(redis_pair: tuple[Redis, Redis, str]) -> None:
    first, _second, prefix = redis_pair
    store = RedisRevocations(first, prefix=prefix)
    now = SystemClock().now()
    await store.revoke_user("usr_c", now)
    # Concurrent revocations with older times (a slow replica) never lower the epoch.
    await asyncio.gather(*(store.revoke_user("usr_c", now - timedelta(hours=1)) for _ in range(20)))
    assert int(await first.get(f"{prefix}user:usr_c")) == int(now.timestamp())


async def test_redis_down_fails_closed() -> None:
    keyring = Keyring.generate(SystemClock())
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    validator = _replica(dead, "fw:x:", keyring)
    with pytest.raises(InvalidToken) as refused:
        await validator.validate(_issue(keyring), surface=Surface.FLEET)
    assert refused.value.reason == "revocation-unavailable"
    await dead.aclose()


async def test_revoke_to_first_refusal_time(redis_pair: tuple[Redis, Redis, str]) -> None:
    """Measures (not asserts) the time from revoke on one replica to the first refusal on
    another; the figure is reported in docs/identity.md. Timing is never a pass condition."""
    first, second, prefix = redis_pair
    keyring = Keyring.generate(SystemClock())
    token = _issue(keyring, subject="usr_t")
    replica = _replica(second, prefix, keyring)
    await replica.validate(token, surface=Surface.FLEET)
    started = time.perf_counter()
    await RedisRevocations(first, prefix=prefix).revoke_user("usr_t", SystemClock().now())
    with pytest.raises(InvalidToken):
        await replica.validate(token, surface=Surface.FLEET)
    elapsed_ms = (time.perf_counter() - started) * 1000
    print(f"revoke-to-first-refusal: {elapsed_ms:.2f} ms")


async def test_runtime_uses_redis_when_configured(tmp_path: Path) -> None:
    require_service("Redis", REDIS_URL)
    clock = SystemClock()
    settings = Settings(data_dir=tmp_path, redis_url=REDIS_URL)
    replica_a = IdentityRuntime.build(settings, clock)
    replica_b = IdentityRuntime.build(settings, clock)  # same keys, its own process state
    assert isinstance(replica_a.revocations, RedisRevocations)
    token = replica_a.tokens.issue(
        subject=f"usr_{secrets.token_hex(4)}",
        client_id="cli_r",
        tenant="ten_r",
        surface=Surface.MOBILE,
        scopes=["vehicle:read_status"],
        auth_time=clock.now(),
        acr="x",
        amr=["pwd"],
        token_family=None,
        subject_type="user",
    )
    await replica_b.validator.validate(token.token, surface=Surface.MOBILE)
    await replica_a.revocations.revoke_user(token.claims.sub, clock.now())
    try:
        with pytest.raises(InvalidToken):
            await replica_b.validator.validate(token.token, surface=Surface.MOBILE)
    finally:
        await replica_a.close()
        await replica_b.close()


async def test_a_dpop_proof_seen_by_one_replica_is_refused_by_another(tmp_path: Path) -> None:
    # With Redis configured, the replicas share the DPoP replay cache: a captured proof and
    # token replayed to another replica within the proof's lifetime are refused there.
    require_service("Redis", REDIS_URL)
    clock = SystemClock()
    settings = Settings(data_dir=tmp_path, redis_url=REDIS_URL)
    replica_a = IdentityRuntime.build(settings, clock)
    replica_b = IdentityRuntime.build(settings, clock)
    key = ec.generate_private_key(ec.SECP256R1())
    url = "https://api.fleetward.test/mobile/v1/me"
    token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ1c3JfMSJ9.c2lnbmF0dXJl"  # shape only (ath)
    proof = make_dpop_proof(key, "GET", url, token, iat=clock.now())
    expected = jwk_thumbprint(key)
    try:
        assert await replica_a.dpop.verify(
            proof, method="GET", url=url, access_token=token, expected_jkt=expected
        )
        with pytest.raises(InvalidDpopProof) as refused:
            await replica_b.dpop.verify(
                proof, method="GET", url=url, access_token=token, expected_jkt=expected
            )
        assert refused.value.reason == "replayed"
    finally:
        await replica_a.close()
        await replica_b.close()
