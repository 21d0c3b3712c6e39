"""Vehicle and relationship errors."""

from __future__ import annotations

from fleetward.core.errors import Conflict, Forbidden, InvalidInput, NotFound


class VehicleNotFound(NotFound):
    code = "vehicle-not-found"
    title = "Vehicle not found"


class DuplicateVin(Conflict):
    code = "duplicate-vin"
    title = "VIN already registered"


class NotCurrentOwner(Forbidden):
    code = "not-current-owner"
    title = "Not the current owner"


class DelegationTooWide(InvalidInput):
    code = "delegation-too-wide"
    title = "Delegation wider than the owner may grant"


class UnknownPermission(InvalidInput):
    code = "unknown-permission"
    title = "Unknown permission"


class RelationshipRefused(InvalidInput):
    """A relationship whose parties do not fit (wrong tenant kind, role, or fleet)."""

    code = "relationship-refused"
    title = "Relationship refused"


class CaseNotOpen(Conflict):
    code = "case-not-open"
    title = "Case is not open"


class AlreadyOwned(Conflict):
    code = "already-owned"
    title = "Vehicle already has an owner"
