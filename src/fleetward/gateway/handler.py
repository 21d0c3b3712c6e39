"""The seams between a transport and whatever consumes an authenticated session's frames.

The WebSocket transport calls :meth:`FrameHandler.handle` once per binary frame, in order, one
frame at a time per session (the next frame is read only after the reply was sent), and sends
the returned bytes back as one binary frame. It tells a :class:`SessionObserver` when a session
ends and when a device's status changes without its sessions ending (a quarantine, or its
release). The telemetry pipeline implements both.
"""

from __future__ import annotations

from typing import Protocol

from fleetward.devices.models import DeviceStatus
from fleetward.gateway.session import DeviceSession


class FrameHandler(Protocol):
    """Implementations must be safe for concurrent calls from different sessions (the
    gateway serves many sessions on one event loop) and must not raise for a bad frame:
    they answer it with a reply that says so. An exception closes the session (1011)."""

    async def handle(self, session: DeviceSession, frame: bytes) -> bytes: ...


class SessionObserver(Protocol):
    """Told what the gateway learns about sessions and devices. Called on the event loop;
    must return quickly and not raise (an exception is logged and ignored)."""

    def end_session(self, session_id: str) -> None:
        """The session is closed for good: forget its keys and counters."""
        ...

    def device_status_changed(self, device_id: str, status: DeviceStatus, reason: str) -> None:
        """A device with live sessions became QUARANTINED (its frames must be set apart from
        now on) or ACTIVE again (released by an operator). Also called when the first session
        of an already quarantined device opens, when the first session of a device last
        reported quarantined is admitted active (released elsewhere meanwhile), and for an
        operator's change committed in this process while the device has no session here.
        Ending statuses close the sessions instead."""
        ...


class UnavailableHandler:
    """Answers every frame with ``b"unavailable"`` and keeps nothing: what the gateway uses
    until a pipeline is wired in, so no frame is ever mistaken for accepted."""

    REPLY = b"unavailable"

    async def handle(self, session: DeviceSession, frame: bytes) -> bytes:
        return self.REPLY


class NoObserver:
    """For a gateway without a pipeline: nothing to tell."""

    def end_session(self, session_id: str) -> None:
        return None

    def device_status_changed(self, device_id: str, status: DeviceStatus, reason: str) -> None:
        return None
