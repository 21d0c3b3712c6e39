"""The device side's downward frames: which one answers a request, and where the others wait.

On a session the platform sends two kinds of frame, told apart by the first byte
(docs/vehicle-protocol.md 6.2): the reply to each telemetry frame (``0x01``) and a COMMAND
(``0x02``) whenever a job is delivered, at any moment, also between a frame and its reply.
A request therefore takes the first message that answers its frame and keeps every other one,
in arrival order, for the next receive. Shared by both transports' device clients.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

from fleetward.gateway.frames import COMMAND_FIRST_BYTE
from fleetward.telemetry.envelope import HEADER, VERSION, open_reply

_COUNTER = slice(2, 10)  # a telemetry frame's counter (docs/telemetry-format.md 1)

Arrive = Callable[[], Awaitable[bytes]]


def _counter(frame: bytes) -> int:
    """The counter a telemetry frame carries; 0 for anything else (never a valid counter)."""
    if len(frame) < HEADER.size or frame[0] != VERSION:
        return 0
    return int.from_bytes(frame[_COUNTER], "big")


def answers(frame: bytes, message: bytes, session_key: bytes) -> bool:
    """Whether ``message`` from the platform is the reply to ``frame``.

    A COMMAND never is. A reply that verifies under the session key answers ``frame`` when it
    echoes its counter, or echoes none (0: refused before its tag verified, so nothing of it
    could be echoed); one echoing another counter answers a frame sent earlier. Anything else
    is taken as the answer (the caller judges it): every frame gets exactly one reply."""
    if message[:1] == bytes([COMMAND_FIRST_BYTE]):
        return False
    try:
        echoed = open_reply(session_key, message).counter
    except ValueError:
        return True
    return echoed in (0, _counter(frame))


class DeviceInbox:
    """What requests passed over (commands, replies to earlier frames), in arrival order, for
    the next receive. Not safe for concurrent use, like the connections that hold one."""

    def __init__(self) -> None:
        self._kept: deque[bytes] = deque()

    async def next(self, arrive: Arrive) -> bytes:
        """The oldest message kept, else the next to arrive."""
        if self._kept:
            return self._kept.popleft()
        return await arrive()

    async def reply_to(self, frame: bytes, session_key: bytes, arrive: Arrive) -> bytes:
        """The reply to ``frame`` (already sent); every other message is kept. Safe to cancel
        when ``arrive`` is: nothing taken is lost."""
        while True:
            message = await arrive()
            if answers(frame, message, session_key):
                return message
            self._kept.append(message)
