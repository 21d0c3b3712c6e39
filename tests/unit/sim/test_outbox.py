"""The store-and-forward outbox: oldest first, dropped only on its own ack, bounded."""

from __future__ import annotations

import pytest

from fleetward.sim.outbox import Outbox, Pending


def pending(sequence: int) -> Pending:
    return Pending(sequence, 1_795_683_600_000 + sequence, b'{"signals":{}}')


def test_messages_leave_oldest_first_and_only_on_their_ack() -> None:
    outbox = Outbox(capacity=10)
    for sequence in (1, 2, 3):
        outbox.put(pending(sequence))
    assert outbox.peek() == pending(1)
    assert not outbox.ack(2)  # an ack for another message drops nothing
    assert len(outbox) == 3
    assert outbox.ack(1)
    assert outbox.peek() == pending(2)
    assert outbox.ack(2) and outbox.ack(3)
    assert outbox.peek() is None
    assert not outbox.ack(3)


def test_a_full_outbox_drops_the_oldest_and_counts_it() -> None:
    outbox = Outbox(capacity=2)
    for sequence in (1, 2, 3):
        outbox.put(pending(sequence))
    assert outbox.dropped == 1
    assert outbox.peek() == pending(2)
    assert len(outbox) == 2


@pytest.mark.parametrize(
    ("sequences", "why"),
    [
        ((2, 2), "a sequence is used once"),
        ((3, 2), "sequences never go back: a late message would be labelled late"),
    ],
)
def test_sequences_only_increase(sequences: tuple[int, int], why: str) -> None:
    outbox = Outbox(capacity=5)
    outbox.put(pending(sequences[0]))
    with pytest.raises(ValueError, match="increasing"):
        outbox.put(pending(sequences[1]))


def test_an_outbox_holds_something() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Outbox(capacity=0)
