"""The facts one authorization request needs: values describing ONE principal and the
resources it asks about (see :mod:`fleetward.authz.relations`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from fleetward.authz.decision import PrincipalRef, Reason, RequestContext, ResourceKind, ResourceRef
from fleetward.authz.permissions import Permission
from fleetward.identity.models import Role, TenantKind
from fleetward.identity.oauth_models import ClientType


class RelationsRefused(Exception):
    """The principal cannot be evaluated at all (unknown, disabled, not a member of the
    token's tenant): every request of the batch is denied with ``reason``."""

    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Grant:
    """A delegation or consent in force: who holds it, what it allows, and its window."""

    holder_id: str
    permissions: frozenset[Permission]
    valid_from: datetime
    valid_until: datetime


@dataclass(frozen=True, slots=True)
class PrincipalFacts:
    ref: PrincipalRef
    tenant_id: str
    tenant_kind: TenantKind
    roles: frozenset[Role] = frozenset()
    # Per role held now: when the unbroken hold of it began (renewals without a gap
    # included). Links to groups or cases made before were made under an earlier membership.
    held_since: tuple[tuple[Role, datetime], ...] = ()
    client_type: ClientType | None = None
    operator_groups: frozenset[str] = frozenset()
    dealer_cases: frozenset[str] = frozenset()
    support_cases: frozenset[str] = frozenset()

    def tenure_start(self, role: Role, now: datetime) -> datetime:
        """When the hold of ``role`` held now began (``now`` when it is not held)."""
        return next((since for held, since in self.held_since if held is role), now)


@dataclass(frozen=True, slots=True)
class VehicleFacts:
    id: str
    tenant_id: str
    region: str
    owner_id: str | None = None
    fleet_id: str | None = None
    # Relations of the principal in force now: the principal's groups holding the vehicle,
    # its open cases on the vehicle, its delegation or consent.
    groups: frozenset[str] = frozenset()
    dealer_cases: frozenset[str] = frozenset()
    support_cases: frozenset[str] = frozenset()
    delegation: Grant | None = None
    consent: Grant | None = None


@dataclass(frozen=True, slots=True)
class ObjectFacts:
    """A resource other than a vehicle. ``tenant_id``: a tenant's own id, a group's fleet, a
    case's dealer; ``tenant_kind`` for tenants; ``support_cases`` for accounts."""

    ref: ResourceRef
    tenant_id: str | None = None
    tenant_kind: TenantKind | None = None
    support_cases: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Relations:
    principal: PrincipalFacts
    vehicles: Mapping[str, VehicleFacts] = field(default_factory=dict)
    objects: Mapping[ResourceRef, ObjectFacts] = field(default_factory=dict)
    # Why a relation to a resource was left out; names a default denial.
    notes: Mapping[ResourceRef, Reason] = field(default_factory=dict)

    def exists(self, resource: ResourceRef) -> bool:
        if resource.kind is ResourceKind.VEHICLE:
            return resource.id in self.vehicles
        return resource in self.objects


class RelationSource(Protocol):
    """Where the PDP gets the facts of a batch: one principal, one context, many resources.

    Implementations read state as of ``context.now`` and leave out every relation that is not
    in force then. Safe for concurrent use unless the implementation says otherwise.
    """

    async def relations(
        self, principal: PrincipalRef, context: RequestContext, resources: Sequence[ResourceRef]
    ) -> Relations: ...


__all__ = [
    "Grant",
    "ObjectFacts",
    "PrincipalFacts",
    "RelationSource",
    "Relations",
    "RelationsRefused",
    "VehicleFacts",
]
