"""Rules on consequential changes: bulk commands, ownership, service-account privileges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fleetward.audit.alerts import AlertSeverity
from fleetward.audit.events import ActorType, EventName
from fleetward.detection.config import BulkCommandConfig, OwnershipConfig, PrivilegeChangeConfig
from fleetward.detection.finding import BaseRule, Finding
from fleetward.detection.observed import Observed
from fleetward.detection.windows import Window, describe

TRANSFER_STARTED: Final = EventName.OWNERSHIP_TRANSFER_STARTED.value
TRANSFERRED: Final = EventName.OWNERSHIP_TRANSFERRED.value


class BulkCommand(BaseRule):
    """A bulk command requested on many vehicles, or on any number for a command that opens,
    starts or immobilises them. Bulk commands are legitimate for fleets, and approved above a
    threshold, but one stolen fleet-admin session reaches a whole fleet at once: every such
    request is put in front of a human."""

    id = "bulk-command"
    severity = AlertSeverity.MEDIUM
    names = frozenset({EventName.BULK_COMMAND_REQUESTED.value})

    def __init__(self, config: BulkCommandConfig) -> None:
        self._config = config

    def observe(self, event: Observed) -> Sequence[Finding]:
        command = event.details.get("command")
        vehicles = event.details.get("vehicles")
        if not isinstance(command, str) or not isinstance(vehicles, int):
            return ()
        sensitive = command in self._config.sensitive_commands
        if vehicles < self._config.min_vehicles and not sensitive:
            return ()
        summary = (
            f"{event.actor} requested {command} on {vehicles} vehicle(s) (bulk {event.object_id})"
        )
        return (
            self.finding(
                event,
                subject_type=event.actor_type,
                subject_id=event.actor_id,
                tenant_id=event.tenant_id,
                summary=summary,
                evidence=[event.id],
            ),
        )


class OwnershipChurn(BaseRule):
    """Ownership changing unusually often: one user starting or completing several transfers
    in a window (account takeover used to sell cars away, a dealer account abused), or one
    vehicle changing hands repeatedly (laundering a stolen vehicle's digital ownership)."""

    id = "ownership-churn"
    severity = AlertSeverity.MEDIUM
    names = frozenset({TRANSFER_STARTED, TRANSFERRED})

    def __init__(self, config: OwnershipConfig) -> None:
        self._config = config
        self._users = Window(config.window)
        self._vehicles = Window(config.window)

    def observe(self, event: Observed) -> Sequence[Finding]:
        found: list[Finding] = []
        span = describe(self._config.window)
        if event.actor_type == ActorType.USER.value:
            entries = self._users.add(event.actor_id, event.at, event.id, event.object_id)
            if len(entries) >= self._config.per_user:
                found.append(
                    self.finding(
                        event,
                        subject_type="user",
                        subject_id=event.actor_id,
                        tenant_id=event.actor_tenant_id,
                        summary=f"user {event.actor_id} took part in {len(entries)} ownership "
                        f"transfers in {span}",
                        evidence=[e.event_id for e in entries],
                    )
                )
        if event.name == TRANSFERRED and event.object_type == "vehicle":
            entries = self._vehicles.add(event.object_id, event.at, event.id)
            if len(entries) >= self._config.per_vehicle:
                found.append(
                    self.finding(
                        event,
                        subject_type="vehicle",
                        subject_id=event.object_id,
                        tenant_id=event.tenant_id,
                        summary=f"vehicle {event.object_id} changed owner {len(entries)} times "
                        f"in {span}",
                        evidence=[e.event_id for e in entries],
                    )
                )
        return found


class ServiceAccountPrivilegeChange(BaseRule):
    """An OAuth client (a partner application, a workload: the platform's service accounts)
    registered or given new keys. Either hands lasting, unattended power to whoever holds
    the keys; each one is reviewed. (Client scopes are fixed at registration: there is no
    separate scope change to watch; workloads hold no roles beyond their scopes.)"""

    id = "service-account-privilege-change"
    severity = AlertSeverity.HIGH
    names = frozenset(
        {EventName.OAUTH_CLIENT_REGISTERED.value, EventName.OAUTH_CLIENT_KEYS_REPLACED.value}
    )

    def __init__(self, config: PrivilegeChangeConfig) -> None:
        self._config = config

    def observe(self, event: Observed) -> Sequence[Finding]:
        registered = event.name == EventName.OAUTH_CLIENT_REGISTERED.value
        change = "registered" if registered else "given new keys"
        surfaces = event.details.get("surfaces")
        on = f" for {', '.join(map(str, surfaces))}" if isinstance(surfaces, list) else ""
        return (
            self.finding(
                event,
                subject_type="oauth_client",
                subject_id=event.object_id,
                tenant_id=event.tenant_id,
                summary=f"OAuth client {event.object_id} {change}{on} by {event.actor}",
                evidence=[event.id],
            ),
        )
