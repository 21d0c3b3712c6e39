"""The detection rules, each a small class with a stable id, a severity and its threat in
its docstring; :func:`build_rules` makes the enabled ones from the configuration."""

from __future__ import annotations

from collections.abc import Iterable

from fleetward.detection.config import RulesConfig
from fleetward.detection.finding import Rule
from fleetward.detection.rules.access import (
    CrossTenantAccess,
    RepeatedCommandDenials,
    VinEnumeration,
)
from fleetward.detection.rules.api import DeprecatedApiUse
from fleetward.detection.rules.changes import (
    BulkCommand,
    OwnershipChurn,
    ServiceAccountPrivilegeChange,
)
from fleetward.detection.rules.infrastructure import TokenNewInfrastructure
from fleetward.detection.rules.logins import CredentialStuffing
from fleetward.detection.rules.vehicles import CommandNoAcknowledgment, DeviceQuarantine


def build_rules(config: RulesConfig, deprecated_endpoints: Iterable[str] = ()) -> list[Rule]:
    """Fresh rules (empty windows) for every enabled rule."""
    candidates: list[tuple[bool, Rule]] = [
        (config.cross_tenant.enabled, CrossTenantAccess(config.cross_tenant)),
        (config.enumeration.enabled, VinEnumeration(config.enumeration)),
        (
            config.new_infrastructure.enabled,
            TokenNewInfrastructure(config.new_infrastructure),
        ),
        (config.bulk_command.enabled, BulkCommand(config.bulk_command)),
        (config.ownership.enabled, OwnershipChurn(config.ownership)),
        (config.command_denials.enabled, RepeatedCommandDenials(config.command_denials)),
        (config.privilege_change.enabled, ServiceAccountPrivilegeChange(config.privilege_change)),
        (
            config.deprecated_api.enabled,
            DeprecatedApiUse(config.deprecated_api, deprecated_endpoints),
        ),
        (config.telemetry_volume.enabled, DeviceQuarantine(config.telemetry_volume)),
        (config.no_acknowledgment.enabled, CommandNoAcknowledgment(config.no_acknowledgment)),
        (config.credential_stuffing.enabled, CredentialStuffing(config.credential_stuffing)),
    ]
    return [rule for enabled, rule in candidates if enabled]


RULE_IDS = (
    CrossTenantAccess.id,
    VinEnumeration.id,
    TokenNewInfrastructure.id,
    BulkCommand.id,
    OwnershipChurn.id,
    RepeatedCommandDenials.id,
    ServiceAccountPrivilegeChange.id,
    DeprecatedApiUse.id,
    DeviceQuarantine.id,
    CommandNoAcknowledgment.id,
    CredentialStuffing.id,
)

__all__ = ["RULE_IDS", "build_rules"]
