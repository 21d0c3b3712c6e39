"""Token buckets per device and per fleet."""

from __future__ import annotations

import dataclasses

import pytest

from fleetward.telemetry.quotas import InProcessQuotas, Rate
from unit.telemetry.kit import FakeMonotonic, new_session


@pytest.fixture
def clock() -> FakeMonotonic:
    return FakeMonotonic()


def test_a_device_gets_its_burst_then_its_rate(clock: FakeMonotonic) -> None:
    quotas = InProcessQuotas(
        device=Rate(per_second=2, burst=3), fleet=Rate(1000, 1000), monotonic=clock
    )
    session = new_session("dev_q", "veh_q", "ten_q")
    assert [(quotas.admit(session)).admitted for _ in range(4)] == [True] * 3 + [False]
    refused = quotas.admit(session)
    assert (refused.scope, refused.retry_after_ms) == ("device", 500)
    clock.advance(0.5)
    assert (quotas.admit(session)).admitted
    assert not (quotas.admit(session)).admitted
    clock.advance(3600)  # refills only up to the burst
    assert [(quotas.admit(session)).admitted for _ in range(4)] == [True] * 3 + [False]


def test_devices_do_not_share_their_buckets(clock: FakeMonotonic) -> None:
    quotas = InProcessQuotas(device=Rate(1, 1), fleet=Rate(1000, 1000), monotonic=clock)
    first = new_session("dev_1", "veh_q", "ten_q")
    second = dataclasses.replace(first, device_id="dev_2", session_id="ses_2")
    assert (quotas.admit(first)).admitted
    assert not (quotas.admit(first)).admitted
    assert (quotas.admit(second)).admitted


def test_a_fleet_refusal_takes_nothing_from_the_device(clock: FakeMonotonic) -> None:
    quotas = InProcessQuotas(device=Rate(1, 2), fleet=Rate(1, 2), monotonic=clock)
    mine = new_session("dev_m", "veh_q", "ten_q")
    neighbour = new_session("dev_n", "veh_q", "ten_q")
    assert (quotas.admit(neighbour)).admitted
    assert (quotas.admit(neighbour)).admitted
    refused = quotas.admit(mine)
    assert (refused.admitted, refused.scope) == (False, "fleet")
    clock.advance(2)  # the fleet refills; the device's two tokens were never taken
    assert (quotas.admit(mine)).admitted
    other_fleet = dataclasses.replace(mine, tenant_id="ten_other", device_id="dev_o")
    assert (quotas.admit(other_fleet)).admitted


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 10), (1, 0.5)])
def test_rates_must_be_positive(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="rate"):
        Rate(per_second=rate, burst=burst)
