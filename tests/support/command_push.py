"""The platform pushing a COMMAND down a session while a frame of that session awaits its
reply: a frame handler that sends a signed COMMAND on the frame's session, then answers the
frame with the handler it wraps. Both transports send a session's messages in order, so the
device receives the command first and the reply after it."""

from __future__ import annotations

from datetime import datetime

from cryptography.hazmat.primitives.asymmetric import ed25519

from fleetward.commands.envelope import CommandEnvelope, seal_command
from fleetward.commands.signing import CommandSigner
from fleetward.core.ids import new_id
from fleetward.gateway.handler import FrameHandler
from fleetward.gateway.registry import SessionRegistry
from fleetward.gateway.session import DeviceSession


def signed_command(vehicle_id: str, now: datetime) -> bytes:
    """A COMMAND frame as the command service seals one (its own throwaway key)."""
    signer = CommandSigner(ed25519.Ed25519PrivateKey.generate())
    issued = int(now.timestamp() * 1000)
    envelope = CommandEnvelope(
        vehicle_id=vehicle_id,
        job_id=new_id("job"),
        command="vehicle:horn_lights",
        parameters={},
        issued_at_ms=issued,
        expires_at_ms=issued + 30_000,
        counter=1,
        key_id=signer.key_id,
    )
    return seal_command(envelope, signer)


class CommandBeforeReply:
    """Wraps a frame handler: before each frame is answered, ``command`` goes down its session."""

    def __init__(self, inner: FrameHandler, registry: SessionRegistry, command: bytes) -> None:
        self._inner = inner
        self._registry = registry
        self._command = command

    async def handle(self, session: DeviceSession, frame: bytes) -> bytes:
        [live] = [
            live
            for live in self._registry.sessions(session.device_id)
            if live.session.session_id == session.session_id
        ]
        assert await live.send(self._command), "the command did not go down the session"
        return await self._inner.handle(session, frame)
