"""Stage 2: the frame format and its integrity (HMAC-SHA256 with the session key).

A frame is a fixed 26-byte header, a JSON payload and a 32-byte tag::

    version u8 | flags u8 | counter u64 | sequence u64 | device_time_ms u64 | payload | tag

(big-endian). The tag is HMAC-SHA256 under the session key over ``FRAME_LABEL`` followed
by every byte of the frame before the tag: the exact bytes sent, so there is no
canonicalisation to get wrong on either side. Replies are fixed 62-byte frames tagged the same
way under ``REPLY_LABEL``; the two labels keep a reply from ever verifying as a frame.

Nothing in a frame is interpreted before its tag verified, except the version byte (so a
device speaking another version is told so) and the length. An authentic frame's counter is
consumed (stage 3) before its other header fields are judged (:func:`check_header`): a replay
of an authentic but malformed frame is refused as a replay. This module also holds the
device-side reference (:func:`seal`, :func:`open_reply`) used by the simulator and the tests.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import NamedTuple

from fleetward.gateway.session import DeviceSession
from fleetward.telemetry.errors import Rejected, Status

VERSION = 1
FRAME_LABEL = b"fleetward-telemetry-v1\x00"
REPLY_LABEL = b"fleetward-telemetry-reply-v1\x00"
FLAG_STORE_AND_FORWARD = 0x01
_KNOWN_FLAGS = FLAG_STORE_AND_FORWARD

HEADER = struct.Struct(">BBQQQ")  # version, flags, counter, sequence, device time (ms)
REPLY = struct.Struct(">BBQQQI")  # version, status, counter, sequence, server time (ms), retry
TAG_BYTES = 32
KEY_BYTES = 32
_SHA256_BLOCK = 64
# RFC 2104's pads as byte-translation tables (as the standard library's hmac builds them):
# XOR of a whole block in one C call, not a Python loop per byte (~20 -> ~4 us a session).
_IPAD = bytes([b ^ 0x36 for b in range(256)])
_OPAD = bytes([b ^ 0x5C for b in range(256)])
MIN_FRAME_BYTES = HEADER.size + 2 + TAG_BYTES  # the smallest payload is "{}"
REPLY_BYTES = REPLY.size + TAG_BYTES
# Sequences are stored in a signed 64-bit column; counters are only compared.
MAX_SEQUENCE = 2**63 - 1


class VerifiedFrame(NamedTuple):
    """A frame whose tag verified under the session key: its fields are the device's own,
    and its counter is not 0. Its flags and sequence are judged by :func:`check_header`.

    (A named tuple: built once per frame on the hot path, where a frozen dataclass costs a
    microsecond more.)"""

    counter: int
    sequence: int
    device_time_ms: int
    flags: int
    payload: bytes

    @property
    def store_and_forward(self) -> bool:
        return bool(self.flags & FLAG_STORE_AND_FORWARD)


@dataclass(frozen=True, slots=True)
class Reply:
    status: Status
    counter: int
    sequence: int
    server_time_ms: int
    retry_after_ms: int


class _LabelledHmac:
    """HMAC-SHA256 (RFC 2104) under one key, with the key schedule and a label absorbed once:
    each message then costs two hash-state copies, about half of ``hmac.HMAC.copy``.
    The tests check it against the standard library's ``hmac`` for the published vectors."""

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, label: bytes) -> None:
        block = key.ljust(_SHA256_BLOCK, b"\0")  # keys are 32 bytes: never longer than a block
        self._inner = hashlib.sha256(block.translate(_IPAD) + label)
        self._outer = hashlib.sha256(block.translate(_OPAD))

    def tag(self, data: bytes | memoryview) -> bytes:
        inner = self._inner.copy()
        inner.update(data)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class SessionMacs:
    """The per-session tag computations for frames and replies.

    Not thread-safe; one instance per pipeline, used from one event loop.
    """

    __slots__ = ("_frame", "_reply", "key")

    def __init__(self, key: object) -> None:
        # ``object``: the check below is the contract (a compiled build would otherwise answer
        # a key of the wrong type with its own TypeError).
        if type(key) is not bytes or len(key) != KEY_BYTES:
            raise ValueError("a session key is exactly 32 bytes")
        self.key = key
        self._frame = _LabelledHmac(key, FRAME_LABEL)
        self._reply = _LabelledHmac(key, REPLY_LABEL)

    def owns(self, key: bytes) -> bool:
        return key is self.key or hmac.compare_digest(self.key, key)

    def open(self, frame: bytes) -> VerifiedFrame:
        """Verify ``frame`` and return its fields, or reject it. A counter of 0 is refused
        here (it can never be fresh: there is nothing to consume); the other header fields
        are judged by :func:`check_header`, once the counter is consumed."""
        if len(frame) < MIN_FRAME_BYTES:
            raise Rejected(Status.MALFORMED_FRAME, "shorter than the smallest frame")
        if frame[0] != VERSION:
            raise Rejected(Status.MALFORMED_FRAME, "unknown version")
        view = memoryview(frame)
        if not hmac.compare_digest(self._frame.tag(view[:-TAG_BYTES]), view[-TAG_BYTES:]):
            raise Rejected(Status.BAD_MAC, "tag does not verify")
        _version, flags, counter, sequence, device_time_ms = HEADER.unpack_from(frame)
        if counter == 0:
            raise Rejected(Status.MALFORMED_FRAME, "counter 0")
        return VerifiedFrame(
            counter, sequence, device_time_ms, flags, frame[HEADER.size : -TAG_BYTES]
        )

    def reply(
        self,
        status: Status,
        *,
        counter: int,
        sequence: int,
        server_time_ms: int,
        retry_after_ms: int = 0,
    ) -> bytes:
        body = REPLY.pack(VERSION, status, counter, sequence, server_time_ms, retry_after_ms)
        return body + self._reply.tag(body)


def check_header(frame: VerifiedFrame) -> None:
    """Refuse an authentic frame whose flags or sequence the format does not allow."""
    if frame.flags & ~_KNOWN_FLAGS:
        raise Rejected(Status.MALFORMED_FRAME, "unknown flags")
    if not 1 <= frame.sequence <= MAX_SEQUENCE:
        raise Rejected(Status.MALFORMED_FRAME, "sequence out of range")


class MacCache:
    """Session id -> :class:`SessionMacs`, least recently used first. Forget a session when
    it closes; :meth:`oldest` names the session to evict when too many are live."""

    def __init__(self) -> None:
        self._by_session: OrderedDict[str, SessionMacs] = OrderedDict()

    def get(self, session: DeviceSession) -> SessionMacs:
        macs = self._by_session.get(session.session_id)
        if macs is None:
            macs = SessionMacs(session.session_key)
            self._by_session[session.session_id] = macs
        elif not macs.owns(session.session_key):
            # Two sessions with one id would share counters: a handshake bug, never a frame's.
            raise ValueError("session id reused with a different key")
        return macs

    def lookup(self, session: DeviceSession) -> SessionMacs | None:
        """The fast path: the MACs of a known session presenting its own key, else None."""
        macs = self._by_session.get(session.session_id)
        if macs is not None and session.session_key is macs.key:
            self._by_session.move_to_end(session.session_id)
            return macs
        return None

    def oldest(self) -> str:
        return next(iter(self._by_session))

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._by_session

    def forget(self, session_id: str) -> None:
        self._by_session.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_session)


# --- device side (reference implementation for TCU teams, the simulator and the tests) ---


def seal(
    key: bytes,
    payload: bytes,
    *,
    counter: int,
    sequence: int,
    device_time_ms: int,
    store_and_forward: bool = False,
) -> bytes:
    """Build a frame as a device does."""
    flags = FLAG_STORE_AND_FORWARD if store_and_forward else 0
    unsigned = HEADER.pack(VERSION, flags, counter, sequence, device_time_ms) + payload
    return unsigned + hmac.new(key, FRAME_LABEL + unsigned, hashlib.sha256).digest()


def open_reply(key: bytes, reply: bytes) -> Reply:
    """Verify a reply as a device does; raises ValueError for anything not from the server."""
    if len(reply) != REPLY_BYTES:
        raise ValueError("not a reply frame")
    body, tag = reply[: REPLY.size], reply[REPLY.size :]
    expected = hmac.new(key, REPLY_LABEL + body, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, tag):
        raise ValueError("reply tag does not verify")
    version, status, counter, sequence, server_time_ms, retry_after_ms = REPLY.unpack(body)
    if version != VERSION:
        raise ValueError("unknown reply version")
    return Reply(Status(status), counter, sequence, server_time_ms, retry_after_ms)
