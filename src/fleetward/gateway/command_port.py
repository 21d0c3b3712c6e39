"""The seam between the transports and the command service: sessions that can carry commands
down, and the signed results vehicles send up.

Results travel in the same session as telemetry; a transport tells them apart by the first
byte (``RESULT_TYPE``, see ``fleetward.commands.envelope``) and hands them here instead of
to the telemetry pipeline. Telemetry never carries commands, and results never reach the
pipeline.
"""

from __future__ import annotations

from typing import Protocol

from fleetward.gateway.registry import LiveSession


class CommandPort(Protocol):
    """Implementations run on the gateway's event loop and never raise."""

    def session_ready(self, live: LiveSession) -> None:
        """``live`` has completed its handshake and can receive commands (``live.send``)."""
        ...

    async def on_result(self, live: LiveSession, frame: bytes) -> None:
        """A result frame arrived on ``live`` (nothing about it is verified yet)."""
        ...


class NoCommands:
    """A gateway without a command service: nothing goes down, results are dropped."""

    def session_ready(self, live: LiveSession) -> None:
        return None

    async def on_result(self, live: LiveSession, frame: bytes) -> None:
        return None
