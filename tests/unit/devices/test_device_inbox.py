"""Which downward message answers a device's request, and what waits for its next receive
(docs/vehicle-protocol.md 6.2): the reply echoing the frame's counter (or none), never a
COMMAND and never the reply to another frame; the rest in arrival order."""

from __future__ import annotations

import asyncio
from collections import deque

from fleetward.commands.envelope import COMMAND_TYPE
from fleetward.gateway.device_inbox import COMMAND_FIRST_BYTE, DeviceInbox, answers
from fleetward.telemetry.envelope import SessionMacs, seal
from fleetward.telemetry.errors import Status

KEY = bytes(range(32))
MACS = SessionMacs(KEY)
COMMAND = bytes([COMMAND_TYPE, 0x01]) + b"\x00" * 60


def frame(counter: int) -> bytes:
    return seal(KEY, b"{}", counter=counter, sequence=counter, device_time_ms=1)


def reply(counter: int) -> bytes:
    return MACS.reply(Status.ACCEPTED, counter=counter, sequence=counter, server_time_ms=2)


class Arrivals:
    def __init__(self, *messages: bytes) -> None:
        self.messages = deque(messages)

    async def __call__(self) -> bytes:
        return self.messages.popleft()


def test_the_command_byte_is_the_command_services() -> None:
    assert COMMAND_FIRST_BYTE == COMMAND_TYPE


def test_what_answers_a_frame() -> None:
    assert answers(frame(5), reply(5), KEY)
    # Refused before its tag verified: nothing echoed, and it is the only reply coming.
    assert answers(frame(5), reply(0), KEY)
    # Not a reply this device can verify: the caller judges it.
    assert answers(frame(5), b"unavailable", KEY)
    # A COMMAND (even one 62 bytes long) and the reply to another frame never do.
    assert not answers(frame(5), COMMAND, KEY)
    assert not answers(frame(5), reply(4), KEY)
    # A frame that is no telemetry frame gets a reply that echoes nothing.
    assert answers(b"garbage", reply(0), KEY)
    assert not answers(b"garbage", reply(4), KEY)


async def test_a_request_keeps_what_does_not_answer_it_for_receive_in_order() -> None:
    inbox = DeviceInbox()
    arrivals = Arrivals(COMMAND, reply(4), reply(5), reply(6))
    assert await inbox.reply_to(frame(5), KEY, arrivals) == reply(5)
    assert await inbox.next(arrivals) == COMMAND
    assert await inbox.next(arrivals) == reply(4)
    assert await inbox.next(arrivals) == reply(6)  # then what arrives


async def test_a_cancelled_request_loses_nothing() -> None:
    inbox = DeviceInbox()
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    queue.put_nowait(COMMAND)
    waiting = asyncio.ensure_future(inbox.reply_to(frame(1), KEY, queue.get))
    await asyncio.sleep(0)  # takes the command, then waits for the reply
    waiting.cancel()
    queue.put_nowait(reply(1))
    assert await inbox.next(queue.get) == COMMAND
    assert await inbox.next(queue.get) == reply(1)
