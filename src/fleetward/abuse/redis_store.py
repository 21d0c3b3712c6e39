"""Buckets in Redis, shared by every API replica.

One Lua script checks every bucket of a request and then draws from all of them or from
none. Redis runs a script without interleaving other commands, so there is no
read-then-write race between replicas: of many concurrent requests on the last units,
exactly as many pass as there are units. The script is registered once; each call sends
EVALSHA and falls back to loading it on NOSCRIPT (a restarted or failed-over Redis).

The time is the caller's (``now`` in milliseconds), not Redis's ``TIME``, so a frozen
clock drives tests; replicas must keep their clocks NTP-synced. A replica whose clock lags a
bucket's last update refills nothing. Keys expire (PEXPIRE) when their bucket would be full
again, which is when they carry no information.

Every key of a script call must live on one node: on Redis Cluster, give the prefix a hash
tag (``fw:quota:{q}:``) so that all quota keys share a slot.

Any error, timeout or malformed reply raises :class:`QuotaUnavailable`: never an allowance.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from redis.asyncio import Redis

from fleetward.abuse.quotas import Charge, QuotaVerdict, check_request, epoch_ms
from fleetward.abuse.store import QuotaUnavailable
from fleetward.core.redis_scripts import DEFAULT_TIMEOUT, ScriptStore

DEFAULT_PREFIX: Final = "fw:quota:"

# The arithmetic of fleetward.abuse.bucket, step for step, on the same integers (all below
# 2**53, exact in Lua's doubles). Numbers are passed to redis.call as numbers, never
# concatenated into strings: tostring() keeps only 14 significant digits.
# KEYS[i]: bucket i. ARGV[1]: now (ms). ARGV[3i-1], ARGV[3i], ARGV[3i+1]: capacity,
# window (ms) and cost of bucket i.
# Reply: {allowed, index (1-based), remaining, wait_ms, reset_ms, retryable}.
_CONSUME: Final = """
local function ceil_div(a, b)
  local q = math.floor(a / b)
  if q * b < a then q = q + 1 end
  if q > 0 and (q - 1) * b >= a then q = q - 1 end
  return q
end
local function floor_div(a, b)
  local q = math.floor(a / b)
  if q * b > a then q = q - 1 end
  if (q + 1) * b <= a then q = q + 1 end
  return q
end
local now = tonumber(ARGV[1])
local n = #KEYS
local credit, at, cap, win, need, full = {}, {}, {}, {}, {}, {}
local first, wait, retryable = 0, 0, 1
for i = 1, n do
  cap[i] = tonumber(ARGV[3 * i - 1])
  win[i] = tonumber(ARGV[3 * i])
  need[i] = tonumber(ARGV[3 * i + 1]) * win[i]
  full[i] = cap[i] * win[i]
  local stored = redis.call('HMGET', KEYS[i], 'c', 'a')
  local c, a = tonumber(stored[1]), tonumber(stored[2])
  if c == nil or a == nil then
    c, a = full[i], now
  elseif now > a then
    c = math.min(full[i], c + math.min(now - a, win[i]) * cap[i])
    a = now
  end
  credit[i], at[i] = c, a
  if c < need[i] then
    if first == 0 then first = i end
    if need[i] > full[i] then
      retryable = 0
      wait = math.max(wait, win[i])
    else
      wait = math.max(wait, ceil_div(need[i] - c, cap[i]))
    end
  end
end
if first > 0 then
  local c = credit[first]
  return {0, first, floor_div(c, win[first]), wait, ceil_div(full[first] - c, cap[first]),
          retryable}
end
local tightest, least, reset = 1, -1, 0
for i = 1, n do
  local left = credit[i] - need[i]
  local to_full = ceil_div(full[i] - left, cap[i])
  redis.call('HSET', KEYS[i], 'c', left, 'a', at[i])
  redis.call('PEXPIRE', KEYS[i], to_full + at[i] - now)
  local units = floor_div(left, win[i])
  if least < 0 or units < least then
    tightest, least, reset = i, units, to_full
  end
end
return {1, tightest, least, 0, reset, 1}
"""


class RedisQuotaStore(ScriptStore):
    """A :class:`~fleetward.abuse.store.QuotaStore` in Redis. Safe for concurrent use: each
    call is one atomic script. ``timeout`` bounds each call (out of time = unavailable)."""

    what = "quota store"
    unavailable = QuotaUnavailable

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        timeout: timedelta = DEFAULT_TIMEOUT,
    ) -> None:
        super().__init__(redis, _CONSUME, prefix=prefix, timeout=timeout)

    async def consume(self, charges: Sequence[Charge], cost: int, *, now: datetime) -> QuotaVerdict:
        check_request(charges, cost)
        self._refuse_if_closed()
        keys = [self._prefix + charge.key for charge in charges]
        args: list[int] = [epoch_ms(now)]
        for charge in charges:
            limit = charge.limit
            args += (limit.capacity, limit.window_ms, charge.cost_for(cost))
        reply = await self._call(self._script(keys=keys, args=args))
        return _verdict(reply, charges)


def _verdict(reply: object, charges: Sequence[Charge]) -> QuotaVerdict:
    if not (
        isinstance(reply, list)
        and len(reply) == 6
        and all(type(part) is int for part in reply)
        and 1 <= reply[1] <= len(charges)
        and reply[0] in (0, 1)
    ):
        raise QuotaUnavailable("quota store: malformed reply")
    allowed, index, remaining, wait_ms, reset_ms, retryable = reply
    return QuotaVerdict(
        allowed=allowed == 1,
        limit=charges[index - 1].limit,
        remaining=remaining,
        retry_after=timedelta(milliseconds=wait_ms),
        reset_after=timedelta(milliseconds=reset_ms),
        retryable=retryable == 1,
    )
