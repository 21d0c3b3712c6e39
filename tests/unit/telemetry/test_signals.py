"""The signal catalogue: every signal accepted across its range and refused just outside it;
the fast decoder and the slow classifier agree on what is wrong."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import msgspec
import pytest

from fleetward.gateway.session import DeviceSession, Transport
from fleetward.telemetry.errors import Rejected, Status
from fleetward.telemetry.signals import CATALOGUE, Datatype, SignalSpec, validate_payload

SESSION = DeviceSession(
    session_id="ses_s",
    device_id="dev_s",
    vehicle_id="veh_s",
    tenant_id="ten_s",
    certificate_serial="01",
    session_key=bytes(32),
    transport=Transport.MQTT,
    peer="client-1",
    software_version="1",
    vehicle_config="c",
    established_at=datetime(2026, 1, 1, tzinfo=UTC),
)
SPECS = list(CATALOGUE.values())


def body(values: dict[str, object]) -> bytes:
    return json.dumps({"signals": values}).encode()


def accepted(values: dict[str, object]) -> dict[str, object]:
    return msgspec.to_builtins(validate_payload(body(values), SESSION))  # type: ignore[no-any-return]


def refused(values: dict[str, object]) -> Rejected:
    with pytest.raises(Rejected) as raised:
        validate_payload(body(values), SESSION)
    return raised.value


def test_catalogue_is_vss_shaped() -> None:
    assert len(SPECS) >= 12
    for spec in SPECS:
        assert spec.path.startswith("Vehicle.")
        assert all(part[:1].isupper() for part in spec.path.split("."))
        if spec.datatype is not Datatype.BOOLEAN:
            assert spec.minimum < spec.maximum


@pytest.mark.parametrize("spec", SPECS, ids=[s.path for s in SPECS])
def test_each_signal_across_its_range(spec: SignalSpec) -> None:
    if spec.datatype is Datatype.BOOLEAN:
        assert accepted({spec.path: True}) == {spec.path: True}
        assert accepted({spec.path: False}) == {spec.path: False}
        assert refused({spec.path: 0}).status is Status.WRONG_TYPE
        return
    integer = spec.datatype in {Datatype.INT8, Datatype.UINT16, Datatype.UINT32}
    low, high = (int(spec.minimum), int(spec.maximum)) if integer else (spec.minimum, spec.maximum)
    assert accepted({spec.path: low}) == {spec.path: low}
    assert accepted({spec.path: high}) == {spec.path: high}
    step = 1 if integer else 0.001
    assert refused({spec.path: low - step}).status is Status.OUT_OF_RANGE
    assert refused({spec.path: high + step}).status is Status.OUT_OF_RANGE
    assert refused({spec.path: "1"}).status is Status.WRONG_TYPE
    assert refused({spec.path: True}).status is Status.WRONG_TYPE


def test_a_full_snapshot_of_every_signal_is_accepted() -> None:
    values = {
        spec.path: True if spec.datatype is Datatype.BOOLEAN else spec.minimum for spec in SPECS
    }
    assert set(accepted(values)) == set(CATALOGUE)


REFUSALS = [
    ({"Vehicle.Nope": 1}, Status.UNKNOWN_SIGNAL),
    ({"Vehicle.Speed": "fast"}, Status.WRONG_TYPE),
    ({"Vehicle.Speed": 1e9}, Status.OUT_OF_RANGE),
    ({"Vehicle.Powertrain.Range": -1}, Status.OUT_OF_RANGE),
    ({"Vehicle.Powertrain.Range": 1.5}, Status.WRONG_TYPE),
    ({"Vehicle.Cabin.Door.Row1.DriverSide.IsOpen": None}, Status.WRONG_TYPE),
]


@pytest.mark.parametrize(("values", "status"), REFUSALS)
def test_refusals_are_named_precisely(values: dict[str, object], status: Status) -> None:
    # The fast path only says "no"; the classifier must always find the specific reason.
    rejection = refused(values)
    assert rejection.status is status
    assert rejection.detail != "refused by the payload decoder"
