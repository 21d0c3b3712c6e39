"""The session directory of :mod:`fleetward.gateway.directory` in Redis, shared by replicas.

One hash per device (``<prefix><device id>``): a field per session id, its value
``"<origin> <last activity, epoch ms> <certificate serial> <peer>"``, ``origin`` being the
writing process's random id (a process's own sessions are in its registry already, so it
skips them). A join
is one MULTI/EXEC (write, renew the expiry, read the hash back), which is what makes two
concurrent joins on two replicas see each other: Redis runs one of them whole first. The
hash expires two liveness windows after its last write, so the sessions of a replica that
died without leaving go with it; entries older than that inside a hash still written to are
pruned at the next join.

Values are parsed strictly; anything else in a hash (another writer's format, a value cut
short) is not taken as a session and is pruned, counted in ``malformed``. Nothing here logs
a peer address or the Redis URL.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Final

from redis.asyncio import Redis

from fleetward.devices.clones import OtherSession
from fleetward.gateway.directory import RemoteSession
from fleetward.gateway.registry import LiveSession
from fleetward.observability.logging import get_logger

logger = get_logger(__name__)

_ENTRY: Final = re.compile(r"([0-9a-f]{16}) ([0-9]{1,15}) ([0-9a-f]{1,64}) (\S{1,256})")
_SESSION_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")
# Sessions written per pipeline by a refresh (two commands each). Building a pipeline holds
# the event loop (~20 us a session): 100 keeps each stretch near 2 ms, where one pipeline for
# a gateway's 1,000 sessions held it ~20 ms every refresh (docs/decisions.md, "small pieces").
_REFRESH_BATCH: Final = 100
# A refresh rewrites an entry only while it is there. A refresh takes its sessions before it
# writes them: a session that ends meanwhile has already left (HDEL), and an unconditional
# HSET would write it back, a live-looking entry for a session that is over (until the
# window passes), read as a second device by the next handshake elsewhere. Unless Redis lost
# this process's entries (ARGV[4] = "1": restarted, flushed, or out of reach until they
# expired), which its marker key tells: then every session is written again.
_REFRESH_ENTRY: Final = """
if ARGV[4] == '1' or redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
return 1
"""


def _ms(at: datetime) -> int:
    return int(at.timestamp() * 1000)


class RedisSessionDirectory:
    shared = True

    def __init__(
        self,
        redis: Redis,
        *,
        liveness_window: timedelta,
        origin: str | None = None,
        prefix: str = "fw:devsess:",
    ) -> None:
        self._redis = redis
        self.origin = origin or secrets.token_hex(8)
        if _ENTRY.fullmatch(f"{self.origin} 0 0 x") is None:
            raise ValueError("origin must be 16 lowercase hex digits")
        self._prefix = prefix
        self._ttl_ms = int(liveness_window.total_seconds() * 2000)
        if self._ttl_ms <= 0:
            raise ValueError("the liveness window must be positive")
        self.malformed = 0  # values read that were not entries (pruned)
        self._refresh_entry = redis.register_script(_REFRESH_ENTRY)
        # Written by each complete refresh, expiring with the entries it wrote: missing, it
        # says they may be gone (a restarted or flushed Redis, an outage past the expiry).
        self._marker = f"{prefix}@{self.origin}"

    @classmethod
    def from_url(cls, url: str, *, liveness_window: timedelta) -> RedisSessionDirectory:
        # Short timeouts: a join is on a device's handshake path.
        redis = Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(redis, liveness_window=liveness_window)

    def _key(self, device_id: str) -> str:
        return f"{self._prefix}{device_id}"

    def _entry(self, live: LiveSession) -> str:
        # A peer with whitespace (an MQTT client id may hold any character) is written with
        # it replaced: the peer is evidence for a reader, never parsed for anything else.
        peer = "".join(live.session.peer.split()) or "-"
        serial = live.session.certificate_serial.lower()
        return f"{self.origin} {_ms(live.last_activity)} {serial} {peer[:256]}"

    async def join(self, live: LiveSession) -> tuple[RemoteSession, ...]:
        session = live.session
        key = self._key(session.device_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, session.session_id, self._entry(live))
            pipe.pexpire(key, self._ttl_ms)
            pipe.hgetall(key)
            *_, entries = await pipe.execute()
        oldest = _ms(live.last_activity) - self._ttl_ms
        others: list[RemoteSession] = []
        pruned: list[bytes] = []
        for field, value in entries.items():
            parsed = _parse(field, value)
            if parsed is None:
                self.malformed += 1
                pruned.append(field)
                continue
            session_id, origin, last_ms, serial, peer = parsed
            if last_ms < oldest:
                pruned.append(field)
                continue
            if session_id == session.session_id or origin == self.origin:
                continue
            at = datetime.fromtimestamp(last_ms / 1000, UTC)
            others.append(RemoteSession(OtherSession(session_id, peer, at), serial))
        if pruned:
            await self._redis.hdel(key, *pruned)
            logger.info("gateway.directory_pruned", entries=len(pruned))
        return tuple(others)

    async def leave(self, live: LiveSession) -> None:
        await self._redis.hdel(self._key(live.session.device_id), live.session.session_id)

    async def refresh(self, sessions: Sequence[LiveSession]) -> None:
        """Rewrite the entries of ``sessions`` that are still there (one that has left, or
        never joined, is not written: see ``_REFRESH_ENTRY``), or all of them when Redis may
        have lost this process's entries."""
        if not sessions:
            return
        lost = "0" if await self._redis.exists(self._marker) else "1"
        for start in range(0, len(sessions), _REFRESH_BATCH):
            async with self._redis.pipeline(transaction=False) as pipe:
                for live in sessions[start : start + _REFRESH_BATCH]:
                    await self._refresh_entry(
                        keys=[self._key(live.session.device_id)],
                        args=[live.session.session_id, self._entry(live), self._ttl_ms, lost],
                        client=pipe,
                    )
                await pipe.execute()
        await self._redis.set(self._marker, 1, px=self._ttl_ms)

    async def close(self) -> None:
        await self._redis.aclose()


def _parse(field: object, value: object) -> tuple[str, str, int, str, str] | None:
    """(session id, origin, last activity ms, certificate serial, peer), or None."""
    if not isinstance(field, bytes) or not isinstance(value, bytes):
        return None
    try:
        session_id = field.decode("ascii")
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    match = _ENTRY.fullmatch(text)
    if _SESSION_ID.fullmatch(session_id) is None or match is None:
        return None
    return session_id, match[1], int(match[2]), match[3], match[4]


__all__ = ["RedisSessionDirectory"]
