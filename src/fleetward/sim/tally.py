"""What a simulated fleet observed: replies by status, faults by whether the platform answered
as documented, sessions and their ends, and ack latency. Everything here comes from the
server's authenticated replies and close codes: the simulator never looks into the store."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from fleetward.sim.faults import Fault
from fleetward.telemetry.errors import Status


@dataclass(slots=True)
class Tally:
    """Counts of one vehicle, or of a fleet once merged. Not thread-safe: one event loop."""

    replies: Counter[str] = field(default_factory=Counter)
    # fault -> (as documented, not as documented)
    faults: dict[Fault, list[int]] = field(default_factory=dict)
    sessions_opened: int = 0
    store_and_forward_sent: int = 0
    outbox_dropped: int = 0
    sleeps: int = 0  # times a vehicle fell asleep (closed its session and went quiet)
    quiet_ticks: int = 0  # ticks spent asleep: nothing sampled, nothing sent
    flooded: int = 0  # messages sent in floods
    # "handshake:<code>" and "closed:<code>": how sessions were refused or ended by the server.
    ends: Counter[str] = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)
    # Command envelopes received: "<action>:<reason>" (acted:ok, refused:expired, ...).
    commands: Counter[str] = field(default_factory=Counter)
    handshakes_s: list[float] = field(default_factory=list)
    # perf_counter() of the first and last reply: the window in which messages flowed.
    first_reply_at: float = math.inf
    last_reply_at: float = -math.inf

    def reply(self, status: Status, latency_s: float, *, at: float) -> None:
        self.replies[status.slug] += 1
        self.latencies_s.append(latency_s)
        self.first_reply_at = min(self.first_reply_at, at)
        self.last_reply_at = max(self.last_reply_at, at)

    def handshake(self, seconds: float) -> None:
        self.sessions_opened += 1
        self.handshakes_s.append(seconds)

    def fault(self, fault: Fault, *, as_documented: bool) -> None:
        seen = self.faults.setdefault(fault, [0, 0])
        seen[0 if as_documented else 1] += 1

    def merge(self, other: Tally) -> None:
        self.replies.update(other.replies)
        self.commands.update(other.commands)
        for fault, (good, bad) in other.faults.items():
            seen = self.faults.setdefault(fault, [0, 0])
            seen[0] += good
            seen[1] += bad
        self.sessions_opened += other.sessions_opened
        self.store_and_forward_sent += other.store_and_forward_sent
        self.outbox_dropped += other.outbox_dropped
        self.sleeps += other.sleeps
        self.quiet_ticks += other.quiet_ticks
        self.flooded += other.flooded
        self.ends.update(other.ends)
        self.latencies_s.extend(other.latencies_s)
        self.handshakes_s.extend(other.handshakes_s)
        self.first_reply_at = min(self.first_reply_at, other.first_reply_at)
        self.last_reply_at = max(self.last_reply_at, other.last_reply_at)

    @property
    def messages(self) -> int:
        return sum(self.replies.values())

    @property
    def accepted(self) -> int:
        return self.replies[Status.ACCEPTED.slug] + self.replies[Status.DUPLICATE.slug]

    @property
    def undocumented(self) -> int:
        """Faults the platform did not answer as documented: zero in a healthy platform."""
        return sum(bad for _good, bad in self.faults.values())

    def percentile_ms(self, fraction: float, samples: list[float] | None = None) -> float:
        """Nearest-rank percentile of ack latencies (or of ``samples``), in milliseconds."""
        values = self.latencies_s if samples is None else samples
        if not values:
            return 0.0
        ordered = sorted(values)
        index = min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))
        return ordered[index] * 1000

    @property
    def reply_window_s(self) -> float:
        return max(0.0, self.last_reply_at - self.first_reply_at)

    def summary(self, elapsed_s: float) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "accepted": self.accepted,
            "rejected": {
                slug: n
                for slug, n in sorted(self.replies.items())
                if slug not in (Status.ACCEPTED.slug, Status.DUPLICATE.slug)
            },
            "faults": {
                fault.value: {"as_documented": good, "not_as_documented": bad}
                for fault, (good, bad) in sorted(self.faults.items())
            },
            "sessions_opened": self.sessions_opened,
            "store_and_forward_sent": self.store_and_forward_sent,
            "outbox_dropped": self.outbox_dropped,
            "sleeps": self.sleeps,
            "quiet_ticks": self.quiet_ticks,
            "flooded": self.flooded,
            "session_ends": dict(sorted(self.ends.items())),
            "elapsed_s": round(elapsed_s, 3),
            "messages_per_s": round(self.messages / elapsed_s, 1) if elapsed_s > 0 else 0.0,
            # The rate while messages flowed (from the first reply to the last): without the
            # time spent opening sessions.
            "reply_window_s": round(self.reply_window_s, 3),
            "messages_per_s_in_window": (
                round(self.messages / self.reply_window_s, 1) if self.reply_window_s > 0 else 0.0
            ),
            "handshake_ms": {
                "p50": round(self.percentile_ms(0.50, self.handshakes_s), 2),
                "p99": round(self.percentile_ms(0.99, self.handshakes_s), 2),
            },
            "ack_ms": {
                "p50": round(self.percentile_ms(0.50), 2),
                "p99": round(self.percentile_ms(0.99), 2),
                "max": round(self.percentile_ms(1.0), 2),
            },
        }
