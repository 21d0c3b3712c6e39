"""The topic tree. Every device topic sits under its own device id, so that one pattern ACL
(``%u`` = the certificate's CN = the device id) confines a device to its own branch::

    fleetward/v1/devices/<device id>/session/up     device -> gateway  HELLO, RESPONSE, BYE
    fleetward/v1/devices/<device id>/session/down   gateway -> device  CHALLENGE, WELCOME, CLOSED
    fleetward/v1/devices/<device id>/telemetry      device -> gateway  telemetry frames, RESULTs
    fleetward/v1/devices/<device id>/replies        gateway -> device  one reply per frame
    fleetward/v1/devices/<device id>/commands       gateway -> device  COMMAND frames

A command RESULT (first byte 0x03) travels on ``telemetry``, in order with the session's
frames, exactly as on a WebSocket; a device can publish no ``commands`` topic, not even its own.

The gateway trusts the device id of a topic only because the broker enforces the ACL, and
then only as far as the handshake proves it (the proven certificate must name that device).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from fleetward.core.ids import is_id
from fleetward.devices.names import DEVICE_ID_PREFIX

ROOT: Final = "fleetward/v1/devices"


class Channel(StrEnum):
    SESSION_UP = "session/up"
    SESSION_DOWN = "session/down"
    TELEMETRY = "telemetry"
    REPLIES = "replies"
    COMMANDS = "commands"


# What a device may publish, and what it may receive, each under its own id.
DEVICE_WRITES: Final = (Channel.SESSION_UP, Channel.TELEMETRY)
DEVICE_READS: Final = (Channel.SESSION_DOWN, Channel.REPLIES, Channel.COMMANDS)
# What the gateway consumes (from every device).
GATEWAY_READS: Final = DEVICE_WRITES


def device_topic(device_id: str, channel: Channel) -> str:
    if not is_id(device_id, DEVICE_ID_PREFIX):
        raise ValueError("not a device id")
    return f"{ROOT}/{device_id}/{channel.value}"


def pattern(channel: Channel, placeholder: str) -> str:
    """The topic of ``channel`` with ``placeholder`` (``%u``, ``+``) for the device id."""
    return f"{ROOT}/{placeholder}/{channel.value}"


def parse(topic: str) -> tuple[str, Channel] | None:
    """(device id, channel) of a device topic the gateway consumes; None for anything else."""
    prefix = ROOT + "/"
    if not topic.startswith(prefix):
        return None
    device_id, _, rest = topic.removeprefix(prefix).partition("/")
    if not is_id(device_id, DEVICE_ID_PREFIX):
        return None
    for channel in GATEWAY_READS:
        if rest == channel.value:
            return device_id, channel
    return None
