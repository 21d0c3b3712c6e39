"""Revocation: every kind, the same-second rule, and failing closed when the checker fails."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
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
    IssuedToken,
    Keyring,
    RevocationChecker,
)

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
ISSUER = "https://id.fleetward.test"


@dataclass
class Env:
    clock: FrozenClock
    issuer: AccessTokenIssuer
    revocations: InMemoryRevocations
    validator: AccessTokenValidator

    def issue(self, **changes: Any) -> IssuedToken:
        arguments: dict[str, Any] = {
            "subject": "usr_1",
            "client_id": "cli_1",
            "tenant": "ten_1",
            "surface": Surface.MOBILE,
            "scopes": ["vehicle:read"],
            "auth_time": self.clock.now(),
            "acr": "urn:fleetward:acr:pwd",
            "amr": ["pwd"],
            "token_family": "fam_1",
            "subject_type": "user",
        }
        arguments.update(changes)
        return self.issuer.issue(**arguments)

    async def reason(self, token: str) -> str | None:
        """None if accepted, else the refusal reason."""
        try:
            await self.validator.validate(token, surface=Surface.MOBILE)
        except InvalidToken as refused:
            return refused.reason
        return None


def make_env(checker: RevocationChecker | None = None, **options: Any) -> Env:
    clock = FrozenClock(T0)
    keyring = Keyring.generate(clock)
    revocations = InMemoryRevocations()
    validator = AccessTokenValidator(
        keyring, ISSUER, clock, checker if checker is not None else revocations, **options
    )
    return Env(clock, AccessTokenIssuer(keyring, ISSUER, clock), revocations, validator)


Revoke = Callable[[InMemoryRevocations, IssuedToken, datetime], None]

KINDS: list[Any] = [
    # A user signs out everywhere / is disabled: all their tokens die.
    pytest.param(lambda r, t, at: r.revoke_user(t.claims.sub, at), "user-revoked", id="user"),
    # A client application is disabled or its secret leaked.
    pytest.param(
        lambda r, t, at: r.revoke_client(t.claims.client_id, at), "client-revoked", id="client"
    ),
    # A whole tenant is suspended.
    pytest.param(
        lambda r, t, at: r.revoke_tenant(t.claims.tenant, at), "tenant-revoked", id="tenant"
    ),
    # Refresh token reuse detected: the whole family is burnt.
    pytest.param(
        lambda r, t, at: r.revoke_family(t.claims.fam or "", at), "family-revoked", id="family"
    ),
    # One stolen token is reported.
    pytest.param(
        lambda r, t, at: r.revoke_jti(t.claims.jti, t.claims.expires_at), "token-revoked", id="jti"
    ),
]


@pytest.mark.parametrize(("revoke", "why"), KINDS)
@pytest.mark.asyncio
async def test_each_revocation_kind_refuses_the_token(
    revoke: Revoke, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    env = make_env()
    issued = env.issue()
    assert await env.reason(issued.token) is None  # accepted before, so the refusal is revocation
    env.clock.advance(timedelta(seconds=10))
    revoke(env.revocations, issued, env.clock.now())
    assert await env.revocations.revoked_reason(issued.claims) == why
    caplog.set_level("INFO")
    assert await env.reason(issued.token) == "revoked"
    assert f"why={why}" in caplog.text
    assert issued.claims.jti in caplog.text


@pytest.mark.parametrize(("revoke", "why"), KINDS)
@pytest.mark.asyncio
async def test_revocation_does_not_touch_unrelated_tokens(revoke: Revoke, why: str) -> None:
    # Revoking one user/client/tenant/family/token must not deny anyone else's.
    env = make_env()
    target = env.issue()
    bystander = env.issue(subject="usr_2", client_id="cli_2", tenant="ten_2", token_family="fam_2")
    revoke(env.revocations, target, env.clock.now())
    assert await env.revocations.revoked_reason(target.claims) == why
    assert await env.reason(bystander.token) is None


@pytest.mark.parametrize(
    ("issued_offset", "revoked"),
    [
        (timedelta(seconds=-10), True),  # issued before the revocation
        (timedelta(milliseconds=-200), True),  # same second, earlier
        (timedelta(milliseconds=500), True),  # same second, LATER: iat truncation, still revoked
        (timedelta(milliseconds=799), True),  # last millisecond of that second
        (timedelta(seconds=1), False),  # next second: a fresh login after the revocation
    ],
)
@pytest.mark.asyncio
async def test_same_second_rule(issued_offset: timedelta, revoked: bool) -> None:
    env = make_env()
    revoked_at = T0 + timedelta(milliseconds=200)
    env.clock.set(revoked_at + issued_offset)
    issued = env.issue()
    env.revocations.revoke_user("usr_1", revoked_at)
    expected = "user-revoked" if revoked else None
    assert await env.revocations.revoked_reason(issued.claims) == expected


@pytest.mark.asyncio
async def test_epochs_only_move_forward() -> None:
    env = make_env()
    env.clock.advance(timedelta(minutes=1))
    issued = env.issue()
    env.revocations.revoke_user("usr_1", T0 + timedelta(minutes=2))
    env.revocations.revoke_user("usr_1", T0)  # an older, late-arriving revocation
    assert await env.revocations.revoked_reason(issued.claims) == "user-revoked"


@pytest.mark.asyncio
async def test_prune_keeps_entries_that_can_still_match() -> None:
    env = make_env()
    revocations = env.revocations
    revocations.revoke_user("usr_old", T0)
    revocations.revoke_user("usr_recent", T0 + timedelta(minutes=10))
    revocations.revoke_jti("jti_gone", T0 + timedelta(minutes=1))
    revocations.revoke_jti("jti_live", T0 + timedelta(minutes=30))
    dropped = revocations.prune(T0 + timedelta(minutes=20), timedelta(minutes=15))
    assert dropped == 2
    recent = env.issue(subject="usr_recent").claims
    assert await revocations.revoked_reason(recent) == "user-revoked"
    live = AccessTokenClaims(**{**_fields(recent), "jti": "jti_live"})
    assert await revocations.revoked_reason(live) == "token-revoked"


def _fields(claims: AccessTokenClaims) -> dict[str, Any]:
    return {name: getattr(claims, name) for name in AccessTokenClaims.__dataclass_fields__}


def test_naive_revocation_time_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        InMemoryRevocations().revoke_user("usr_1", datetime(2026, 11, 26, 9))


class Exploding:
    """A revocation store that is down."""

    does_io = True

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.calls = 0

    async def revoked_reason(self, claims: AccessTokenClaims) -> str | None:
        self.calls += 1
        raise self.error


class Hanging:
    """A revocation store that never answers."""

    does_io = True

    async def revoked_reason(self, claims: AccessTokenClaims) -> str | None:
        await asyncio.Event().wait()
        return None


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("redis down"),  # store unreachable
        TimeoutError(),  # store timed out on its own
        RuntimeError("bug in checker"),  # checker bug
        KeyError("jti"),  # unexpected data
    ],
)
@pytest.mark.parametrize("cache_size", [0, 100])
@pytest.mark.asyncio
async def test_checker_failure_fails_closed(error: Exception, cache_size: int) -> None:
    checker = Exploding(error)
    env = make_env(checker, cache_size=cache_size)
    issued = env.issue()
    assert await env.reason(issued.token) == "revocation-unavailable"
    assert await env.reason(issued.token) == "revocation-unavailable"
    assert checker.calls == 2  # asked on every call, the cache never skips it


@pytest.mark.asyncio
async def test_hanging_checker_times_out_closed() -> None:
    env = make_env(Hanging(), revocation_timeout=timedelta(milliseconds=20))
    assert await env.reason(env.issue().token) == "revocation-unavailable"


@pytest.mark.asyncio
async def test_cancellation_is_not_swallowed() -> None:
    # Fail-closed must not turn a cancelled request into a 401: cancellation propagates.
    env = make_env(Exploding(asyncio.CancelledError()))
    with pytest.raises(asyncio.CancelledError):
        await env.validator.validate(env.issue().token, surface=Surface.MOBILE)
