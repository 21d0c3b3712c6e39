"""The command bus's messages: what a replica publishes reads back as the same hint, and
nothing else reads as a hint (commands/bus.py)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from fleetward.commands import redis_bus
from fleetward.commands.bus import MAX_MESSAGE, Hint, decode, encode, new_origin
from fleetward.commands.redis_bus import RedisCommandBus
from fleetward.core.ids import new_id


def test_hints_read_back_as_they_were_published() -> None:
    queued = Hint(new_origin(), new_id("job"), new_id("veh"))
    assert decode(encode(queued)) == queued
    assert len(encode(queued)) <= MAX_MESSAGE


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"q",
        "q {o} {j} {v}".replace("{o}", "é" * 16).encode(),  # not ASCII
        b"q 0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa",  # queued, no vehicle
        b"q 0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa usr_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        b"q 0123456789abcdef veh_aaaaaaaaaaaaaaaaaaaaaaaaaa job_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        b"q 0123456789ABCDEF job_aaaaaaaaaaaaaaaaaaaaaaaaaa veh_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        b"q 0123456789abcde job_aaaaaaaaaaaaaaaaaaaaaaaaaa veh_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        b"x 0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa veh_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        b"q  0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa veh_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        b"q 0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa veh_aaaaaaaaaaaaaaaaaaaaaaaaaa x",
        b"q 0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa veh_aaaaaaaaaaaaaaaaaaaaaaaaaa"
        + b" " * MAX_MESSAGE,
    ],
)
def test_anything_else_is_not_a_hint(message: bytes) -> None:
    assert decode(message) is None


async def test_a_bus_whose_redis_is_down_drops_hints_and_never_blocks() -> None:
    # Nothing listens on this port: every publish fails. The callers' path (queued, changed)
    # neither raises nor waits; the hints are counted as dropped (the sweep delivers their
    # jobs) and the bus stops cleanly.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bus = RedisCommandBus.from_url(f"redis://127.0.0.1:{port}/0", "fw:test:down")
    heard: list[Hint] = []
    await bus.start(heard.append)
    try:
        bus.queued(new_id("veh"), new_id("job"))
        bus.queued(new_id("veh"), new_id("job"))
        for _ in range(200):
            if bus.dropped >= 2:
                break
            await asyncio.sleep(0.02)
        assert bus.dropped == 2
        assert heard == []
    finally:
        await bus.stop()


class _Said:
    """A logger that keeps the events it is given."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def warning(self, event: str, **_fields: object) -> None:
        self.events.append(event)

    def info(self, event: str, **_fields: object) -> None:
        self.events.append(event)

    def error(self, event: str, **_fields: object) -> None:
        self.events.append(event)


async def test_a_subscription_that_keeps_failing_is_logged_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Redis down for a while: the subscriber retries (0.25 s, doubling to 5 s) and said
    # "listen failed" at every retry, where the operations guide promises once an outage.
    said = _Said()
    monkeypatch.setattr(redis_bus, "logger", said)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    bus = RedisCommandBus.from_url(f"redis://127.0.0.1:{port}/0", "fw:test:down")
    await bus.start(lambda _hint: None)
    try:
        for _ in range(200):
            if bus.listen_failures >= 3:
                break
            await asyncio.sleep(0.02)
        assert bus.listen_failures >= 3
        assert said.events.count("commands.bus_listen_failed") == 1
    finally:
        await bus.stop()
