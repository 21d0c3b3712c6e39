"""The verified-token cache saves signature work and nothing else: it never lets through a
token that an uncached validation would refuse."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.identity.tokens import (
    AccessTokenClaims,
    AccessTokenIssuer,
    AccessTokenValidator,
    InMemoryRevocations,
    InvalidToken,
    Keyring,
)
from fleetward.identity.tokens import issuing as issuing_module
from fleetward.identity.tokens.cache import CachedToken, VerifiedTokenCache

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
ISSUER = "https://id.fleetward.test"


@dataclass
class Env:
    clock: FrozenClock
    keyring: Keyring
    issuer: AccessTokenIssuer
    revocations: InMemoryRevocations
    validator: AccessTokenValidator
    verifications: list[int]

    def issue(self, subject: str = "usr_1") -> str:
        return self.issuer.issue(
            subject=subject,
            client_id="cli_1",
            tenant="ten_1",
            surface=Surface.MOBILE,
            scopes=["vehicle:read"],
            auth_time=self.clock.now(),
            acr="urn:fleetward:acr:pwd",
            amr=["pwd"],
            token_family="fam_1",
            subject_type="user",
        ).token

    async def reason(self, token: str, surface: Surface = Surface.MOBILE) -> str | None:
        try:
            await self.validator.validate(token, surface=surface)
        except InvalidToken as refused:
            return refused.reason
        return None


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Env:
    clock = FrozenClock(T0)
    keyring = Keyring.generate(clock)
    revocations = InMemoryRevocations()
    verifications: list[int] = []
    real = issuing_module.ES256.verify

    def counting(*args: Any, **kwargs: Any) -> Any:
        verifications.append(1)
        return real(*args, **kwargs)

    # Counts signature verifications: the work the cache exists to skip.
    monkeypatch.setattr(issuing_module.ES256, "verify", counting)
    validator = AccessTokenValidator(keyring, ISSUER, clock, revocations, cache_size=3)
    issuer = AccessTokenIssuer(keyring, ISSUER, clock)
    return Env(clock, keyring, issuer, revocations, validator, verifications)


@pytest.mark.asyncio
async def test_second_validation_skips_signature_work(env: Env) -> None:
    token = env.issue()
    first = await env.validator.validate(token, surface=Surface.MOBILE)
    second = await env.validator.validate(token, surface=Surface.MOBILE)
    assert first == second
    assert len(env.verifications) == 1


@pytest.mark.asyncio
async def test_cache_off_verifies_every_time(env: Env) -> None:
    validator = AccessTokenValidator(env.keyring, ISSUER, env.clock, env.revocations, cache_size=0)
    token = env.issue()
    for _ in range(3):
        await validator.validate(token, surface=Surface.MOBILE)
    assert len(env.verifications) == 3


@pytest.mark.asyncio
async def test_revoked_after_caching_is_refused(env: Env) -> None:
    # Revocation must bite on the very next request, not when the cache entry ages out.
    token = env.issue()
    assert await env.reason(token) is None
    env.revocations.revoke_user("usr_1", env.clock.now())
    assert await env.reason(token) == "revoked"


@pytest.mark.asyncio
async def test_expired_after_caching_is_refused(env: Env) -> None:
    token = env.issue()
    assert await env.reason(token) is None
    env.clock.advance(timedelta(minutes=5, seconds=30))
    assert await env.reason(token) == "expired"


@pytest.mark.asyncio
async def test_other_surface_after_caching_is_refused(env: Env) -> None:
    # The audience depends on the caller; a cached mobile token is still not an admin token.
    token = env.issue()
    assert await env.reason(token) is None
    assert await env.reason(token, Surface.ADMIN) == "wrong-audience"


@pytest.mark.asyncio
async def test_near_twin_token_is_not_served_from_cache(env: Env) -> None:
    # A tampered copy of a cached token must not hit the cached entry.
    token = env.issue()
    assert await env.reason(token) is None
    head, body, signature = token.split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    assert await env.reason(f"{head}.{body}.{flipped}") == "bad-signature"


@pytest.mark.asyncio
async def test_cache_is_bounded(env: Env) -> None:
    tokens = [env.issue(f"usr_{n}") for n in range(5)]
    for token in tokens:
        assert await env.reason(token) is None
    assert len(env.verifications) == 5
    # Capacity 3: the two oldest were evicted and must be verified again.
    assert await env.reason(tokens[0]) is None
    assert await env.reason(tokens[4]) is None
    assert len(env.verifications) == 6


def _claims(exp: int) -> AccessTokenClaims:
    return AccessTokenClaims(
        iss=ISSUER,
        sub="usr_1",
        aud=Surface.MOBILE.audience,
        exp=exp,
        iat=exp - 300,
        nbf=exp - 300,
        jti="jti_1",
        client_id="cli_1",
        scopes=frozenset({"vehicle:read"}),
        tenant="ten_1",
        auth_time=exp - 300,
        acr="acr",
        amr=("pwd",),
        sub_type="user",
    )


def test_entries_drop_at_exp() -> None:
    cache = VerifiedTokenCache(10)
    entry = CachedToken(_claims(exp=1000), kid="kid")
    cache.put(b"d", entry, now_seconds=900)
    assert cache.get(b"d", now_seconds=999.9) is entry
    assert cache.get(b"d", now_seconds=1000) is None
    assert len(cache) == 0  # dropped, not just hidden


def test_expired_entries_are_not_stored() -> None:
    cache = VerifiedTokenCache(10)
    cache.put(b"d", CachedToken(_claims(exp=1000), kid="kid"), now_seconds=1000)
    assert len(cache) == 0


def test_cache_needs_a_positive_size() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        VerifiedTokenCache(0)
