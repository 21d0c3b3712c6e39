"""How a device certificate names its device and its vehicle: two URIs in the SAN.

``urn:fleetward:device:<device id>`` and ``urn:fleetward:vehicle:<vehicle id>``, exactly one of
each and nothing else. The subject is ``CN=<device id>`` for humans reading a certificate; the
platform only ever trusts the SAN.
"""

from __future__ import annotations

from typing import Final

from cryptography import x509
from cryptography.x509.oid import NameOID

from fleetward.core.ids import is_id

DEVICE_URN_PREFIX: Final = "urn:fleetward:device:"
VEHICLE_URN_PREFIX: Final = "urn:fleetward:vehicle:"
DEVICE_ID_PREFIX: Final = "dev"
VEHICLE_ID_PREFIX: Final = "veh"


def device_urn(device_id: str) -> str:
    return DEVICE_URN_PREFIX + device_id


def vehicle_urn(vehicle_id: str) -> str:
    return VEHICLE_URN_PREFIX + vehicle_id


def device_subject(device_id: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id)])


def expected_names(device_id: str, vehicle_id: str) -> list[x509.GeneralName]:
    return [
        x509.UniformResourceIdentifier(device_urn(device_id)),
        x509.UniformResourceIdentifier(vehicle_urn(vehicle_id)),
    ]


def bound_ids(names: x509.SubjectAlternativeName) -> tuple[str, str] | None:
    """(device id, vehicle id) when the SAN holds exactly one well-formed device URI and one
    well-formed vehicle URI and nothing else; None otherwise."""
    devices: list[str] = []
    vehicles: list[str] = []
    for name in names:
        if not isinstance(name, x509.UniformResourceIdentifier):
            return None
        value = name.value
        if value.startswith(DEVICE_URN_PREFIX):
            devices.append(value.removeprefix(DEVICE_URN_PREFIX))
        elif value.startswith(VEHICLE_URN_PREFIX):
            vehicles.append(value.removeprefix(VEHICLE_URN_PREFIX))
        else:
            return None
    if len(devices) != 1 or len(vehicles) != 1 or len(names) != 2:
        return None
    device_id, vehicle_id = devices[0], vehicles[0]
    if not is_id(device_id, DEVICE_ID_PREFIX) or not is_id(vehicle_id, VEHICLE_ID_PREFIX):
        return None
    return device_id, vehicle_id
