"""The process's cyclic garbage collector, set once after start-up.

What start-up built (modules, routes, the compiled policy, the keyring, the pipeline's
stages) lives as long as the process: frozen out of the collector, the full passes no longer
walk all of it while every request and frame in flight waits (full passes of 75-450 ms were
measured on the app, tens of ms in the telemetry benchmark's process).

What comes after start-up and also lives long (a gateway's vehicle sessions: their sockets,
tasks, buffers) cannot be frozen: it ends at any time, and frozen cycles are never collected.
It is walked by every full pass instead, and with CPython's default thresholds (700, 10, 10)
a server busy with commands ran one every ~5 s: with 1,000 vehicles connected, 11 full
passes of ~110 ms (up to 170 ms) in 80 s, every request in flight stalled by each
(``fleetward bench commands``). :data:`THRESHOLDS` collects the young generation every
20,000 net allocations instead of 700: the passes over the middle generation are 20x rarer,
so are the objects they move to the old one, and with them the full passes (none in the same
run; the young passes took ~0.2 s in all instead of ~0.3 s, the full ones ~0.13 s instead of
~1.2 s; docs/benchmarks.md). Cyclic garbage waits longer to be collected: at most a young
generation's worth, some megabytes.
"""

from __future__ import annotations

import gc
from typing import Final

# gc.set_threshold(young, middle, old): collect the young generation after this many net
# allocations of tracked objects, the middle one every 20 young passes, consider the old one
# every 10 middle passes (CPython then runs it only once the objects moved there since the
# last full pass are a quarter of those it holds).
THRESHOLDS: Final = (20_000, 20, 10)


def freeze_live_objects() -> None:
    """Collect, then freeze what is left: from now on the full passes skip it. Frozen objects
    are never collected, so only for what lives as long as the process."""
    gc.collect()
    gc.freeze()


def freeze_start_up_objects() -> None:
    """:func:`freeze_live_objects`, once per process: the first caller does it (a test
    session starts many apps; later calls must not freeze their garbage). Also sets the
    collector's :data:`THRESHOLDS` (every call: it is the same setting)."""
    gc.set_threshold(*THRESHOLDS)
    if gc.get_freeze_count() == 0:
        freeze_live_objects()
