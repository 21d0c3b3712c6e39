"""Observability: structured JSON logs and the redaction every log line passes through.

This package owns how Fleetward writes logs (structlog and the stdlib root logger, one JSON
line per event, request and trace ids from context) and the rule that nothing reusable is
logged: no passwords, keys, full tokens or needless personal data.
"""

from __future__ import annotations

from fleetward.observability.logging import (
    bind_request_context,
    clear_request_context,
    configure_logging,
    get_logger,
)
from fleetward.observability.redaction import (
    REDACTED,
    is_sensitive_name,
    redact,
    redact_event_dict,
    scrub_text,
)

__all__ = [
    "REDACTED",
    "bind_request_context",
    "clear_request_context",
    "configure_logging",
    "get_logger",
    "is_sensitive_name",
    "redact",
    "redact_event_dict",
    "scrub_text",
]
