"""The seam between the transports (which authenticate a device) and the telemetry pipeline
(which trusts nothing else).

A :class:`DeviceSession` exists only after the handshake proved possession of the device key
for a certificate issued by the platform device CA, not revoked or suspended, bound to exactly
one vehicle. Everything the pipeline knows about who sent a message comes from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class Transport(StrEnum):
    WEBSOCKET = "websocket"
    MQTT = "mqtt"


@dataclass(frozen=True, slots=True)
class DeviceSession:
    session_id: str
    device_id: str
    vehicle_id: str
    tenant_id: str
    certificate_serial: str
    # 32-byte key derived for this session at the handshake (HMAC-SHA256 of each message).
    session_key: bytes = field(repr=False)
    transport: Transport
    # Network identity seen at connect (IP or broker client id), for clone detection.
    peer: str
    software_version: str
    vehicle_config: str
    established_at: datetime
    # DER SubjectPublicKeyInfo of the certificate the handshake proved: the key that signs
    # this device's command results (empty where a session carries no commands).
    public_key_der: bytes = field(default=b"", repr=False)
