"""Telemetry ingestion: the pipeline that every frame from a device session passes, one module
per stage (limits, envelope, freshness, ordering, signals, quotas, persist), plus quarantine,
metrics and the tables. Owns the telemetry frame format (``docs/telemetry-format.md``).

Nothing here can start a command, and nothing here takes identity from a payload.
"""
