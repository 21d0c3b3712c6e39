"""Stage 5: the payload schema. Signals are COVESA VSS paths with a datatype and a range;
anything not catalogued here, of the wrong type or out of range refuses the whole message.

The payload is a JSON object::

    {"signals": {"Vehicle.Speed": 52.5, "Vehicle.Cabin.Door.Row1.DriverSide.IsLocked": true}}

It names no vehicle or device: identity comes only from the session. The optional fields
``vehicle_id`` and ``device_id`` exist so that a payload naming anyone else is refused with
its own status (``foreign-identity``) rather than passing as an unknown field; when present
they must equal the session's. No field can carry a command: the object accepts these three
keys and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Annotated, Any

import msgspec

from fleetward.gateway.session import DeviceSession
from fleetward.telemetry.errors import Rejected, Status

SignalValue = float | int | bool
MAX_SIGNALS = 64


class Datatype(StrEnum):
    """VSS datatypes used by the catalogue; JSON numbers map to them as documented."""

    BOOLEAN = "boolean"
    FLOAT = "float"
    DOUBLE = "double"
    INT8 = "int8"
    UINT16 = "uint16"
    UINT32 = "uint32"


@dataclass(frozen=True, slots=True)
class SignalSpec:
    path: str
    datatype: Datatype
    unit: str
    minimum: float = 0.0
    maximum: float = 0.0


def _catalogue(*specs: SignalSpec) -> Mapping[str, SignalSpec]:
    return MappingProxyType({spec.path: spec for spec in specs})


_F, _D, _B = Datatype.FLOAT, Datatype.DOUBLE, Datatype.BOOLEAN

# Ranges are physical plausibility bounds (OBD-II PID ranges where one exists), not VSS
# "allowed" lists: a value outside them is a broken sensor or a forged message.
CATALOGUE: Mapping[str, SignalSpec] = _catalogue(
    SignalSpec("Vehicle.Speed", _F, "km/h", 0, 350),
    SignalSpec("Vehicle.TraveledDistance", _F, "km", 0, 2_000_000),
    SignalSpec("Vehicle.CurrentLocation.Latitude", _D, "degrees", -90, 90),
    SignalSpec("Vehicle.CurrentLocation.Longitude", _D, "degrees", -180, 180),
    SignalSpec("Vehicle.CurrentLocation.Heading", _D, "degrees", 0, 360),
    SignalSpec("Vehicle.Powertrain.TractionBattery.StateOfCharge.Current", _F, "percent", 0, 100),
    SignalSpec("Vehicle.Powertrain.TractionBattery.Charging.IsCharging", _B, ""),
    SignalSpec("Vehicle.Powertrain.TractionBattery.Charging.IsChargingCableConnected", _B, ""),
    SignalSpec("Vehicle.Powertrain.Range", Datatype.UINT32, "m", 0, 2_000_000),
    SignalSpec("Vehicle.Powertrain.Transmission.CurrentGear", Datatype.INT8, "", -1, 15),
    SignalSpec("Vehicle.Cabin.Door.Row1.DriverSide.IsLocked", _B, ""),
    SignalSpec("Vehicle.Cabin.Door.Row1.DriverSide.IsOpen", _B, ""),
    SignalSpec("Vehicle.Cabin.HVAC.AmbientAirTemperature", _F, "celsius", -50, 100),
    SignalSpec("Vehicle.Exterior.AirTemperature", _F, "celsius", -60, 70),
    SignalSpec("Vehicle.LowVoltageBattery.CurrentVoltage", _F, "V", 0, 60),
    SignalSpec(
        "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure", Datatype.UINT16, "kPa", 0, 1000
    ),
    SignalSpec("Vehicle.OBD.EngineSpeed", _F, "rpm", 0, 16383.75),
    SignalSpec("Vehicle.OBD.CoolantTemperature", _F, "celsius", -40, 215),
    SignalSpec("Vehicle.OBD.ThrottlePosition", _F, "percent", 0, 100),
)


class UnverifiedPayload(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """The payload's shape before any signal is checked (the slow path's view)."""

    signals: dict[str, Any]
    vehicle_id: str | None = None
    device_id: str | None = None


_PYTHON_TYPES: Mapping[Datatype, type] = MappingProxyType(
    {
        Datatype.BOOLEAN: bool,
        Datatype.FLOAT: float,
        Datatype.DOUBLE: float,
        Datatype.INT8: int,
        Datatype.UINT16: int,
        Datatype.UINT32: int,
    }
)


def _field_type(spec: SignalSpec) -> Any:
    python_type = _PYTHON_TYPES[spec.datatype]
    if python_type is bool:
        return bool | msgspec.UnsetType
    bounded = Annotated[python_type, msgspec.Meta(ge=spec.minimum, le=spec.maximum)]  # type: ignore[valid-type]
    return bounded | msgspec.UnsetType


# The fast path: one struct whose fields are the catalogue, so that decoding checks names,
# types and ranges in msgspec's C code (about 1 us a payload). Absent signals stay UNSET and
# are left out when the struct is encoded for storage.
SIGNAL_PATHS: tuple[str, ...] = tuple(CATALOGUE)
Signals: type[msgspec.Struct] = msgspec.defstruct(
    "Signals",
    [
        (f"s{n}", _field_type(spec), msgspec.field(name=spec.path, default=msgspec.UNSET))
        for n, spec in enumerate(CATALOGUE.values())
    ],
    forbid_unknown_fields=True,
    frozen=True,
    # Scalars only: no reference cycle is possible, so the cyclic collector need not track
    # the two structs built per frame (fewer young-generation collections).
    gc=False,
)
_Payload: type[msgspec.Struct] = msgspec.defstruct(
    "Payload",
    [("signals", Signals), ("vehicle_id", str | None, None), ("device_id", str | None, None)],
    forbid_unknown_fields=True,
    frozen=True,
    gc=False,
)
_DECODER = msgspec.json.Decoder(_Payload)
_UNVERIFIED_DECODER = msgspec.json.Decoder(UnverifiedPayload)
_UNSET = msgspec.UNSET
# What decoding hostile bytes can raise: malformed JSON or a wrong shape (DecodeError and its
# ValidationError), invalid UTF-8, and nesting deeper than the decoder's limit.
_UNDECODABLE = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def validate_payload(payload: bytes, session: DeviceSession) -> msgspec.Struct:
    """Decode and check a payload; returns its :data:`Signals` (floats as floats)."""
    return checked_signals(payload, session)[0]


def checked_signals(
    payload: bytes, session: DeviceSession
) -> tuple[msgspec.Struct, tuple[object, ...]]:
    """:func:`validate_payload`, also returning the signals' values in catalogue order (absent
    ones UNSET), which the check computes anyway and the pipeline's metrics count.

    A payload refused by the fast path is examined again by :func:`_refusal`, which names
    the first thing wrong with it; the fast path alone decides what is accepted.
    """
    try:
        decoded = _DECODER.decode(payload)
    except _UNDECODABLE:
        raise _refusal(payload, session) from None
    if _names_another(payload, decoded.vehicle_id, decoded.device_id, session):  # type: ignore[attr-defined]
        raise Rejected(Status.FOREIGN_IDENTITY, "payload names another vehicle or device")
    signals: msgspec.Struct = decoded.signals  # type: ignore[attr-defined]
    values = msgspec.structs.astuple(signals)
    if values.count(_UNSET) == len(values):
        raise Rejected(Status.MALFORMED_PAYLOAD, "no signals")
    return signals, values


def _names_another(
    payload: bytes, vehicle_id: str | None, device_id: str | None, session: DeviceSession
) -> bool:
    """Whether the payload names a vehicle or device other than the session's.

    The decoders keep only the last occurrence of a repeated key, so a payload giving
    ``vehicle_id`` twice, another vehicle's first and its own last, would pass on the last;
    whoever reads the kept raw payload (the quarantine table) may take the first. When an
    identity field is present (rare: it is optional), every occurrence of it is read.

    A null decodes to None like an absent field, so a last occurrence ``null`` would hide
    the ones before it: both None means absent only when the payload holds no ``null`` (no
    accepted signal is null, so the common payload pays one byte search).
    """
    if vehicle_id is None and device_id is None and b"null" not in payload:
        return False
    if vehicle_id not in (None, session.vehicle_id) or device_id not in (None, session.device_id):
        return True
    own = {"vehicle_id": session.vehicle_id, "device_id": session.device_id}
    try:
        # The hook turns every object into its list of pairs, repeats kept; the outermost
        # call's list is what loads returns (the decoder above accepted the same bytes).
        pairs = json.loads(payload, object_pairs_hook=list)
    except (ValueError, RecursionError):
        return True  # unreadable here although decoded there: not proven to be its own
    return any(own.get(key, value) != value for key, value in pairs)


def _object_names_another(payload: bytes, session: DeviceSession) -> bool:
    """Whether a payload that is not of the payload's shape (an unknown key, signals that are
    no object...) is still a JSON object with an identity field not the session's own: the
    name is what matters, and a malformation beside it must not turn an impersonation (one
    refusal quarantines) into a malformed payload (one point of ten)."""
    try:
        pairs = json.loads(payload, object_pairs_hook=list)
    except (ValueError, RecursionError):
        return False  # not JSON: it names no one
    # An object's pairs are tuples; a top-level array (or anything else) holds no field.
    if not isinstance(pairs, list) or not all(type(pair) is tuple for pair in pairs):
        return False
    own = {"vehicle_id": session.vehicle_id, "device_id": session.device_id}
    return any(key in own and own[key] != value for key, value in pairs)


def _refusal(payload: bytes, session: DeviceSession) -> Rejected:
    """Why the fast path refused ``payload``, as precisely as the checks below can tell."""
    try:
        unverified = _UNVERIFIED_DECODER.decode(payload)
    except _UNDECODABLE:
        if _object_names_another(payload, session):
            return Rejected(Status.FOREIGN_IDENTITY, "payload names another vehicle or device")
        return Rejected(Status.MALFORMED_PAYLOAD, "not a payload object")
    if _names_another(payload, unverified.vehicle_id, unverified.device_id, session):
        return Rejected(Status.FOREIGN_IDENTITY, "payload names another vehicle or device")
    if not 1 <= len(unverified.signals) <= MAX_SIGNALS:
        return Rejected(Status.MALFORMED_PAYLOAD, "signal count out of bounds")
    for path, value in unverified.signals.items():
        spec = CATALOGUE.get(path)
        if spec is None:
            return Rejected(Status.UNKNOWN_SIGNAL, "signal not in the catalogue")
        refusal = _check(spec, value)
        if refusal is not None:
            return refusal
    # Both paths agree on every rule above; anything else the fast path saw is malformed.
    return Rejected(Status.MALFORMED_PAYLOAD, "refused by the payload decoder")


def _check(spec: SignalSpec, value: object) -> Rejected | None:
    # bool is a subclass of int in Python: it must never pass as a number, nor 1 as true.
    if spec.datatype is Datatype.BOOLEAN:
        if not isinstance(value, bool):
            return Rejected(Status.WRONG_TYPE, f"{spec.path} is boolean")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Rejected(Status.WRONG_TYPE, f"{spec.path} is a number")
    if _PYTHON_TYPES[spec.datatype] is int and not isinstance(value, int):
        return Rejected(Status.WRONG_TYPE, f"{spec.path} is an integer")
    # Compared without conversion: a 400-digit integer must not overflow float().
    if not spec.minimum <= value <= spec.maximum:
        return Rejected(Status.OUT_OF_RANGE, f"{spec.path} out of range")
    return None
