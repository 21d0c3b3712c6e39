"""OAuth scopes and permissions: a scope IS a permission value (``vehicle:unlock``).

A token's scopes bound everything any relationship could grant. Scope strings that name no
permission (``openid``, a misspelling, a look-alike) grant nothing and are ignored, never
"close enough". This bound is checked here, before any relationship is loaded, by every PDP
implementation, and again by the policy itself (forbid ``scope``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from fleetward.authz.decision import AuthzRequest
from fleetward.authz.permissions import Permission

_BY_VALUE: Final = {p.value: p for p in Permission}


def scope_of(permission: Permission) -> str:
    """The scope that grants ``permission``."""
    return permission.value


def permissions_in(scopes: Iterable[str]) -> frozenset[Permission]:
    """The permissions a set of scope strings names (exact, case-sensitive matches only)."""
    return frozenset(_BY_VALUE[s] for s in scopes if s in _BY_VALUE)


def in_scope(request: AuthzRequest) -> bool:
    """Whether the token's scopes cover the request: its action, and for a bulk command the
    command every vehicle receives."""
    scopes = request.context.scopes
    if scope_of(request.action) not in scopes:
        return False
    command = request.context.command
    return command is None or scope_of(command) in scopes
