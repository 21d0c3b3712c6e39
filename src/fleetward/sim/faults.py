"""Faults a simulated vehicle can be told to commit, and what the platform must answer.

Each fault is committed on the vehicle's fault ticks (every ``every``-th message); its other
messages are clean. What each proves, with the documented answer (``docs/telemetry-format.md``
section 5, ``docs/vehicle-protocol.md`` section 4.8):

============== ================================================ =========================
fault          the vehicle                                      the platform answers
============== ================================================ =========================
offline        closes its session, samples into its outbox,     ``accepted``, stored with
               reconnects and sends them flagged                the store-and-forward label
clock-drift    stamps the message far ahead of the server       ``clock-drift``
replay         sends the exact bytes of its previous frame      ``stale-counter``
tamper         flips one payload bit after sealing              ``bad-mac``
out-of-range   reports an impossible speed                      ``out-of-range``
foreign        names another vehicle in the payload             ``foreign-identity`` (and
                                                                quarantine at once)
clone          a copy of the device opens a second session      ``accepted``: the device is
                                                                quarantined, its frames set
                                                                apart, no copy is told
oversize       sends a frame above 8,192 bytes                  ``too-large``
garbage        seals a payload that is not JSON                 ``malformed-payload``
wrong-frame    sends a frame of another type (a handshake       ``malformed-frame``
               message's type byte where the telemetry
               version belongs)
flood          sends back to back, without pausing, until the   ``quota-exceeded`` (with a
               platform refuses (at most ``flood_max``)         retry time); the rest
                                                                ``accepted``
sleep          parks, closes its session and stays quiet for    ``accepted`` (the message
               a few ticks (nothing sampled), then wakes: a     on waking, in a new
               new session and a live message                  session)
============== ================================================ =========================

Offline, sleep and clone are behaviours of sessions; flood is one of rate; the others are a
property of one frame (``frames.FRAME_FAULTS``).

Repeated refusals quarantine a device (weights in ``fleetward.telemetry.quarantine``); the
replies do not change, so the expected status of each fault holds before and after.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from fleetward.telemetry.errors import Status
from fleetward.telemetry.limits import DEFAULT_MAX_FRAME_BYTES


class Fault(StrEnum):
    OFFLINE = "offline"
    CLOCK_DRIFT = "clock-drift"
    REPLAY = "replay"
    TAMPER = "tamper"
    OUT_OF_RANGE = "out-of-range"
    FOREIGN = "foreign"
    CLONE = "clone"
    OVERSIZE = "oversize"
    GARBAGE = "garbage"
    WRONG_FRAME = "wrong-frame"
    FLOOD = "flood"
    SLEEP = "sleep"


EXPECTED: Final[Mapping[Fault, Status]] = MappingProxyType(
    {
        Fault.OFFLINE: Status.ACCEPTED,
        Fault.CLOCK_DRIFT: Status.CLOCK_DRIFT,
        Fault.REPLAY: Status.STALE_COUNTER,
        Fault.TAMPER: Status.BAD_MAC,
        Fault.OUT_OF_RANGE: Status.OUT_OF_RANGE,
        Fault.FOREIGN: Status.FOREIGN_IDENTITY,
        Fault.CLONE: Status.ACCEPTED,
        Fault.OVERSIZE: Status.TOO_LARGE,
        Fault.GARBAGE: Status.MALFORMED_PAYLOAD,
        Fault.WRONG_FRAME: Status.MALFORMED_FRAME,
        Fault.FLOOD: Status.QUOTA_EXCEEDED,
        Fault.SLEEP: Status.ACCEPTED,
    }
)

# Ahead of the server by more than the telemetry skew (30 s) but within the handshake's
# (120 s): the session opens, its drifted messages are refused.
DEFAULT_DRIFT_MS: Final = 90_000
# An impossible value for Vehicle.Speed (0 … 350 km/h).
IMPOSSIBLE_SPEED: Final = 999.0
OVERSIZE_BYTES: Final = DEFAULT_MAX_FRAME_BYTES + 808
# Not JSON (and not UTF-8): sealed with the session key, so only the payload stage refuses it.
GARBAGE_PAYLOAD: Final = b"\xff\xfe<telemetry>garbage</telemetry>"
# A flooding vehicle stops at the first quota refusal, or after this many messages.
DEFAULT_FLOOD_MAX: Final = 1000
# A vehicle id of the right shape that is nobody's session: the foreign fault names it when
# the fleet has no other vehicle.
STRANGER_VEHICLE_ID: Final = "veh_" + "a" * 26


@dataclass(frozen=True, slots=True)
class FaultAssignment:
    """How many vehicles of the fleet commit each fault (one fault per vehicle)."""

    counts: Mapping[Fault, int]

    @classmethod
    def parse(cls, spec: str) -> FaultAssignment:
        """``"tamper=2,replay,offline=3"``: a fault alone means one vehicle."""
        counts: dict[Fault, int] = {}
        for item in (part.strip() for part in spec.split(",")):
            if not item:
                continue
            name, _, number = item.partition("=")
            try:
                fault = Fault(name.strip())
            except ValueError:
                known = ", ".join(f.value for f in Fault)
                raise ValueError(f"unknown fault {name.strip()!r} (known: {known})") from None
            count = int(number) if number else 1
            if count < 1 or fault in counts:
                raise ValueError(f"fault {fault.value}: give a positive count, once")
            counts[fault] = count
        return cls(MappingProxyType(counts))

    @classmethod
    def each(cls, faults: Iterable[Fault] = tuple(Fault)) -> FaultAssignment:
        return cls(MappingProxyType(dict.fromkeys(faults, 1)))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def plan(self, vehicles: int) -> list[Fault | None]:
        """One entry per vehicle: its fault, or None for a clean one. Faulty vehicles come
        last so that the clean ones are the fleet's first (and the demo's named) vehicles."""
        if self.total > vehicles:
            raise ValueError(f"{self.total} faulty vehicles asked of a fleet of {vehicles}")
        faulty = [fault for fault, count in self.counts.items() for _ in range(count)]
        return [None] * (vehicles - len(faulty)) + faulty
