"""The job state machine: which transitions exist, which states are final, which hold the
vehicle's security slot.

```
requested -> authorized | rejected
authorized -> queued | rejected | cancelled
queued -> delivered | expired | cancelled | rejected        (rejected: re-check at delivery)
delivered -> executed | failed | rejected_by_vehicle | outcome_unknown
outcome_unknown -> executed | failed | rejected_by_vehicle  (a late, signed answer)
executed -> confirmed                                       (telemetry shows the effect)
```

A job that was delivered and never answered is ``outcome_unknown``, never ``expired``: the
vehicle may have acted. An illegal transition raises :class:`IllegalTransition`; nothing is
ever applied silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from fleetward.commands.models import JobState

S = JobState

TRANSITIONS: Final[Mapping[JobState, frozenset[JobState]]] = MappingProxyType(
    {
        S.REQUESTED: frozenset({S.AUTHORIZED, S.REJECTED}),
        S.AUTHORIZED: frozenset({S.QUEUED, S.REJECTED, S.CANCELLED}),
        S.QUEUED: frozenset({S.DELIVERED, S.EXPIRED, S.CANCELLED, S.REJECTED}),
        S.DELIVERED: frozenset({S.EXECUTED, S.FAILED, S.REJECTED_BY_VEHICLE, S.OUTCOME_UNKNOWN}),
        S.OUTCOME_UNKNOWN: frozenset({S.EXECUTED, S.FAILED, S.REJECTED_BY_VEHICLE}),
        S.EXECUTED: frozenset({S.CONFIRMED}),
        S.REJECTED: frozenset(),
        S.CANCELLED: frozenset(),
        S.EXPIRED: frozenset(),
        S.FAILED: frozenset(),
        S.REJECTED_BY_VEHICLE: frozenset(),
        S.CONFIRMED: frozenset(),
    }
)

# States in which the job may still reach the vehicle: a security-relevant job holds the
# vehicle's slot (CommandJob.exclusive_vehicle) only while in one of these.
IN_FLIGHT: Final = frozenset({S.REQUESTED, S.AUTHORIZED, S.QUEUED, S.DELIVERED})
# Nothing more will happen to the job (executed may still be confirmed).
FINAL: Final = frozenset(state for state, nexts in TRANSITIONS.items() if not nexts)
# Not final, but the watchers have nothing to wait for on the vehicle's side.
SETTLED: Final = FINAL | {S.EXECUTED, S.OUTCOME_UNKNOWN}


# A topological order of the machine: every transition goes to a higher rank, so transitions
# recorded at the same instant sort into the order they happened in.
RANK: Final[Mapping[JobState, int]] = MappingProxyType(
    {
        S.REQUESTED: 0,
        S.AUTHORIZED: 1,
        S.QUEUED: 2,
        S.DELIVERED: 3,
        S.OUTCOME_UNKNOWN: 4,
        S.EXECUTED: 5,
        S.CONFIRMED: 6,
        S.REJECTED: 7,
        S.CANCELLED: 7,
        S.EXPIRED: 7,
        S.FAILED: 7,
        S.REJECTED_BY_VEHICLE: 7,
    }
)


class IllegalTransition(Exception):
    """A transition the state machine does not have: a bug or a race, never applied."""

    def __init__(self, current: JobState, wanted: JobState) -> None:
        super().__init__(f"no transition {current.value} -> {wanted.value}")
        self.current = current
        self.wanted = wanted


def check(current: JobState, wanted: JobState) -> None:
    if wanted not in TRANSITIONS[current]:
        raise IllegalTransition(current, wanted)
