"""The first byte of the frames a session carries besides telemetry (docs/vehicle-protocol.md,
section 6): a COMMAND down, a command RESULT up. One definition for the transports, the
device clients and the command envelopes (``fleetward.commands.envelope``), which cannot
import each other."""

from __future__ import annotations

from typing import Final

COMMAND_FIRST_BYTE: Final = 0x02
RESULT_FIRST_BYTE: Final = 0x03
