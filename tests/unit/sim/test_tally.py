"""The fleet's counts: merged per vehicle, faults split by whether the platform answered as
documented, latency percentiles by nearest rank."""

from __future__ import annotations

from fleetward.sim.faults import Fault
from fleetward.sim.tally import Tally
from fleetward.telemetry.errors import Status


def test_merge_and_summary() -> None:
    one, two = Tally(), Tally()
    for n in range(1, 100):
        one.reply(Status.ACCEPTED, n / 1000, at=float(n))
    two.reply(Status.BAD_MAC, 0.100, at=101.0)
    two.handshake(0.010)
    two.fault(Fault.TAMPER, as_documented=True)
    two.fault(Fault.REPLAY, as_documented=False)
    two.ends["closed:4001"] += 1
    two.sleeps, two.quiet_ticks, two.flooded = 1, 2, 30
    total = Tally()
    total.merge(one)
    total.merge(two)
    summary = total.summary(elapsed_s=2.0)
    assert (summary["messages"], summary["accepted"]) == (100, 99)
    assert summary["rejected"] == {"bad-mac": 1}
    assert summary["faults"] == {
        "replay": {"as_documented": 0, "not_as_documented": 1},
        "tamper": {"as_documented": 1, "not_as_documented": 0},
    }
    assert total.undocumented == 1
    assert summary["messages_per_s"] == 50.0
    assert summary["ack_ms"] == {"p50": 50.0, "p99": 99.0, "max": 100.0}
    assert summary["session_ends"] == {"closed:4001": 1}
    assert (summary["reply_window_s"], summary["messages_per_s_in_window"]) == (100.0, 1.0)
    assert summary["handshake_ms"] == {"p50": 10.0, "p99": 10.0}
    assert summary["sessions_opened"] == 1
    assert (summary["sleeps"], summary["quiet_ticks"], summary["flooded"]) == (1, 2, 30)


def test_an_empty_tally() -> None:
    assert Tally().percentile_ms(0.99) == 0.0
    assert Tally().summary(0.0)["messages_per_s"] == 0.0
