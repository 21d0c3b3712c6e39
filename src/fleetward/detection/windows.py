"""Sliding windows over event time, per key, bounded in keys and entries.

Windows run on the events' own ``occurred_at``, never the wall clock, so a replay of the same
events gives the same answers (restart, tests).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class Entry:
    at: datetime
    event_id: str
    value: str


class Window:
    """Entries per key no older than ``span`` before the newest entry added for that key
    (with ``unique_values``, only the newest entry of each value).

    The least recently used keys are dropped past ``max_keys``, and the oldest entries of a key
    past ``max_entries``: memory stays bounded whatever the traffic. Not thread-safe.
    """

    def __init__(
        self,
        span: timedelta,
        *,
        max_keys: int = 50_000,
        max_entries: int = 1_000,
        unique_values: bool = False,
    ) -> None:
        if span <= timedelta(0) or max_keys < 1 or max_entries < 1:
            raise ValueError("a window needs a positive span and room for entries")
        self._span = span
        # One entry per value (the newest): for rules that count distinct values, so repeats
        # of one value cannot push the others out of a key's bounded entries.
        self._unique = unique_values
        self._max_keys = max_keys
        self._max_entries = max_entries
        self._keys: OrderedDict[str, deque[Entry]] = OrderedDict()

    def add(self, key: str, at: datetime, event_id: str, value: str = "") -> list[Entry]:
        """Add one entry; return the key's entries within the window, oldest first."""
        entries = self._keys.get(key)
        if entries is None:
            entries = self._keys[key] = deque(maxlen=self._max_entries)
            if len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
            if self._unique:
                for old in entries:
                    if old.value == value:
                        entries.remove(old)
                        break
        entries.append(Entry(at, event_id, value))
        horizon = at - self._span
        while entries and entries[0].at < horizon:
            entries.popleft()
        return list(entries)


def distinct(entries: list[Entry]) -> set[str]:
    return {e.value for e in entries}


def describe(span: timedelta) -> str:
    """A window for a summary line: ``10 min``, ``24 h``."""
    seconds = int(span.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
