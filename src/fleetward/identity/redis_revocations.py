"""Revocation epochs in Redis, shared by every API replica.

Same rules as :class:`~fleetward.identity.tokens.revocation.InMemoryRevocations` (a token is
revoked when ``iat <= epoch``; epochs only move forward), but every check reads Redis with
one MGET, so a revocation written by any replica refuses the token on every replica from the
next request on: there is no propagation delay to wait for. A Redis error or timeout makes
the validator refuse the token (fail closed).

Keys expire after the longest token lifetime plus skew: an epoch older than that can only
match tokens that have expired anyway.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from redis.asyncio import Redis

from fleetward.identity.tokens.claims import AccessTokenClaims
from fleetward.identity.tokens.revocation import epoch_seconds

# Atomic "raise to at least": no read-then-write race between replicas revoking at once.
_RAISE_EPOCH = """
local current = tonumber(redis.call('GET', KEYS[1]))
local epoch = tonumber(ARGV[1])
if current == nil or epoch > current then
  redis.call('SET', KEYS[1], epoch, 'EX', ARGV[2])
else
  redis.call('EXPIRE', KEYS[1], ARGV[2], 'GT')
end
return 1
"""

_REASONS = ("user-revoked", "client-revoked", "tenant-revoked", "family-revoked")


class RedisRevocations:
    """Safe for concurrent use: each call is one Redis round trip or one atomic script."""

    does_io = True  # the validator bounds each check with its revocation timeout

    def __init__(
        self,
        redis: Redis,
        *,
        max_token_lifetime: timedelta = timedelta(minutes=15),
        skew: timedelta = timedelta(minutes=1),
        prefix: str = "fw:rev:",
    ) -> None:
        self._redis = redis
        self._ttl = int((max_token_lifetime + skew).total_seconds()) + 1
        self._skew = math.ceil(skew.total_seconds())
        self._prefix = prefix
        self._raise = redis.register_script(_RAISE_EPOCH)

    def _key(self, kind: str, subject: str) -> str:
        return f"{self._prefix}{kind}:{subject}"

    async def _raise_epoch(self, kind: str, subject: str, at: datetime) -> None:
        await self._raise(keys=[self._key(kind, subject)], args=[epoch_seconds(at), self._ttl])

    async def revoke_user(self, sub: str, at: datetime) -> None:
        await self._raise_epoch("user", sub, at)

    async def revoke_client(self, client_id: str, at: datetime) -> None:
        await self._raise_epoch("client", client_id, at)

    async def revoke_tenant(self, tenant: str, at: datetime) -> None:
        await self._raise_epoch("tenant", tenant, at)

    async def revoke_family(self, fam: str, at: datetime) -> None:
        await self._raise_epoch("family", fam, at)

    async def revoke_jti(self, jti: str, until: datetime) -> None:
        if until.tzinfo is None:
            raise ValueError("revocation times must be aware datetimes")
        # Until the token's expiry plus the skew: verifiers accept a token that long.
        left = until.timestamp() - datetime.now(until.tzinfo).timestamp()
        ttl = max(1, math.ceil(left) + self._skew + 1)
        await self._redis.set(self._key("jti", jti), 1, ex=ttl)

    async def close(self) -> None:
        await self._redis.aclose()

    async def revoked_reason(self, claims: AccessTokenClaims) -> str | None:
        keys = [
            self._key("user", claims.sub),
            self._key("client", claims.client_id),
            self._key("tenant", claims.tenant),
            self._key("family", claims.fam or "-"),
            self._key("jti", claims.jti),
        ]
        values = await self._redis.mget(keys)
        if values[4] is not None:
            return "token-revoked"
        for reason, value, applies in zip(
            _REASONS, values[:4], (True, True, True, claims.fam is not None), strict=True
        ):
            if applies and value is not None and claims.iat <= int(value):
                return reason
        return None
