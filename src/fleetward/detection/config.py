"""Detection thresholds: one frozen dataclass per rule, defaults tuned for the demo world.

Operators override them in ``<data_dir>/detection.toml`` (see docs/operations.md, "Alerts")::

    [evaluator]
    poll_seconds = 2.0

    [rules.vin-enumeration]
    distinct_vehicles = 8
    window = 900          # durations are seconds

    [rules.deprecated-api-use]
    enabled = false

An unknown section or key, or a value of the wrong type, refuses the file (a typo never
silently leaves a default in place).
"""

from __future__ import annotations

import dataclasses
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

MINUTE: Final = timedelta(minutes=1)
HOUR: Final = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class CrossTenantConfig:
    enabled: bool = True
    attempts: int = 1  # one request into another tenant is already an alert
    window: timedelta = HOUR


@dataclass(frozen=True, slots=True)
class EnumerationConfig:
    enabled: bool = True
    distinct_vehicles: int = 5  # different vehicles refused as not-found/not-theirs
    window: timedelta = 10 * MINUTE


@dataclass(frozen=True, slots=True)
class NewInfrastructureConfig:
    enabled: bool = True
    ipv4_prefix: int = 24
    ipv6_prefix: int = 48
    families_remembered: int = 100_000


@dataclass(frozen=True, slots=True)
class BulkCommandConfig:
    enabled: bool = True
    min_vehicles: int = 10  # below this a bulk command alerts only for a sensitive command
    sensitive_commands: tuple[str, ...] = (
        "vehicle:unlock",
        "vehicle:remote_start",
        "vehicle:immobilize",
    )


@dataclass(frozen=True, slots=True)
class OwnershipConfig:
    enabled: bool = True
    per_user: int = 3  # transfers started or completed by one user
    per_vehicle: int = 2  # completed transfers of one vehicle
    window: timedelta = 24 * HOUR


@dataclass(frozen=True, slots=True)
class CommandDenialsConfig:
    enabled: bool = True
    rejections: int = 5
    window: timedelta = 10 * MINUTE


@dataclass(frozen=True, slots=True)
class PrivilegeChangeConfig:
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class DeprecatedApiConfig:
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class TelemetryVolumeConfig:
    enabled: bool = True
    # Fleet-wide: a signal's short-window rate this many times its long-window rate...
    rate_factor: float = 5.0
    # ...and at least this many messages per second (a quiet fleet's noise never alerts).
    min_rate_per_s: float = 5.0
    # Frames refused for quota, fleet-wide, per second over the short window.
    quota_refusals_per_s: float = 1.0
    # Per device: frames of one device refused for its own quota over the short window (it
    # sends far above its rate: a stuck loop, a replay tool, a clone farm behind one id).
    device_quota_refusals: int = 20
    # Per device: quarantines of one device (by the pipeline) in ``window``.
    quarantines: int = 1
    window: timedelta = 24 * HOUR


@dataclass(frozen=True, slots=True)
class NoAcknowledgmentConfig:
    enabled: bool = True
    unanswered: int = 1  # commands of one vehicle that ended outcome_unknown
    window: timedelta = 24 * HOUR


@dataclass(frozen=True, slots=True)
class CredentialStuffingConfig:
    enabled: bool = True
    # Distinct accounts failing to sign in through one client application in the window.
    distinct_accounts: int = 50
    window: timedelta = HOUR


@dataclass(frozen=True, slots=True)
class RulesConfig:
    cross_tenant: CrossTenantConfig = CrossTenantConfig()
    enumeration: EnumerationConfig = EnumerationConfig()
    new_infrastructure: NewInfrastructureConfig = NewInfrastructureConfig()
    bulk_command: BulkCommandConfig = BulkCommandConfig()
    ownership: OwnershipConfig = OwnershipConfig()
    command_denials: CommandDenialsConfig = CommandDenialsConfig()
    privilege_change: PrivilegeChangeConfig = PrivilegeChangeConfig()
    deprecated_api: DeprecatedApiConfig = DeprecatedApiConfig()
    telemetry_volume: TelemetryVolumeConfig = TelemetryVolumeConfig()
    no_acknowledgment: NoAcknowledgmentConfig = NoAcknowledgmentConfig()
    credential_stuffing: CredentialStuffingConfig = CredentialStuffingConfig()


@dataclass(frozen=True, slots=True)
class EvaluatorConfig:
    poll_seconds: float = 1.0
    batch_size: int = 500
    # Evidence ids kept per alert (the first ones and the newest ones).
    evidence_cap: int = 50
    # A seq range skipped by a batch is looked in on every step; past this grace it is
    # given up once no transaction can fill it (PostgreSQL: every transaction older than
    # its xid bound ended; SQLite: writers are serialized, nothing is in flight). audit/gaps.py.
    gap_grace: timedelta = 5 * MINUTE
    # At start, rules are warmed with at most this many events before the cursor.
    warmup_events: int = 100_000


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    evaluator: EvaluatorConfig = EvaluatorConfig()
    rules: RulesConfig = field(default_factory=RulesConfig)


# TOML section name (the rule's id) -> RulesConfig field.
RULE_SECTIONS: Final = {
    "cross-tenant-access": "cross_tenant",
    "vin-enumeration": "enumeration",
    "token-new-infrastructure": "new_infrastructure",
    "bulk-command": "bulk_command",
    "ownership-churn": "ownership",
    "repeated-command-denials": "command_denials",
    "service-account-privilege-change": "privilege_change",
    "deprecated-api-use": "deprecated_api",
    "telemetry-volume": "telemetry_volume",
    "command-no-acknowledgment": "no_acknowledgment",
    "credential-stuffing": "credential_stuffing",
}
CONFIG_FILE: Final = "detection.toml"


class ConfigInvalid(ValueError):
    """The detection file names something unknown or has a value of the wrong type."""


def load(path: Path) -> DetectionConfig:
    """The defaults, overridden by ``path`` when it exists."""
    if not path.exists():
        return DetectionConfig()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigInvalid(f"{path.name}: not TOML ({exc})") from None
    return parse(document)


def parse(document: Mapping[str, Any]) -> DetectionConfig:
    unknown = set(document) - {"evaluator", "rules"}
    if unknown:
        raise ConfigInvalid(f"unknown sections: {sorted(unknown)}")
    evaluator = _override(EvaluatorConfig(), document.get("evaluator", {}), "evaluator")
    rules = RulesConfig()
    sections = document.get("rules", {})
    if not isinstance(sections, Mapping):
        raise ConfigInvalid("rules: a table of rule ids")
    for rule_id, values in sections.items():
        name = RULE_SECTIONS.get(rule_id)
        if name is None:
            raise ConfigInvalid(f"unknown rule: {rule_id}")
        current = getattr(rules, name)
        rules = dataclasses.replace(rules, **{name: _override(current, values, rule_id)})
    return DetectionConfig(evaluator=evaluator, rules=rules)


def _override(current: Any, values: object, where: str) -> Any:
    if not isinstance(values, Mapping):
        raise ConfigInvalid(f"{where}: a table of settings")
    fields = {f.name: f for f in dataclasses.fields(current)}
    changes: dict[str, Any] = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigInvalid(f"{where}: unknown setting {key}")
        changes[key] = _value(getattr(current, key), value, f"{where}.{key}")
    return dataclasses.replace(current, **changes)


def _value(default: object, value: object, where: str) -> object:
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, timedelta):
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return timedelta(seconds=value)
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
            return value
    elif isinstance(default, float):
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return float(value)
    elif (
        isinstance(default, tuple)
        and isinstance(value, list)
        and all(isinstance(v, str) for v in value)
    ):
        return tuple(value)
    raise ConfigInvalid(f"{where}: expected a value like {default!r}")
