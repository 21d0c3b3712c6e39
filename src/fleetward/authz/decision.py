"""What is asked of the policy decision point and what it answers: both are values.

A :class:`Decision` is never a bare bool (it refuses to be used as one), so every answer
carries a stable reason code and the version of the policy that gave it, and every denial can
become an audit event (:func:`audit_decision`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Final

from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.events import ActorType, EventName
from fleetward.audit.events import Decision as AuditVerdict
from fleetward.audit.recorder import Actor, AuditRecorder, AuditRow, Target
from fleetward.authz.permissions import Permission
from fleetward.core.errors import JsonValue
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.tokens import AccessTokenClaims


class Reason(StrEnum):
    """Stable reason codes. Policy ``@id`` annotations must be values of this enum (a test and
    the PDP's start-up check hold them to it), so a reason never appears only in a policy."""

    # Allowed: the @id of the determining permit (permit.cedar).
    OWNER = "owner"
    DRIVER_DELEGATION = "driver-delegation"
    FLEET_ADMIN = "fleet-admin"
    FLEET_ADMIN_MANAGE = "fleet-admin-manage"
    FLEET_ADMIN_GROUP = "fleet-admin-group"
    FLEET_OPERATOR = "fleet-operator"
    FLEET_OPERATOR_GROUP = "fleet-operator-group"
    FLEET_OPERATOR_BULK = "fleet-operator-bulk"
    DEALER_CASE = "dealer-case"
    DEALER_CASE_MANAGE = "dealer-case-manage"
    DEALER_APPOINTMENTS = "dealer-appointments"
    SUPPORT_CASE = "support-case"
    PARTNER_CONSENT = "partner-consent"
    PLATFORM_ADMIN = "platform-admin"
    ENGINEER_OTA = "engineer-ota"
    ENGINEER_DIAGNOSTICS = "engineer-diagnostics"
    # Denied by a forbid (forbid.cedar), reported only when a permit would otherwise allow.
    SCOPE = "scope"
    TOKEN_TENANT_MISMATCH = "token-tenant-mismatch"  # noqa: S105 - a reason code, not a secret
    TENANT_MISMATCH = "tenant-mismatch"
    TENANT_MISMATCH_FLEET = "tenant-mismatch-fleet"
    TENANT_MISMATCH_OWN_FLEET = "tenant-mismatch-own-fleet"
    SEPARATION_OF_DUTIES = "separation-of-duties"
    NO_LOCATION = "no-location"
    DEALER_LIMITS = "dealer-limits"
    READ_ONLY_CLIENT = "read-only-client"
    NO_BULK_IMMOBILIZE = "no-bulk-immobilize"
    REGION_BARRED = "region-barred"
    STEP_UP_REQUIRED = "step-up-required"
    # Denied because no permit applies, named by what the entity builder left out.
    NO_RELATIONSHIP = "no-relationship"
    FORMER_OWNER = "former-owner"
    WINDOW_EXPIRED = "window-expired"
    WINDOW_NOT_STARTED = "window-not-started"
    REVOKED = "revoked"
    CASE_CLOSED = "case-closed"
    UNASSIGNED = "unassigned"
    # Denied before the policy is evaluated.
    UNKNOWN_PRINCIPAL = "unknown-principal"
    PRINCIPAL_DISABLED = "principal-disabled"
    UNKNOWN_RESOURCE = "unknown-resource"
    # Fail closed: the PDP could not decide.
    PDP_ERROR = "pdp-error"
    PDP_TIMEOUT = "pdp-timeout"
    # Refused by the route helper (as_applied): an allow carrying an obligation
    # the route does not apply. The PDP's allow is what the audit records.
    OBLIGATION_NOT_APPLIED = "obligation-not-applied"


class Obligation(StrEnum):
    """What the caller must do with an allowed answer (a permit's ``@obligation``)."""

    PSEUDONYMISE = "pseudonymise"
    MINIMISE_FIELDS = "minimise-fields"


class PrincipalKind(StrEnum):
    """Identities stay separate: a person, a partner's application, a workload."""

    USER = "user"
    PARTNER = "partner"
    WORKLOAD = "workload"


class ResourceKind(StrEnum):
    VEHICLE = "vehicle"
    ACCOUNT = "account"  # a customer account (user id), for support:read_account
    TENANT = "tenant"
    FLEET_GROUP = "fleet_group"
    DEALER_CASE = "dealer_case"
    SUPPORT_CASE = "support_case"  # asked first on every route under a support case
    CLIENT_REGISTRATION = "client_registration"
    PLATFORM = "platform"  # the platform itself (OTA campaigns)


PLATFORM_ID: Final = "fleetward"


@dataclass(frozen=True, slots=True)
class PrincipalRef:
    kind: PrincipalKind
    id: str


@dataclass(frozen=True, slots=True)
class ResourceRef:
    kind: ResourceKind
    id: str

    @classmethod
    def vehicle(cls, vehicle_id: str) -> ResourceRef:
        return cls(ResourceKind.VEHICLE, vehicle_id)


# The platform itself, the resource a function of no one object is asked on.
THE_PLATFORM: Final = ResourceRef(ResourceKind.PLATFORM, PLATFORM_ID)


@dataclass(frozen=True, slots=True)
class RequestContext:
    """Facts of the request, all taken from a verified token and the platform clock."""

    now: datetime
    tenant_id: str  # the tenant the token was issued for
    scopes: frozenset[str]
    acr: str
    auth_time: datetime
    region: str | None = None  # where the request comes from, when known
    # For fleet:bulk_command: the command each vehicle receives.
    command: Permission | None = None

    @property
    def acr_level(self) -> int:
        """0 for an unknown class (workloads included), else the strength of the class."""
        try:
            return Acr(self.acr).strength
        except ValueError:
            return 0

    @classmethod
    def from_claims(
        cls,
        claims: AccessTokenClaims,
        *,
        now: datetime,
        region: str | None = None,
        command: Permission | None = None,
    ) -> RequestContext:
        return cls(
            now=now,
            tenant_id=claims.tenant,
            scopes=claims.scopes,
            acr=claims.acr,
            auth_time=claims.authenticated_at,
            region=region,
            command=command,
        )


@dataclass(frozen=True, slots=True)
class AuthzRequest:
    principal: PrincipalRef
    action: Permission
    resource: ResourceRef
    context: RequestContext

    @classmethod
    def from_claims(
        cls,
        claims: AccessTokenClaims,
        surface: Surface,
        action: Permission,
        resource: ResourceRef,
        *,
        now: datetime,
        region: str | None = None,
        command: Permission | None = None,
    ) -> AuthzRequest:
        """The request a verified token makes. A token standing for no person is its client:
        a partner's application on the partner surface, a workload anywhere else."""
        if claims.sub_type == "user":
            principal = PrincipalRef(PrincipalKind.USER, claims.sub)
        elif surface is Surface.PARTNER:
            principal = PrincipalRef(PrincipalKind.PARTNER, claims.client_id)
        else:
            principal = PrincipalRef(PrincipalKind.WORKLOAD, claims.client_id)
        context = RequestContext.from_claims(claims, now=now, region=region, command=command)
        return cls(principal, action, resource, context)


@dataclass(frozen=True, slots=True)
class Decision:
    """The PDP's answer. ``policy_ids`` are the @ids of the policies that determined it
    (empty when it was decided before or without the policy)."""

    allowed: bool
    reason: Reason
    policy_version: str
    policy_ids: tuple[str, ...] = ()
    obligations: frozenset[Obligation] = frozenset()

    def __bool__(self) -> bool:
        # `if decision:` would read an allow into every denial's shape; ask for .allowed.
        raise TypeError("a Decision is not a bool: read decision.allowed")

    @classmethod
    def deny(
        cls, reason: Reason, policy_version: str, policy_ids: tuple[str, ...] = ()
    ) -> Decision:
        return cls(False, reason, policy_version, policy_ids)


AUTHZ_DECISION_MADE: Final = EventName.AUTHZ_DECISION_MADE

_ACTOR_TYPES: Final = {
    PrincipalKind.USER: ActorType.USER,
    PrincipalKind.PARTNER: ActorType.PARTNER,
    PrincipalKind.WORKLOAD: ActorType.WORKLOAD,
}


# What a route applies when it declares nothing: no obligation (see :func:`as_applied`).
APPLIES_NONE: Final[frozenset[Obligation]] = frozenset()


def as_applied(decision: Decision, applies: frozenset[Obligation]) -> Decision:
    """The decision a route (or a command re-checked at approval or delivery, which applies
    none) that applies ``applies`` may act on: an allow carrying any other
    obligation is a deny (``obligation-not-applied``; policy and version kept for the logs),
    since the route would otherwise answer it as a plain allow (fail open). One subset test:
    nothing is read or asked again."""
    if decision.allowed and not decision.obligations <= applies:
        return Decision.deny(
            Reason.OBLIGATION_NOT_APPLIED, decision.policy_version, decision.policy_ids
        )
    return decision


def audit_decision(
    recorder: AuditRecorder, session: AsyncSession, request: AuthzRequest, decision: Decision
) -> AuditRow:
    """Record one decision in the caller's transaction, kept if that transaction does not
    commit (written then by the unit of work in one of its own). Ids and codes only: no
    token, no personal data, no policy text."""
    policy_ids: list[JsonValue] = list(decision.policy_ids)
    obligations: list[JsonValue] = [o.value for o in sorted(decision.obligations)]
    return recorder.record(
        session,
        AUTHZ_DECISION_MADE,
        actor=Actor(
            _ACTOR_TYPES[request.principal.kind],
            request.principal.id,
            request.context.tenant_id,
        ),
        target=Target(request.resource.kind.value, request.resource.id),
        decision=AuditVerdict.ALLOWED if decision.allowed else AuditVerdict.DENIED,
        reason=decision.reason.value,
        details={
            "permission": request.action.value,
            "policy_version": decision.policy_version,
            "policy_ids": policy_ids,
            "obligations": obligations,
        },
        keep=True,
    )
