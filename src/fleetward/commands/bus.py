"""Hints between replicas: "a job was queued for this vehicle".

With several API replicas (``docs/operations.md``), a vehicle holds its session on one of them
while a command for it may be created on any other. The store is the only source of truth;
what crosses replicas here is a hint to look at it now: the replica holding the vehicle's
session delivers the job at once (reading it from the store, delivering it only if it is
still queued and is that vehicle's) instead of at its next sweep (up to ``sweep_interval``
later).

A hint is never needed for correctness: a lost one costs latency, never a command (the sweep
delivers every queued job of a connected vehicle). And a forged one gains nothing: a replica
acting on it only reads the store and delivers what is queued there, so whoever can publish
on the bus can at most make a replica look sooner. Messages are parsed strictly
(:func:`decode`): anything else is dropped.

Job changes are not published: followers on another replica than the one that changed the job
see it at their next poll (a second). Measured, a hint costs each replica ~100-150 us of CPU
to publish and more to receive (every replica hears every hint); a command changes state four
or five times, and few are followed from another replica than their vehicle's.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from fleetward.core.ids import is_id

# The longest message a replica reads (a kind, an origin, two ids and the separators).
MAX_MESSAGE: Final = 128
_ORIGIN_HEX: Final = 16


@dataclass(frozen=True, slots=True)
class Hint:
    """Job ``job_id`` was queued for ``vehicle_id`` on replica ``origin``."""

    origin: str  # the publishing replica (a replica ignores its own hints)
    job_id: str
    vehicle_id: str


# Runs on the event loop; must not block (it may start tasks) and must not raise.
OnHint = Callable[[Hint], None]


def new_origin() -> str:
    """A replica's identity on the bus: random per process start."""
    return secrets.token_hex(_ORIGIN_HEX // 2)


# The message's first field: its format (another kind of hint would take another tag).
_QUEUED: Final = "q"


def encode(hint: Hint) -> bytes:
    return " ".join((_QUEUED, hint.origin, hint.job_id, hint.vehicle_id)).encode("ascii")


def decode(message: bytes) -> Hint | None:
    """The hint in ``message``, or None for anything that is not exactly one."""
    if len(message) > MAX_MESSAGE:
        return None
    try:
        parts = message.decode("ascii").split(" ")
    except UnicodeDecodeError:
        return None
    if len(parts) != 4:
        return None
    kind, origin, job_id, vehicle_id = parts
    if kind != _QUEUED:
        return None
    if len(origin) != _ORIGIN_HEX or any(c not in "0123456789abcdef" for c in origin):
        return None
    if not is_id(job_id, "job") or not is_id(vehicle_id, "veh"):
        return None
    return Hint(origin, job_id, vehicle_id)


class CommandBus(Protocol):
    """Carries hints to the other replicas. ``queued`` never blocks and never raises (a hint
    that cannot go is dropped: see the module docstring); ``on_hint`` is called on the event
    loop with each hint another replica published."""

    async def start(self, on_hint: OnHint) -> None: ...

    async def stop(self) -> None: ...

    def queued(self, vehicle_id: str, job_id: str) -> None: ...


class SingleReplica:
    """No other replica to tell (the default: one process serves the API and the vehicles)."""

    async def start(self, on_hint: OnHint) -> None:
        return None

    async def stop(self) -> None:
        return None

    def queued(self, vehicle_id: str, job_id: str) -> None:
        return None


__all__ = [
    "MAX_MESSAGE",
    "CommandBus",
    "Hint",
    "OnHint",
    "SingleReplica",
    "decode",
    "encode",
    "new_origin",
]
