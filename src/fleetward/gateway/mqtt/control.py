"""Session control messages of the MQTT transport, beside the handshake's own messages.

MQTT has no connection per session: a session is opened with HELLO (the gateway answers with
a CHALLENGE), proven with the handshake's RESPONSE and WELCOME (the exact messages of
:mod:`fleetward.gateway.handshake`), and ended with BYE by the device or CLOSED by the
gateway, which carries the close code a WebSocket close frame would carry::

    HELLO   0x10 | version     device -> gateway: please challenge me
    BYE     0x11 | version | u16 len | session_id          device -> gateway
    CLOSED  0x12 | version | u16 code | u16 len | session_id   gateway -> device

``session_id`` is empty in a CLOSED that refuses a handshake. A device ignores a CLOSED naming
a session other than its current one (a superseded session's notice may arrive late).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from fleetward.gateway.handshake import PROTOCOL_VERSION, CloseCode

MAX_SESSION_ID_BYTES: Final = 64
_CODE_AND_LENGTH: Final = struct.Struct(">HH")
_LENGTH: Final = struct.Struct(">H")


class ControlType(IntEnum):
    HELLO = 0x10
    BYE = 0x11
    CLOSED = 0x12


HELLO: Final = bytes([ControlType.HELLO, PROTOCOL_VERSION])


def kind(message: bytes) -> int | None:
    """The message type byte (handshake or control), or None for an empty message."""
    return message[0] if message else None


def bye(session_id: str) -> bytes:
    raw = _session_id(session_id)
    return bytes([ControlType.BYE, PROTOCOL_VERSION]) + _LENGTH.pack(len(raw)) + raw


def read_bye(message: bytes) -> str:
    """The session a BYE ends; ValueError for anything else."""
    if len(message) < 4 or message[:2] != bytes([ControlType.BYE, PROTOCOL_VERSION]):
        raise ValueError("not a BYE")
    (length,) = _LENGTH.unpack_from(message, 2)
    if len(message) != 4 + length:
        raise ValueError("BYE length")
    return _text(message[4:])


@dataclass(frozen=True, slots=True)
class Closed:
    code: int
    session_id: str  # empty: a refused handshake

    def encode(self) -> bytes:
        raw = _session_id(self.session_id) if self.session_id else b""
        header = bytes([ControlType.CLOSED, PROTOCOL_VERSION])
        return header + _CODE_AND_LENGTH.pack(self.code, len(raw)) + raw

    @classmethod
    def decode(cls, message: bytes) -> Closed:
        if len(message) < 6 or message[:2] != bytes([ControlType.CLOSED, PROTOCOL_VERSION]):
            raise ValueError("not a CLOSED")
        code, length = _CODE_AND_LENGTH.unpack_from(message, 2)
        if len(message) != 6 + length:
            raise ValueError("CLOSED length")
        return cls(code, _text(message[6:]) if length else "")


def closed(code: CloseCode, session_id: str = "") -> bytes:
    return Closed(int(code), session_id).encode()


def _session_id(session_id: str) -> bytes:
    raw = session_id.encode("ascii")
    if not 1 <= len(raw) <= MAX_SESSION_ID_BYTES:
        raise ValueError("a session id is 1..64 ASCII bytes")
    return raw


def _text(raw: bytes) -> str:
    if not 1 <= len(raw) <= MAX_SESSION_ID_BYTES or any(b < 0x21 or b > 0x7E for b in raw):
        raise ValueError("a session id is 1..64 printable ASCII bytes")
    return raw.decode("ascii")
