"""Identity errors."""

from __future__ import annotations

from fleetward.core.errors import Conflict, InvalidInput, NotFound


class UnknownTenant(NotFound):
    code = "unknown-tenant"
    title = "Unknown tenant"


class UnknownUser(NotFound):
    code = "unknown-user"
    title = "Unknown user"


class DuplicateName(Conflict):
    code = "duplicate-name"
    title = "Name already taken"


class RoleNotAllowed(InvalidInput):
    code = "role-not-allowed"
    title = "Role not allowed in this tenant"


class InvalidName(InvalidInput):
    code = "invalid-name"
    title = "Invalid name"
