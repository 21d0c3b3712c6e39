"""Rules on refused access: another tenant's objects, walking vehicles, denied commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from fleetward.audit.alerts import AlertSeverity
from fleetward.audit.events import EventName
from fleetward.authz.decision import Reason
from fleetward.detection.config import (
    CommandDenialsConfig,
    CrossTenantConfig,
    EnumerationConfig,
)
from fleetward.detection.finding import BaseRule, Finding
from fleetward.detection.observed import Observed
from fleetward.detection.windows import Window, describe, distinct

CROSS_TENANT_REASONS: Final = frozenset(
    {
        Reason.TOKEN_TENANT_MISMATCH.value,
        Reason.TENANT_MISMATCH.value,
        Reason.TENANT_MISMATCH_FLEET.value,
        Reason.TENANT_MISMATCH_OWN_FLEET.value,
    }
)
# What a walk over vehicle ids looks like from the PDP: "not yours", "no such vehicle", "no
# longer yours", and another tenant's vehicle (all answered with the same 404).
NOT_FOUND_REASONS: Final = CROSS_TENANT_REASONS | {
    Reason.NO_RELATIONSHIP.value,
    Reason.UNKNOWN_RESOURCE.value,
    Reason.FORMER_OWNER.value,
}
DECISION: Final = EventName.AUTHZ_DECISION_MADE.value
# The objects whose ids are walked: vehicles (anyone), and support cases (an agent trying
# cases not assigned to them). Each kind is counted on its own.
WALKED: Final = frozenset({"vehicle", "support_case"})


class CrossTenantAccess(BaseRule):
    """A principal asked for an object of another tenant, or used a token issued for another
    tenant than its own. Tenants are isolated by policy, so legitimate clients never do this:
    it is a BOLA probe across tenants (OWASP API1) or a confused/compromised integration."""

    id = "cross-tenant-access"
    severity = AlertSeverity.HIGH
    names = frozenset({DECISION})

    def __init__(self, config: CrossTenantConfig) -> None:
        self._config = config
        self._window = Window(config.window)

    def observe(self, event: Observed) -> Sequence[Finding]:
        if not event.denied or event.reason not in CROSS_TENANT_REASONS:
            return ()
        entries = self._window.add(event.actor, event.at, event.id)
        if len(entries) < self._config.attempts:
            return ()
        summary = (
            f"{event.actor} was refused {len(entries)} time(s) across tenants in "
            f"{describe(self._config.window)} (last: {event.reason} on "
            f"{event.object_type} {event.object_id})"
        )
        return (self.actor_finding(event, summary, [e.event_id for e in entries]),)


class VinEnumeration(BaseRule):
    """One actor walking vehicle ids (or support case ids: :data:`WALKED`): many distinct
    objects of one kind refused as not-found, not-theirs or another tenant's in a window (each
    request looks harmless; the spread does not), plus what the abuse limits report
    (``abuse:enumeration:suspected`` / ``stopped``, which also see sequential VIN serials at
    low rates). The remote-start-any-VIN class of flaw is found exactly this way."""

    id = "vin-enumeration"
    severity = AlertSeverity.HIGH
    names = frozenset(
        {
            DECISION,
            EventName.ENUMERATION_SUSPECTED.value,
            EventName.ENUMERATION_STOPPED.value,
        }
    )

    def __init__(self, config: EnumerationConfig) -> None:
        self._config = config
        # Distinct vehicles count: refusals padded on one vehicle must not push a walk's
        # other vehicles out of the actor's bounded entries.
        self._window = Window(config.window, unique_values=True)

    def observe(self, event: Observed) -> Sequence[Finding]:
        if event.name != DECISION:
            verb = event.name.rsplit(":", 1)[-1]
            signal = event.reason or "enumeration"
            summary = f"abuse limits: enumeration {verb} for {event.actor} ({signal})"
            return (self._finding(event, summary),)
        if not event.denied or event.reason not in NOT_FOUND_REASONS:
            return ()
        kind = event.object_type
        if kind not in WALKED:
            return ()
        entries = self._window.add(f"{event.actor}|{kind}", event.at, event.id, event.object_id)
        walked = len(distinct(entries))
        if walked < self._config.distinct_vehicles:
            return ()
        named = "vehicles" if kind == "vehicle" else "support cases"
        summary = (
            f"{event.actor} was refused {walked} distinct {named} (not found or not "
            f"theirs) in {describe(self._config.window)}"
        )
        return (self._finding(event, summary, [e.event_id for e in entries]),)

    def _finding(self, event: Observed, summary: str, evidence: list[str] | None = None) -> Finding:
        return self.actor_finding(event, summary, evidence or [event.id])


class RepeatedCommandDenials(BaseRule):
    """One actor's remote commands refused again and again (``vehicle:command:rejected``,
    the failing link in the reason): a stolen session trying commands it lacks, a script
    hammering step-up, or an actor probing which vehicles answer. A job the service expired
    before it was authorized is not a denial of anyone and does not count."""

    id = "repeated-command-denials"
    severity = AlertSeverity.MEDIUM
    names = frozenset({EventName.COMMAND_REJECTED.value})

    def __init__(self, config: CommandDenialsConfig) -> None:
        self._config = config
        self._window = Window(config.window)

    def observe(self, event: Observed) -> Sequence[Finding]:
        if event.by_system or event.reason == "expired":
            return ()
        entries = self._window.add(event.actor, event.at, event.id, event.object_id)
        if len(entries) < self._config.rejections:
            return ()
        summary = (
            f"{event.actor} had {len(entries)} commands rejected on "
            f"{len(distinct(entries))} vehicle(s) in {describe(self._config.window)} "
            f"(last link: {event.reason})"
        )
        return (self.actor_finding(event, summary, [e.event_id for e in entries]),)
