"""How often an abuse fact is worth an audit event.

A refusal for quota, or the use of a raised quota, can repeat on every request: an actor
hammering a limit would otherwise turn each refused request into a database write (an
amplification of exactly the traffic the limit is for). :class:`Notices` says whether a
fact is due again: once per ``key`` per period, with how many were folded into it since
the last one, so the audit trail keeps the counts without a row per request.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime, timedelta
from typing import Final

DEFAULT_MAX_KEYS: Final = 50_000


class Notices:
    """Safe for concurrent use on one event loop (no awaits); bounded to ``max_keys``."""

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        self._max = max_keys
        # key -> (due again at, folded since the last notice)
        self._keys: OrderedDict[str, tuple[datetime, int]] = OrderedDict()

    def due(self, key: str, now: datetime, every: timedelta) -> int | None:
        """``None`` when ``key`` was noticed less than ``every`` ago (counted as folded);
        else the number of occurrences folded since its last notice (0 for the first)."""
        found = self._keys.get(key)
        if found is not None and now < found[0]:
            self._keys[key] = (found[0], found[1] + 1)
            return None
        folded = found[1] if found is not None else 0
        self._keys[key] = (now + every, 0)
        self._keys.move_to_end(key)
        while len(self._keys) > self._max:
            self._keys.popitem(last=False)
        return folded

    def seen(self, key: str, now: datetime) -> bool:
        """Whether ``key`` was marked (:meth:`mark`, or noticed by :meth:`due`) and is still
        within its period; does not count or mark anything."""
        found = self._keys.get(key)
        return found is not None and now < found[0]

    def mark(self, key: str, now: datetime, every: timedelta) -> None:
        """Mark ``key`` for ``every`` from ``now`` (e.g. once a charge has succeeded)."""
        self._keys[key] = (now + every, 0)
        self._keys.move_to_end(key)
        while len(self._keys) > self._max:
            self._keys.popitem(last=False)
