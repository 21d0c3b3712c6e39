"""Where a device's sessions are, beyond this process: the clone rules' view across replicas.

A process sees its own sessions in its :class:`~fleetward.gateway.registry.SessionRegistry`.
Behind a load balancer, a copy of a device's key that connects to ANOTHER replica than the
genuine device is in neither registry's view: the concurrent-session rule
(:mod:`fleetward.devices.clones`) never fires, and the peer-changed rule only within the
liveness window of the genuine session's opening (the store's ``last_seen_at`` moves at
openings and closings, not with every frame). The same holds for the per-device session cap.

A :class:`SessionDirectory` closes that gap. Every admission *joins* it: the new session is
written and the device's sessions held by other processes are read back in one atomic step,
so of two sessions joining at once on two replicas at least one sees the other. Each process
*refreshes* its sessions' last activity every third of the liveness window and *leaves* when
a session ends. What a remote session last did is therefore known to within that refresh
interval: a session silent for longer than the window minus it may be taken for dead, as the
registry does at the window itself.

:class:`LocalDirectory` is the single-process default (no one else to see). The Redis one is
:class:`fleetward.gateway.redis_directory.RedisSessionDirectory`. When it cannot answer, the
gateway judges with its own sessions only and says so in the log (a detection degraded, not
an admission refused: a Redis outage must not take the fleet offline).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from fleetward.devices.clones import OtherSession
from fleetward.gateway.registry import LiveSession


@dataclass(frozen=True, slots=True)
class RemoteSession:
    """A session of the device held by another process, as that process last wrote it."""

    other: OtherSession
    # Of the certificate it proved: a session of a certificate the new one's rotation
    # replaces is the same device handing over, not a second one.
    certificate_serial: str


class SessionDirectory(Protocol):
    """The devices' sessions of every process sharing it. Safe for concurrent tasks."""

    @property
    def shared(self) -> bool:
        """Whether other processes write here (False: nothing to refresh)."""
        ...

    async def join(self, live: LiveSession) -> tuple[RemoteSession, ...]:
        """Write ``live`` and return the sessions of its device that OTHER processes hold,
        as they last refreshed them (live or not: the clone rules judge). Raises when the
        directory cannot answer."""
        ...

    async def leave(self, live: LiveSession) -> None:
        """Forget ``live`` (idempotent). Raises when the directory cannot answer."""
        ...

    async def refresh(self, sessions: Sequence[LiveSession]) -> None:
        """Write the last activity of this process's ``sessions``."""
        ...

    async def close(self) -> None: ...


class LocalDirectory:
    """One process alone: every session it could see is in its own registry."""

    shared = False

    async def join(self, live: LiveSession) -> tuple[RemoteSession, ...]:
        return ()

    async def leave(self, live: LiveSession) -> None:
        return None

    async def refresh(self, sessions: Sequence[LiveSession]) -> None:
        return None

    async def close(self) -> None:
        return None


__all__ = ["LocalDirectory", "RemoteSession", "SessionDirectory"]
