"""The one settings object: ``FLEETWARD_*`` environment variables or a TOML file.

Settings are validated once at start-up; invalid settings stop start-up with a message that
names each bad field (:class:`SettingsError`). Secrets are ``SecretStr`` so that they never
appear in reprs or logs.
"""

from __future__ import annotations

import base64
import binascii
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    IPvAnyAddress,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

CONFIG_FILE_ENV = "FLEETWARD_CONFIG"

_SQLITE_PREFIXES = ("sqlite+aiosqlite:///", "sqlite:///")
_POSTGRES_PREFIXES = ("postgresql+asyncpg://", "postgresql://", "postgres://")


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class SettingsError(Exception):
    """Settings could not be loaded; the message lists every bad field."""


class RaisedQuotaSetting(BaseModel):
    """An approved raised quota (``[[quota_raised]]`` in the TOML file); see
    ``fleetward.abuse.raised`` and docs/operations.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: Annotated[str, Field(min_length=1, max_length=200)]
    limit: Annotated[str, Field(min_length=1, max_length=64)]
    capacity: Annotated[int, Field(ge=1, le=10_000_000)]
    owner: Annotated[str, Field(min_length=1, max_length=200)]
    reason: Annotated[str, Field(min_length=1, max_length=200)]
    expires_at: AwareDatetime


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FLEETWARD_",
        extra="forbid",
        frozen=True,
        validate_default=True,
    )

    environment: Environment = Environment.DEVELOPMENT
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 8000
    public_url: str | None = None
    data_dir: Path = Path("./var")
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    # The Redis publish/subscribe channel replicas tell each other about queued and changed
    # command jobs on (with redis_url only; commands/bus.py). Replicas of one deployment
    # share it; deployments sharing a Redis server need one each.
    command_bus_channel: Annotated[str, Field(pattern=r"^[A-Za-z0-9:._-]{1,64}$")] = (
        "fleetward:commands"
    )
    # base64 of 32 bytes; unset = generated once in <data dir>/secrets/data.key (mode 0600).
    data_key: SecretStr | None = None
    access_token_minutes: Annotated[int, Field(ge=1, le=15)] = 5
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "console"] = "json"

    # argon2id cost; the floor is OWASP's minimum recommendation (m=19 MiB, t=2).
    password_hash_memory_kib: Annotated[int, Field(ge=19_456, le=4_194_304)] = 65_536
    password_hash_time_cost: Annotated[int, Field(ge=2, le=20)] = 3

    # Bounds for relationships created through the world model.
    max_delegation_days: Annotated[int, Field(ge=1, le=366)] = 90
    # How far ahead a delegation or a driver invitation's window may start (its length is
    # capped by max_delegation_days): without it a window could be parked in year 9999.
    max_delegation_lead_days: Annotated[int, Field(ge=1, le=366)] = 90
    max_consent_days: Annotated[int, Field(ge=1, le=731)] = 365

    # Lists are capped so that no request can ask for an unbounded page.
    max_page_size: Annotated[int, Field(ge=1, le=1000)] = 100

    # Market regions where remote start is barred (vehicle region or request region), e.g.
    # ["EU"]. Empty: barred nowhere.
    remote_start_barred_regions: list[str] = []

    # Reverse proxies (IP addresses) whose X-Forwarded-For is believed for the client address
    # recorded on audit events. Empty: the TCP peer is the client.
    trusted_proxies: list[IPvAnyAddress] = []
    # The largest HTTP request body served (api/body_limit.py): anything larger is a 413
    # before any of it is buffered or parsed (FastAPI reads a body before authentication).
    # The largest legitimate body is a bulk command's 500 vehicle ids (~20 KiB).
    max_request_body_bytes: Annotated[int, Field(ge=4096, le=64 * 1024 * 1024)] = 1024 * 1024
    # How often the audit log's hash chain is extended (fleetward audit seal does it too).
    audit_seal_interval_seconds: Annotated[int, Field(ge=1, le=3600)] = 10

    # The vehicle gateway's WebSocket limits (gateway/websocket.py GatewayConfig). Live
    # sessions one device identity may hold (one, two while a reconnect overlaps; a third
    # handshake is refused with 1013). Refused handshakes recorded one by one per source
    # network (IPv4 address, IPv6 /64) and window, the rest counted into one summary event;
    # networks tracked at once (refusals from more are only counted).
    gateway_max_sessions_per_device: Annotated[int, Field(ge=1, le=16)] = 2
    gateway_refusals_per_network: Annotated[int, Field(ge=1, le=10_000)] = 10
    gateway_refusal_window_seconds: Annotated[int, Field(ge=1, le=86_400)] = 60
    gateway_refusal_networks: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    # Sessions one device identity may open (successful handshakes, either transport): a
    # burst, then one more every refill seconds; past it a handshake is refused (4429) before
    # any store write (gateway/churn.py). Identities tracked at once per process (the least
    # recently seen beyond are forgotten, i.e. start again with a full burst).
    gateway_handshake_burst: Annotated[int, Field(ge=1, le=10_000)] = 10
    gateway_handshake_refill_seconds: Annotated[int, Field(ge=1, le=86_400)] = 60
    gateway_handshake_devices: Annotated[int, Field(ge=1, le=10_000_000)] = 200_000
    # The longest one message to a vehicle may take to write (replies, commands, the close
    # frame): a TCU that stops reading fills the buffers and its session is then closed
    # (4007 send-timeout) instead of holding its sends, and every close of it, for ever.
    gateway_send_timeout_seconds: Annotated[float, Field(ge=0.1, le=300)] = 10.0
    # How long data the server sent may stay unacknowledged (or the peer's window shut)
    # before the kernel aborts the connection (TCP_USER_TIMEOUT on the listening socket,
    # Linux). The send timeout ends a session whose peer stopped reading, but its TCP
    # connection would stay open (a close waits for the buffers to drain): a peer holding
    # valid credentials could pile such connections up, one per reconnect.
    tcp_user_timeout_seconds: Annotated[float, Field(ge=1, le=3600)] = 30.0

    # The MQTT transport of the vehicle gateway (docs/mqtt.md). Off unless a broker host is
    # set; then the broker's CA and the gateway's own service identity are required (TLS with
    # client certificates is not optional).
    mqtt_broker_host: str | None = None
    mqtt_broker_port: Annotated[int, Field(ge=1, le=65535)] = 8884
    mqtt_server_ca: Path | None = None
    mqtt_client_certificate: Path | None = None
    mqtt_client_key: Path | None = None
    mqtt_client_id: Annotated[str, Field(min_length=1, max_length=64)] = "fleetward-gateway"
    mqtt_crl_file: Path | None = None
    mqtt_broker_pid_file: Path | None = None

    # Quotas (fleetward.abuse, docs/operations.md "Quotas"): object-operations per minute,
    # where a request costs the number of objects it targets. Per-command-type and
    # sensitive-flow limits are in fleetward.abuse.policy. A tenant with a legitimate need
    # gets an approved raise (quota_raised, with owner, reason and expiry), not a higher
    # default for everyone.
    quota_user_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] = 600
    quota_client_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] = 120_000
    quota_tenant_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] = 120_000
    quota_global_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] = 1_200_000
    quota_vehicle_commands_per_minute: Annotated[int, Field(ge=1, le=1000)] = 10
    quota_max_targets: Annotated[int, Field(ge=1, le=10_000)] = 10_000
    quota_raised: list[RaisedQuotaSetting] = []
    # Capacities of sensitive flows by flow name (abuse.policy.Flow), replacing the defaults
    # for every tenant, e.g. {"ownership-transfer": 10}; a probe deployment raises them.
    quota_flows: dict[str, Annotated[int, Field(ge=1, le=10_000_000)]] = {}
    # Enumeration (fleetward.abuse.enumeration): distinct vehicles or VINs one actor touches
    # per window, and runs of consecutive ids or VIN serials. Above "slow" each request
    # waits (bounded); at "stop" the actor gets 429 for the cool-down.
    quota_enumeration_window_seconds: Annotated[int, Field(ge=60, le=86_400)] = 86_400
    quota_enumeration_slow_distinct: Annotated[int, Field(ge=1, le=1_000_000)] = 200
    quota_enumeration_stop_distinct: Annotated[int, Field(ge=1, le=1_000_000)] = 500
    quota_enumeration_slow_run: Annotated[int, Field(ge=2, le=1000)] = 4
    quota_enumeration_stop_run: Annotated[int, Field(ge=2, le=1000)] = 8
    quota_enumeration_cooldown_seconds: Annotated[int, Field(ge=1, le=86_400)] = 3600

    @model_validator(mode="after")
    def _quotas_nest(self) -> Settings:
        # A narrower scope never allows more than the scope that contains it.
        if not (
            self.quota_user_per_minute
            <= self.quota_tenant_per_minute
            <= self.quota_global_per_minute
        ):
            raise ValueError(
                "need quota_user_per_minute <= quota_tenant_per_minute <= quota_global_per_minute"
            )
        if self.quota_client_per_minute > self.quota_global_per_minute:
            raise ValueError("quota_client_per_minute must not exceed quota_global_per_minute")
        if self.quota_enumeration_slow_distinct > self.quota_enumeration_stop_distinct:
            raise ValueError("need quota_enumeration_slow_distinct <= ..._stop_distinct")
        if self.quota_enumeration_slow_run > self.quota_enumeration_stop_run:
            raise ValueError("need quota_enumeration_slow_run <= quota_enumeration_stop_run")
        return self

    @model_validator(mode="after")
    def _handshake_budget_fits(self) -> Settings:
        # The budget is a quota token bucket (abuse.bucket): a full refill within a day.
        if self.gateway_handshake_burst * self.gateway_handshake_refill_seconds > 86_400:
            raise ValueError(
                "need gateway_handshake_burst * gateway_handshake_refill_seconds <= 86400"
            )
        return self

    @model_validator(mode="after")
    def _mqtt_complete(self) -> Settings:
        if self.mqtt_broker_host is not None and None in (
            self.mqtt_server_ca,
            self.mqtt_client_certificate,
            self.mqtt_client_key,
        ):
            raise ValueError(
                "mqtt_broker_host needs mqtt_server_ca, mqtt_client_certificate and mqtt_client_key"
            )
        return self

    @model_validator(mode="after")
    def _production_profile(self) -> Settings:
        """``environment = "production"`` refuses what is only fit for a developer's machine
        (docs/operations.md, "Production settings")."""
        if self.environment is not Environment.PRODUCTION:
            return self
        problems = []
        if self.public_url is None or urlsplit(self.public_url).scheme != "https":
            problems.append(
                "public_url must be an https:// URL (the token issuer, the origin of DPoP "
                "proofs and of passkeys)"
            )
        if self.data_key is None:
            problems.append(
                "data_key must be set (a key generated on the data directory's disk suits one "
                "development machine; replicas share one from a secret store)"
            )
        if self.log_level == "DEBUG":
            problems.append("log_level must not be DEBUG")
        if problems:
            raise ValueError("environment=production: " + "; ".join(problems))
        return self

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        raw = value.get_secret_value()
        if not raw.startswith(_SQLITE_PREFIXES + _POSTGRES_PREFIXES):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        # Parsed here as the engine will parse it, so an unusable URL stops start-up with
        # the field named. The parser's message is not repeated: it may quote the URL.
        try:
            database = make_url(raw).database
        except (ArgumentError, ValueError):
            raise ValueError("is not a valid database URL") from None
        if raw.startswith(_SQLITE_PREFIXES) and database in (None, "", ":memory:"):
            raise ValueError("a sqlite:/// URL must name a database file")
        return value

    @field_validator("redis_url")
    @classmethod
    def _known_redis(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("data_key")
    @classmethod
    def _data_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        # Decoded here as the identity runtime decodes it (core.datakey), so a malformed key
        # stops start-up with the field named rather than a traceback from the runtime. The
        # key and the decoder's message are never repeated.
        if value is None:
            return None
        try:
            raw = base64.b64decode(value.get_secret_value(), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be standard base64 (with padding)") from None
        if len(raw) != 32:
            raise ValueError("must be the base64 of exactly 32 bytes")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url_shape(cls, value: str | None) -> str | None:
        # The token issuer, the DPoP URL's origin and the WebAuthn origin: an http(s) origin
        # with an optional path prefix, nothing else. (Never echoed: it may hold a password.)
        if value is None:
            return None
        parts = urlsplit(value)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        if (
            parts.scheme not in ("http", "https")
            or not parts.hostname
            or not port_ok
            or parts.username is not None
            or parts.password is not None
            or parts.query
            or parts.fragment
            or "?" in value
            or "#" in value
        ):
            raise ValueError(
                "must be an http:// or https:// URL with a host, and no credentials, query "
                "or fragment"
            )
        return value

    @field_validator("host")
    @classmethod
    def _host_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL: the configured one, or SQLite in the data directory."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'fleetward.db').resolve()}"
        raw = self.database_url.get_secret_value()
        for prefix in _SQLITE_PREFIXES:
            if raw.startswith(prefix):
                return "sqlite+aiosqlite:///" + raw[len(prefix) :]
        for prefix in _POSTGRES_PREFIXES:
            if raw.startswith(prefix):
                return "postgresql+asyncpg://" + raw[len(prefix) :]
        raise SettingsError("database_url: unsupported scheme")  # unreachable after validation

    @property
    def base_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def demo_credentials_path(self) -> Path:
        return self.data_dir / "demo-credentials.json"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get(CONFIG_FILE_ENV)
        if config_file:
            # Environment variables win over the file, so one file can serve many replicas.
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=Path(config_file)))
        return tuple(sources)


def load_settings(**overrides: Any) -> Settings:
    """Load and validate settings, turning every failure into one readable SettingsError."""
    config_file = os.environ.get(CONFIG_FILE_ENV)
    if config_file and not Path(config_file).is_file():
        raise SettingsError(f"{CONFIG_FILE_ENV}: no such file: {config_file}")
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors(include_input=False, include_url=False):
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            lines.append(f"  {field} (FLEETWARD_{field.upper()}): {error['msg']}")
        raise SettingsError("invalid settings:\n" + "\n".join(lines)) from None
    except ValueError as exc:  # malformed TOML
        raise SettingsError(f"invalid settings file: {exc}") from None
