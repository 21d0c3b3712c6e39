"""How a revocation reaches the broker: the device CA's CRL, rewritten from the store and
reloaded by the broker.

The publisher re-reads the store's revoked certificates every ``poll`` (so revocations made
through the API, the CLI or another replica all arrive), and when the list changed, or the
current CRL is half-way to its ``nextUpdate``, signs a new CRL, replaces the file atomically
and sends the broker SIGHUP (Mosquitto reloads its listeners' CRLs on SIGHUP). From then on
the broker refuses the revoked certificate at the TLS handshake. A connection the device
already holds is not cut by the broker: the gateway closes the session itself at once
(registry) and drops whatever the device still publishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from datetime import datetime, timedelta
from pathlib import Path

from fleetward.devices.crl import DEFAULT_CRL_LIFETIME, CrlSigner, crl_pem, revoked_entries
from fleetward.gateway.mqtt.pki import write_pem
from fleetward.observability.logging import get_logger
from fleetward.platform import Platform

logger = get_logger(__name__)


class CrlPublisher:
    def __init__(
        self,
        platform: Platform,
        signer: CrlSigner,
        path: Path,
        *,
        broker_pid_file: Path | None,
        poll: timedelta,
        lifetime: timedelta = DEFAULT_CRL_LIFETIME,
    ) -> None:
        self._platform = platform
        self._signer = signer
        self._path = path
        self._pid_file = broker_pid_file
        self._poll = poll.total_seconds()
        self._lifetime = lifetime
        self._published: tuple[str, ...] | None = None
        self._signed_at: datetime | None = None
        self._runner: asyncio.Task[None] | None = None

    async def publish(self, *, force: bool = False) -> bool:
        """Write a new CRL if the revoked set changed (or ``force``, or it is getting old)
        and reload the broker; whether one was written."""
        now = self._platform.clock.now()
        async with self._platform.sessions() as session:
            revoked = await revoked_entries(session, now)
        serials = tuple(entry.serial for entry in revoked)
        fresh = self._signed_at is not None and now - self._signed_at < self._lifetime / 2
        if not force and serials == self._published and fresh:
            return False
        crl = self._signer.sign(revoked, now=now, lifetime=self._lifetime)
        write_pem(self._path, crl_pem(crl), 0o644)
        self._published, self._signed_at = serials, now
        self.reload_broker()
        return True

    def reload_broker(self) -> None:
        if self._pid_file is None:
            return
        try:
            pid = int(self._pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            # The CRL is on disk; the broker picks it up at its next reload or restart.
            logger.error("gateway.mqtt.broker_not_reloaded", error=type(exc).__name__)

    async def start(self) -> None:
        if self._runner is None:
            await self.publish(force=True)
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="gateway-mqtt-crl"
            )

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._poll)
            try:
                await self.publish()
            except Exception as exc:  # keep the last CRL; it expires closed if this persists
                logger.error("gateway.mqtt.crl_not_published", error=type(exc).__name__)
