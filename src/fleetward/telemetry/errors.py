"""Stable reply statuses of the ingest pipeline.

Every frame gets exactly one reply carrying one :class:`Status`. The byte value and the slug
are part of the vehicle protocol (``docs/telemetry-format.md``): never renumber or reuse one.
A status says what the device must do next:

* ``stored``: the message is durably stored (now or earlier); drop it from the outbox;
* ``retryable``: nothing was decided against the message; keep it and send it again later,
  with a new counter and the same sequence number (storing is idempotent by sequence);
* anything else: the message will never be accepted as sent.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    ACCEPTED = 0x00
    DUPLICATE = 0x01
    # Transport and envelope (nothing in the frame is trusted yet).
    TOO_LARGE = 0x10
    MALFORMED_FRAME = 0x11
    BAD_MAC = 0x12
    # Freshness (authentic, but not now).
    STALE_COUNTER = 0x13
    OUT_OF_WINDOW = 0x14
    CLOCK_DRIFT = 0x15
    # Payload (authentic and fresh, but not acceptable).
    MALFORMED_PAYLOAD = 0x20
    UNKNOWN_SIGNAL = 0x21
    WRONG_TYPE = 0x22
    OUT_OF_RANGE = 0x23
    FOREIGN_IDENTITY = 0x24
    # Temporary: the device sends the message again later.
    QUOTA_EXCEEDED = 0x30
    STORE_UNAVAILABLE = 0x31

    @property
    def slug(self) -> str:
        """The stable name used in logs, metrics and the quarantine table."""
        return self.name.lower().replace("_", "-")

    @property
    def stored(self) -> bool:
        return self in _STORED

    @property
    def retryable(self) -> bool:
        return self in _RETRYABLE


_STORED = frozenset({Status.ACCEPTED, Status.DUPLICATE})
# STORE_UNAVAILABLE may hide a commit that succeeded (the connection broke during COMMIT):
# a retransmission is safe because storing is idempotent by (device, sequence).
_RETRYABLE = frozenset({Status.QUOTA_EXCEEDED, Status.STORE_UNAVAILABLE})


class Rejected(Exception):
    """A stage refused a frame. ``detail`` is for the server's log only, never the wire, and
    never carries a value taken from the frame."""

    def __init__(self, status: Status, detail: str, *, retry_after_ms: int = 0) -> None:
        if status.stored:
            raise ValueError("a rejection cannot carry a stored status")
        super().__init__(f"{status.slug}: {detail}")
        self.status = status
        self.detail = detail
        self.retry_after_ms = retry_after_ms
