"""Telemetry ingestion: the pipeline that every frame from a device session passes, one module
per stage (limits, envelope, freshness, ordering, signals, quotas, persist), plus quarantine,
metrics and the tables. Owns the telemetry frame format (``docs/telemetry-format.md``).

Nothing here can start a command, and nothing here takes identity from a payload.
"""

from pathlib import Path

from fleetward.core.native import verify_native

# The stages compiled by `make native` (none when running the Python sources); a build older
# than its sources refuses to import (fleetward.core.native).
COMPILED = verify_native(Path(__file__).parent)
