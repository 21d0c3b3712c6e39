"""Structured logging: every line is JSON, carries its context and never carries a secret."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import structlog

from fleetward.observability.logging import (
    THIRD_PARTY_LOGGERS,
    bind_request_context,
    clear_request_context,
    configure_logging,
    get_logger,
)
from fleetward.observability.redaction import REDACTED
from support.secrets_samples import EC_PRIVATE_KEY, ES256_JWT, PEM_BODY

_SRC = Path(__file__).resolve().parents[3] / "src"


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Undo configure_logging: structlog defaults, root handlers and level, library loggers."""
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    libraries = {
        name: (list(lib.handlers), lib.propagate, lib.level)
        for name in THIRD_PARTY_LOGGERS
        for lib in [logging.getLogger(name)]
    }
    structlog.reset_defaults()
    yield
    clear_request_context()
    structlog.reset_defaults()
    for handler in list(root.handlers):
        if handler not in root_handlers and isinstance(
            handler.formatter, structlog.stdlib.ProcessorFormatter
        ):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(root_level)
    for name, (handlers, propagate, level) in libraries.items():
        lib = logging.getLogger(name)
        lib.handlers[:] = handlers
        lib.propagate = propagate
        lib.setLevel(level)


@pytest.fixture
def log_output(restore_logging: None) -> io.StringIO:
    stream = io.StringIO()
    configure_logging(level="DEBUG", stream=stream)
    return stream


def _lines(stream: io.StringIO) -> list[dict[str, object]]:
    # json.loads raises on anything that is not one JSON object per line.
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def _rendered(line: dict[str, object]) -> str:
    return " ".join(str(value) for value in line.values())


@dataclass(frozen=True)
class Leak:
    """A secret logged the way code really logs it, and what must survive around it."""

    event: str
    fields: dict[str, object]
    secrets: tuple[str, ...]
    neighbours: tuple[str, ...]
    stdlib_logger: str = "thirdparty.client"


LEAKS = [
    pytest.param(
        # A login handler logging its arguments would print the password.
        Leak(
            event="login attempt",
            fields={"password": "hunter2-Correct-Horse", "request_id": "req-1"},
            secrets=("hunter2-Correct-Horse",),
            neighbours=("req-1",),
        ),
        id="password-kwarg",
    ),
    pytest.param(
        # Logging request headers would print the caller's access token.
        Leak(
            event="upstream call",
            fields={
                "headers": {"Authorization": "Bearer opaque-at-123", "X-Request-ID": "req-2"},
                "path": "/v1/vehicles/veh_123",
            },
            secrets=("opaque-at-123",),
            neighbours=("req-2", "/v1/vehicles/veh_123"),
        ),
        id="authorization-header-nested",
    ),
    pytest.param(
        # A verified token echoed in a message would be replayable until it expires.
        Leak(
            event=f"verified access token {ES256_JWT} jti=tok-9 kid=fleet-2026-01",
            fields={"vehicle_id": "veh_9"},
            secrets=(ES256_JWT, ES256_JWT.rsplit(".", 1)[1]),
            neighbours=("jti=tok-9", "kid=fleet-2026-01", "veh_9"),
        ),
        id="es256-jwt-in-message",
    ),
    pytest.param(
        # An upstream error quoting the credential it rejected.
        Leak(
            event="upstream rejected Bearer abc.def for vehicle veh_123",
            fields={},
            secrets=("abc.def",),
            neighbours=("upstream rejected Bearer", "veh_123"),
        ),
        id="bearer-in-message",
    ),
    pytest.param(
        # Device enrolment logging the key material it loaded.
        Leak(
            event="device enrolled",
            fields={"material": f"loaded {EC_PRIVATE_KEY}", "vehicle_id": "veh_7"},
            secrets=(PEM_BODY,),
            neighbours=("veh_7", "loaded"),
        ),
        id="pem-private-key-value",
    ),
    pytest.param(
        # A refresh token is long-lived: leaking it is leaking the account.
        Leak(
            event="token refreshed",
            fields={"refresh_token": "rt_9f8e7d6c5b4a", "client_id": "mobile-app"},
            secrets=("rt_9f8e7d6c5b4a",),
            neighbours=("mobile-app",),
        ),
        id="refresh-token-kwarg",
    ),
    pytest.param(
        # The session cookie is a bearer credential for the web console.
        Leak(
            event="request received",
            fields={"headers": {"Cookie": "fw_session=s3ss10n-v4lue; theme=dark"}},
            secrets=("s3ss10n-v4lue",),
            neighbours=("request received",),
        ),
        id="cookie-header",
    ),
    pytest.param(
        # A client-credentials token request body carries the client secret.
        Leak(
            event="token request",
            fields={
                "body": "grant_type=client_credentials&client_id=fleet-ops"
                "&client_secret=cs-ABCdef123&scope=vehicle:read"
            },
            secrets=("cs-ABCdef123",),
            neighbours=("client_id=fleet-ops", "scope=vehicle:read"),
        ),
        id="client-secret-in-form-body",
    ),
    pytest.param(
        # The authorization code in a callback URL can be redeemed by whoever reads it.
        Leak(
            event="GET /oauth/callback?code=SplxlOBeZQQYbYS6WxSbIA&state=af0ifjsldkj",
            fields={"request_id": "req-3"},
            secrets=("SplxlOBeZQQYbYS6WxSbIA",),
            neighbours=("/oauth/callback", "state=af0ifjsldkj", "req-3"),
        ),
        id="oauth-callback-code",
    ),
    pytest.param(
        # The TOTP seed generates every future MFA code.
        Leak(
            event="mfa enrolled",
            fields={"totp_secret": "JBSWY3DPEHPK3PXP", "user_id": "usr_1"},
            secrets=("JBSWY3DPEHPK3PXP",),
            neighbours=("usr_1",),
        ),
        id="totp-secret",
    ),
    pytest.param(
        # uvicorn's access log prints the full query string, token included.
        Leak(
            event='10.0.0.7:51234 - "GET /v1/vehicles/veh_123/location'
            '?access_token=at-0p4qu3-t0k3n&fields=lat HTTP/1.1" 200',
            fields={},
            secrets=("at-0p4qu3-t0k3n",),
            neighbours=("/v1/vehicles/veh_123/location", "fields=lat", "10.0.0.7:51234"),
            stdlib_logger="uvicorn.access",
        ),
        id="uvicorn-access-query-token",
    ),
]


def _emit(leak: Leak, route: str) -> None:
    if route == "structlog":
        get_logger("fleetward.test").info(leak.event, **leak.fields)
    elif leak.fields:
        # Libraries log one formatted string; a dict argument arrives as its repr.
        logging.getLogger(leak.stdlib_logger).info("%s %s", leak.event, leak.fields)
    else:
        logging.getLogger(leak.stdlib_logger).info("%s", leak.event)


@pytest.mark.parametrize("route", ["structlog", "stdlib"])
@pytest.mark.parametrize("leak", LEAKS)
def test_secret_never_reaches_the_output(log_output: io.StringIO, leak: Leak, route: str) -> None:
    _emit(leak, route)

    raw = log_output.getvalue()
    (line,) = _lines(log_output)
    for secret in leak.secrets:
        assert secret not in raw
    rendered = _rendered(line)
    assert REDACTED in rendered
    for neighbour in leak.neighbours:
        assert neighbour in rendered


def test_line_has_level_logger_event_and_utc_timestamp(log_output: io.StringIO) -> None:
    get_logger("fleetward.vehicles").warning("vehicle locked", vehicle_id="veh_1")

    (line,) = _lines(log_output)
    assert line["event"] == "vehicle locked"
    assert line["level"] == "warning"
    assert line["logger"] == "fleetward.vehicles"
    assert line["vehicle_id"] == "veh_1"
    stamped = datetime.fromisoformat(str(line["timestamp"]))
    assert stamped.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - stamped) < timedelta(minutes=1)


def test_stdlib_line_has_the_same_shape(log_output: io.StringIO) -> None:
    logging.getLogger("sqlalchemy.pool").warning("pool %s exhausted", "primary")

    (line,) = _lines(log_output)
    assert line["event"] == "pool primary exhausted"
    assert line["level"] == "warning"
    assert line["logger"] == "sqlalchemy.pool"
    assert "timestamp" in line


def test_positional_arguments_are_formatted_then_redacted(log_output: io.StringIO) -> None:
    # printf-style arguments must not slip past redaction by arriving after it.
    get_logger("fleetward.test").info("callback %s", "/cb?code=c-123&state=s-1")

    (line,) = _lines(log_output)
    assert line["event"] == f"callback /cb?code={REDACTED}&state=s-1"


@pytest.mark.parametrize("route", ["structlog", "stdlib"])
def test_exception_traceback_is_redacted(log_output: io.StringIO, route: str) -> None:
    # Exception messages quote their inputs; a traceback is printed text like any other.
    try:
        raise ValueError(f"cannot parse token {ES256_JWT}")
    except ValueError:
        if route == "structlog":
            get_logger("fleetward.test").exception("verification failed", request_id="req-5")
        else:
            logging.getLogger("thirdparty.client").exception("verification failed")

    (line,) = _lines(log_output)
    assert ES256_JWT not in log_output.getvalue()
    assert "ValueError: cannot parse token [redacted]" in str(line["exception"])
    assert line["event"] == "verification failed"


@pytest.mark.parametrize("route", ["structlog", "stdlib"])
def test_request_context_is_on_every_line_until_cleared(
    log_output: io.StringIO, route: str
) -> None:
    def emit(message: str) -> None:
        if route == "structlog":
            get_logger("fleetward.test").info(message)
        else:
            logging.getLogger("uvicorn.access").info(message)

    bind_request_context(request_id="req-77", trace_id="4bf92f3577b34da6a3ce929d0e0e4736")
    emit("inside")
    clear_request_context()
    emit("after")

    inside, after = _lines(log_output)
    assert inside["request_id"] == "req-77"
    assert inside["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "request_id" not in after
    assert "trace_id" not in after


def test_request_context_is_redacted_too(log_output: io.StringIO) -> None:
    # Request ids come from a client header; a client can put a token there.
    bind_request_context(request_id=f"Bearer {ES256_JWT}", trace_id="t-1")

    get_logger("fleetward.test").info("inside")

    (line,) = _lines(log_output)
    assert line["request_id"] == f"Bearer {REDACTED}"


def test_broken_log_call_does_not_print_its_arguments(
    log_output: io.StringIO, capsys: pytest.CaptureFixture[str]
) -> None:
    # logging's default error report prints the raw arguments, secrets included.
    (ours,) = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter)
    ]
    record = logging.LogRecord(
        "thirdparty.client", logging.INFO, "client.py", 12, "token %s %s", ("tk-s3cr3t",), None
    )

    ours.handle(record)

    stderr = capsys.readouterr().err
    assert "tk-s3cr3t" not in stderr + log_output.getvalue()
    assert "Logging error: TypeError" in stderr
    assert "client.py:12" in stderr


def test_configuring_twice_keeps_one_handler(restore_logging: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)

    get_logger("fleetward.test").info("once")

    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second)] == ["once"]
    ours = [
        handler
        for handler in logging.getLogger().handlers
        if isinstance(handler.formatter, structlog.stdlib.ProcessorFormatter)
    ]
    assert len(ours) == 1


def test_library_handlers_are_replaced_by_the_redacting_one(restore_logging: None) -> None:
    # uvicorn's default config gives its access logger its own, unredacted handler.
    library_stream = io.StringIO()
    access = logging.getLogger("uvicorn.access")
    access.addHandler(logging.StreamHandler(library_stream))
    access.propagate = False
    ours = io.StringIO()

    configure_logging(stream=ours)
    access.info("%s - %s", "10.0.0.1:1", "GET /?token=t-secret")

    assert library_stream.getvalue() == ""
    assert "t-secret" not in ours.getvalue()
    (line,) = _lines(ours)
    assert line["logger"] == "uvicorn.access"


def test_sqlalchemy_statement_logging_stays_off(restore_logging: None) -> None:
    # At INFO SQLAlchemy logs every statement with its parameters (personal data, hashes).
    logging.getLogger("sqlalchemy").setLevel(logging.NOTSET)
    stream = io.StringIO()
    configure_logging(level="INFO", stream=stream)

    logging.getLogger("sqlalchemy.engine.Engine").info("SELECT * FROM users WHERE email = ?")

    assert stream.getvalue() == ""


def test_level_filters_both_routes(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(level="WARNING", stream=stream)

    get_logger("fleetward.test").info("quiet structlog")
    logging.getLogger("thirdparty.client").info("quiet stdlib")
    get_logger("fleetward.test").warning("loud")

    assert [line["event"] for line in _lines(stream)] == ["loud"]


def test_console_format_is_redacted_too(restore_logging: None) -> None:
    stream = io.StringIO()
    configure_logging(fmt="console", stream=stream)

    get_logger("fleetward.test").info("login", password="hunter2", request_id="req-9")

    output = stream.getvalue()
    assert "hunter2" not in output
    assert "req-9" in output
    assert "\x1b[" not in output  # no colour codes when not writing to a terminal


@pytest.mark.parametrize(
    ("level", "fmt", "complaint"),
    [
        # A typo in the log level must fail start-up, not silently log at some default.
        ("LOUD", "json", "unknown log level 'LOUD'"),
        # Same for the format: an unknown one must not fall back to unredacted output.
        ("INFO", "xml", "unknown log format 'xml'"),
    ],
)
def test_invalid_settings_are_rejected(
    restore_logging: None, level: str, fmt: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        configure_logging(level=level, fmt=fmt, stream=io.StringIO())  # type: ignore[arg-type]


def test_get_logger_before_configuration_follows_later_configuration(
    restore_logging: None,
) -> None:
    # Module-level loggers are created at import, before the composition root configures
    # logging; they must not keep the unredacted defaults.
    early = get_logger("fleetward.early")
    stream = io.StringIO()
    configure_logging(stream=stream)

    early.info("late", token="t-1")

    (line,) = _lines(stream)
    assert line["token"] == REDACTED


def test_import_creates_no_handler_and_configures_nothing() -> None:
    # Importing must be free of side effects (STYLE: nothing created at import time).
    probe = (
        "import logging, structlog\n"
        "before = list(logging.getLogger().handlers)\n"
        "import fleetward.observability\n"
        "import fleetward.observability.logging\n"
        "assert logging.getLogger().handlers == before, 'handler added'\n"
        "assert not structlog.is_configured(), 'structlog configured'\n"
    )
    env = {**os.environ, "PYTHONPATH": str(_SRC)}

    result = subprocess.run(  # noqa: S603 - fixed argv: this interpreter and the probe above
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )

    assert result.returncode == 0, result.stderr
