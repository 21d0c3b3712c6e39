"""No access token is accepted before the durable revocations are loaded.

The app tries to load them at start-up; if the store is not ready yet (not migrated, not
reachable), the server still starts so that /readyz can say why, and the first request that
needs authentication (or /readyz) loads them. Until that succeeds, authentication refuses
with 503: fail closed, never "no revocations known".
"""

from __future__ import annotations

import asyncio

from fleetward.core.errors import ServiceUnavailable
from fleetward.identity.oauth.revocation import load_revocations
from fleetward.observability.logging import get_logger
from fleetward.platform import Platform

_log = get_logger("fleetward.revocations")


class RevocationsNotLoaded(ServiceUnavailable):
    code = "revocations-not-loaded"
    title = "Authentication is not available yet"


class RevocationGate:
    """Safe for concurrent use on one event loop: loading happens once, under a lock."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._loaded = False
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded

    async def try_load(self) -> bool:
        if self._loaded:
            return True
        async with self._lock:
            if self._loaded:
                return True
            ready, _reason = await self._platform.store_ready()
            if not ready:
                return False
            try:
                count = await load_revocations(self._platform)
            except Exception as exc:  # any failure leaves the gate closed
                _log.warning("revocations not loaded", error_type=type(exc).__name__)
                return False
            _log.info("revocations loaded", count=count)
            self._loaded = True
            return True

    async def ensure(self) -> None:
        if not await self.try_load():
            raise RevocationsNotLoaded(
                "authentication is unavailable until the store is ready", reason="store"
            )
