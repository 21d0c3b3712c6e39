"""The process's cyclic garbage collector, set once after start-up.

What start-up built (modules, routes, the compiled policy, the keyring, the pipeline's
stages) lives as long as the process: frozen out of the collector, the full passes no longer
walk all of it while every request and frame in flight waits (full passes of 75-450 ms were
measured on the app, tens of ms in the telemetry benchmark's process).
"""

from __future__ import annotations

import gc


def freeze_live_objects() -> None:
    """Collect, then freeze what is left: from now on the full passes skip it. Frozen objects
    are never collected, so only for what lives as long as the process."""
    gc.collect()
    gc.freeze()


def freeze_start_up_objects() -> None:
    """:func:`freeze_live_objects`, once per process: the first caller does it (a test
    session starts many apps; later calls must not freeze their garbage)."""
    if gc.get_freeze_count() == 0:
        freeze_live_objects()
