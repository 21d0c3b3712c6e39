"""The command bus's messages: what a replica publishes reads back as the same hint, and
nothing else reads as a hint (commands/bus.py)."""

from __future__ import annotations

import pytest

from fleetward.commands.bus import MAX_MESSAGE, Hint, HintKind, decode, encode, new_origin
from fleetward.core.ids import new_id


def test_hints_read_back_as_they_were_published() -> None:
    origin = new_origin()
    queued = Hint(HintKind.QUEUED, origin, new_id("job"), new_id("veh"))
    changed = Hint(HintKind.CHANGED, origin, new_id("job"))
    assert decode(encode(queued)) == queued
    assert decode(encode(changed)) == changed
    assert len(encode(queued)) <= MAX_MESSAGE


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"q",
        "q {o} {j} {v}".replace("{o}", "é" * 16).encode(),  # not ASCII
        b"q 0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa",  # queued, no vehicle
        b"q 0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa usr_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        b"c 0123456789abcdef veh_aaaaaaaaaaaaaaaaaaaaaaaaaa",  # a vehicle as the job
        b"c 0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa veh_aaaaaaaaaaaaaaaaaaaaaaaaaa",
        b"c 0123456789ABCDEF job_aaaaaaaaaaaaaaaaaaaaaaaaaa",  # origin not lowercase hex
        b"c 0123456789abcde job_aaaaaaaaaaaaaaaaaaaaaaaaaa",  # origin too short
        b"x 0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa",  # unknown kind
        b"c  0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa",  # two spaces
        b"c 0123456789abcdef job_aaaaaaaaaaaaaaaaaaaaaaaaaa" + b" " * MAX_MESSAGE,
    ],
)
def test_anything_else_is_not_a_hint(message: bytes) -> None:
    assert decode(message) is None
