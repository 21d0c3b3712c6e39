"""Stage 1: the size limit, checked before a single byte of the frame is parsed or hashed."""

from __future__ import annotations

from dataclasses import dataclass

from fleetward.telemetry.errors import Rejected, Status

# A typical message (a handful of signals) is 200-400 bytes; 8 KiB leaves room for a full
# snapshot of every catalogued signal while bounding the work one frame can cause.
DEFAULT_MAX_FRAME_BYTES = 8192


@dataclass(frozen=True, slots=True)
class SizeLimit:
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES

    def __post_init__(self) -> None:
        if not 64 <= self.max_frame_bytes <= 1_048_576:
            raise ValueError("max_frame_bytes must be between 64 bytes and 1 MiB")

    def check(self, frame: object) -> bytes:
        """Return the frame if it is a byte string within the limit, else reject it."""
        # Transports hand over bytes; anything else (a text WebSocket message decoded to str,
        # a mutable buffer that could change under us) is refused rather than converted.
        if type(frame) is not bytes:
            raise Rejected(Status.MALFORMED_FRAME, "frame is not a byte string")
        if len(frame) > self.max_frame_bytes:
            raise Rejected(Status.TOO_LARGE, f"frame of {len(frame)} bytes")
        return frame
