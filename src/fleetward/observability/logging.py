"""Structured logging: one pipeline for structlog and stdlib loggers, ending in redaction.

This module owns how log lines are produced. :func:`configure_logging` is called by the
composition root (again by tests); importing this module configures nothing. Every line,
from a Fleetward structlog logger or from a library's stdlib logger (uvicorn, granian,
SQLAlchemy, Alembic, httpx), passes the same processors: context variables, level, logger
name, formatted exception, :func:`~fleetward.observability.redaction.redact_event_dict`, an
ISO UTC timestamp, then the JSON (or console) renderer. Redaction comes after exception
formatting so that tracebacks are scrubbed too.

Servers must not install their own handlers after this runs (start uvicorn with
``log_config=None``); lines through such handlers would bypass redaction.
"""

from __future__ import annotations

import logging
import sys
from datetime import date, datetime, time
from typing import Final, Literal, TextIO

import structlog
from structlog.typing import Processor

from fleetward.observability.redaction import redact_event_dict

LogFormat = Literal["json", "console"]

# Libraries that ship their own handlers (uvicorn, granian) or are configured with them by
# Alembic's env.py. Their handlers would print records without redaction, so they are removed
# and the records propagate to the one redacting root handler instead.
THIRD_PARTY_LOGGERS: Final = (
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "_granian",
    "granian.access",
    "sqlalchemy",
    "alembic",
)


class _RedactingHandler(logging.StreamHandler[TextIO]):
    """The root handler this module installs; its type is how reconfiguration finds it."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - stdlib's name
        # logging.Handler.handleError prints the record's raw message and arguments: exactly
        # what redaction holds back. Report only where the faulty call was made.
        if not (logging.raiseExceptions and sys.stderr):
            return
        error = sys.exc_info()[1]
        sys.stderr.write(
            f"--- Logging error: {type(error).__name__} in a call on logger {record.name!r}"
            f" at {record.pathname}:{record.lineno}; record dropped ---\n"
        )


def configure_logging(
    *, level: str = "INFO", fmt: LogFormat = "json", stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging through redaction to *stream* (default stderr).

    Idempotent: a second call replaces the handler installed by the first.
    Raises ValueError for an unknown level or format, so a typo fails at start-up instead of
    silently logging at the wrong level.
    """
    numeric_level = _parse_level(level)
    if fmt not in ("json", "console"):
        raise ValueError(f"unknown log format {fmt!r}; expected 'json' or 'console'")
    out = sys.stderr if stream is None else stream

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.StackInfoRenderer(),
        # Plain-text tracebacks rather than rich ones: rich can print local variables, and
        # text is what redaction can scrub.
        structlog.processors.format_exc_info,
        redact_event_dict,
        # Stamped after redaction: our own clock reading cannot hold a secret, and scanning it
        # on every line would be wasted work.
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            # Drop disabled levels before paying for redaction.
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.stdlib.BoundLogger,
        logger_factory=structlog.stdlib.LoggerFactory(),
        context_class=dict,
        # Safe to cache: every call installs this same chain, and what does change (level,
        # format, stream) lives in the stdlib handler, which is replaced below.
        cache_logger_on_first_use=True,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        # Runs for stdlib records only; structlog records were processed before being handed
        # to logging, so each line is redacted exactly once.
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _renderer(fmt, out),
        ],
    )
    handler = _RedactingHandler(out)
    handler.setFormatter(formatter)

    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, _RedactingHandler):
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(numeric_level)

    for name in THIRD_PARTY_LOGGERS:
        third_party = logging.getLogger(name)
        for existing in list(third_party.handlers):
            third_party.removeHandler(existing)
        third_party.propagate = True
        # Their level is the root's too: a level left by another configurator (uvicorn sets
        # its own loggers' when given log_level) would silently drop their lines.
        third_party.setLevel(logging.NOTSET)
    sqlalchemy = logging.getLogger("sqlalchemy")
    if sqlalchemy.level == logging.NOTSET:
        # At INFO SQLAlchemy logs every statement with its bound parameters: personal data
        # and credential hashes. It defaults itself to WARNING when imported; hold that even
        # if it is imported after this call.
        sqlalchemy.setLevel(logging.WARNING)


class EveryInterval:
    """Whether a repeated message is due again: at most once per ``interval_s`` of the
    caller's monotonic clock (an outage met by every frame would otherwise log every frame).
    One event loop."""

    __slots__ = ("_at", "_interval")

    def __init__(self, interval_s: float = 60.0) -> None:
        self._interval = interval_s
        self._at: float | None = None

    def due(self, now: float) -> bool:
        if self._at is not None and now - self._at < self._interval:
            return False
        self._at = now
        return True


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger named *name* (usually ``__name__``); cheap, safe at import time."""
    return structlog.stdlib.get_logger(name)


def bind_request_context(
    *, request_id: str, trace_id: str, client_request_id: str | None = None
) -> None:
    """Attach request and trace ids (and the caller's own request id, when it sent one) to
    every line logged in the current context."""
    structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=trace_id)
    if client_request_id is not None:
        structlog.contextvars.bind_contextvars(client_request_id=client_request_id)


def clear_request_context() -> None:
    """Forget everything bound in the current context.

    Clears all context variables, not only the ids, so nothing bound during one request can
    appear in the lines of the next one served by the same worker.
    """
    structlog.contextvars.clear_contextvars()


def _parse_level(level: str) -> int:
    levels = logging.getLevelNamesMapping()
    numeric = levels.get(level.upper())
    if numeric is None:
        raise ValueError(f"unknown log level {level!r}")
    return numeric


def _renderer(fmt: LogFormat, out: TextIO) -> Processor:
    if fmt == "json":
        return structlog.processors.JSONRenderer(default=_json_default)
    return structlog.dev.ConsoleRenderer(colors=_is_terminal(out))


def _json_default(value: object) -> object:
    # After redaction only plain values remain; these are the non-JSON ones among them.
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value)


def _is_terminal(out: TextIO) -> bool:
    try:
        return out.isatty()
    except ValueError:  # a closed stream is not a terminal
        return False
