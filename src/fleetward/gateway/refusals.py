"""How many refused WebSocket handshakes are recorded one by one, per source network.

A refused handshake costs its peer a connection and a few bytes, whether or not it ever proved
a device key; each refusal the gateway records is an audit write. So per source network (the
login throttle's :func:`~fleetward.identity.login.limits.network_of`: an IPv4 address, an IPv6
/64), at most ``per_network`` refusals are recorded per window and the rest are only counted.
When a network's window is over, its count is handed back once (:class:`Unrecorded`) for one
summary event (``device:handshake:unrecorded``), so an investigator sees the flood and its
size; ``unrecorded`` is the running total an operator watches. Handed back at the next
refusal, or by :meth:`RefusalBudget.ended`, which the gateway asks on a timer: a flood that
stops is summarised all the same.

In memory and bounded: at most ``networks`` networks are tracked at once. A refusal from one
more network while every tracked window is current is counted under :data:`UNTRACKED` and
never recorded one by one: more addresses buy an attacker no more writes (fail closed), and
the count still shows. The device is told its close code either way; only the record differs.

For one event loop (no awaits inside).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

UNTRACKED: Final = "untracked"


@dataclass(slots=True)
class _Tally:
    started: datetime
    recorded: int = 0
    unrecorded: int = 0


@dataclass(frozen=True, slots=True)
class Unrecorded:
    """A network's window that is over, with the refusals it did not record."""

    network: str
    started: datetime
    recorded: int
    unrecorded: int


class RefusalBudget:
    def __init__(self, *, per_network: int, window: timedelta, networks: int) -> None:
        if per_network < 1 or networks < 1 or window <= timedelta(0):
            raise ValueError("a refusal budget needs positive limits and window")
        self._per_network = per_network
        self._window = window
        self._networks = networks
        # Oldest window first: a network's entry is added when its window starts, so the
        # windows that are over are always at the front.
        self._tallies: OrderedDict[str, _Tally] = OrderedDict()
        self._untracked: _Tally | None = None
        self.unrecorded = 0

    def __len__(self) -> int:
        return len(self._tallies)

    def admit(self, network: str, now: datetime) -> tuple[bool, list[Unrecorded]]:
        """A refusal from ``network``: whether to record it, and the windows now over that
        left refusals unrecorded (each handed back once, to be recorded now)."""
        ended = self._expire(now)
        tally = self._tallies.get(network)
        if tally is None:
            if len(self._tallies) < self._networks:
                tally = self._tallies[network] = _Tally(now)
            else:
                if self._untracked is None:
                    self._untracked = _Tally(now)
                self._untracked.unrecorded += 1
                self.unrecorded += 1
                return False, ended
        if tally.recorded < self._per_network:
            tally.recorded += 1
            return True, ended
        tally.unrecorded += 1
        self.unrecorded += 1
        return False, ended

    def ended(self, now: datetime) -> list[Unrecorded]:
        """The windows over at ``now`` that left refusals unrecorded (each handed back once,
        here or by :meth:`admit`)."""
        return self._expire(now)

    def _expire(self, now: datetime) -> list[Unrecorded]:
        ended: list[Unrecorded] = []
        while self._tallies:
            network, tally = next(iter(self._tallies.items()))
            if now - tally.started < self._window:
                break
            del self._tallies[network]
            if tally.unrecorded:
                ended.append(Unrecorded(network, tally.started, tally.recorded, tally.unrecorded))
        untracked = self._untracked
        if untracked is not None and now - untracked.started >= self._window:
            self._untracked = None
            ended.append(Unrecorded(UNTRACKED, untracked.started, 0, untracked.unrecorded))
        return ended
