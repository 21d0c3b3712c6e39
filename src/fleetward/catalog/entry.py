"""Catalog entries and the decorator that attaches one to a route's endpoint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from typing import Any, Final, TypeVar

from fleetward.abuse.policy import Degrade
from fleetward.authz.permissions import Permission
from fleetward.core.surfaces import Surface


class CallerType(StrEnum):
    USER = "user"
    VEHICLE = "vehicle"
    WORKLOAD = "workload"
    PARTNER = "partner"
    ADMIN = "admin"
    TOOL = "tool"
    ANONYMOUS = "anonymous"


class DataClass(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    PERSONAL = "personal"
    LOCATION = "location"
    VEHICLE_STATE = "vehicle_state"
    CREDENTIAL = "credential"


class Impact(StrEnum):
    SAFETY = "safety"
    PRIVACY = "privacy"
    FINANCIAL = "financial"
    REGULATORY = "regulatory"
    OPERATIONAL = "operational"


class Lifecycle(StrEnum):
    ACTIVE = "active"
    DEPRECATED = "deprecated"
    RETIRED = "retired"


class PublicMarker(StrEnum):
    """Explicit markers for routes that need no object permission.

    ``PUBLIC``: no credentials at all (health, discovery). ``AUTHENTICATED``: any valid token
    for the route's surface, about the caller themselves (``/me``); never an object route.
    """

    PUBLIC = "public"
    AUTHENTICATED = "authenticated"


PUBLIC: Final = PublicMarker.PUBLIC
AUTHENTICATED: Final = PublicMarker.AUTHENTICATED

# Where a route lives when it is not on one of the API surfaces.
INFRASTRUCTURE = "infrastructure"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    surface: Surface | str
    owner: str
    purpose: str
    callers: frozenset[CallerType]
    permission: Permission | PublicMarker
    data_class: DataClass
    objects: tuple[str, ...] = ()
    impact: frozenset[Impact] = frozenset()
    version: str = "v1"
    lifecycle: Lifecycle = Lifecycle.ACTIVE
    sunset: date | None = None
    # Expected sustained rate per caller, in requests per minute (abuse baselines).
    expected_rate_per_minute: int = 60
    tags: tuple[str, ...] = field(default=())
    # When the shared quota store is unreachable (abuse.guard): fail closed (503) unless the
    # route is a plain read that chose to count in each replica's own buckets instead.
    # LOCAL_LIMIT is refused here for safety-relevant routes, and honoured at request time
    # only for GET/HEAD (the entry does not know its method): a write always fails closed.
    degrade: Degrade = Degrade.FAIL_CLOSED

    def __post_init__(self) -> None:
        if not self.owner or not self.purpose or not self.callers:
            raise ValueError("a catalog entry needs an owner, a purpose and its callers")
        anonymous = CallerType.ANONYMOUS in self.callers
        if (self.permission is PUBLIC) != anonymous:
            # Anonymous callers and the public marker go together, and only together.
            raise ValueError("a route is public exactly when it admits anonymous callers")
        if self.lifecycle is not Lifecycle.ACTIVE and self.sunset is None:
            raise ValueError("a deprecated or retired route needs a sunset date")
        if self.degrade is Degrade.LOCAL_LIMIT and Impact.SAFETY in self.impact:
            raise ValueError("a route with safety impact fails closed when quotas are down")

    def as_extensions(self) -> dict[str, Any]:
        """The entry as OpenAPI ``x-fleetward-*`` extensions."""
        return {
            "x-fleetward-surface": str(self.surface),
            "x-fleetward-owner": self.owner,
            "x-fleetward-purpose": self.purpose,
            "x-fleetward-callers": sorted(c.value for c in self.callers),
            "x-fleetward-permission": self.permission.value,
            "x-fleetward-objects": list(self.objects),
            "x-fleetward-data-class": self.data_class.value,
            "x-fleetward-impact": sorted(i.value for i in self.impact),
            "x-fleetward-version": self.version,
            "x-fleetward-lifecycle": self.lifecycle.value,
            "x-fleetward-sunset": self.sunset.isoformat() if self.sunset else None,
            "x-fleetward-expected-rate-per-minute": self.expected_rate_per_minute,
            "x-fleetward-degrade": self.degrade.value,
        }


_ATTRIBUTE = "__fleetward_catalog__"
F = TypeVar("F", bound=Callable[..., Any])


def catalogued(entry: CatalogEntry) -> Callable[[F], F]:
    """Attach ``entry`` to an endpoint. Put it below the router decorator."""

    def mark(endpoint: F) -> F:
        setattr(endpoint, _ATTRIBUTE, entry)
        return endpoint

    return mark


def entry_of(endpoint: object) -> CatalogEntry | None:
    found = getattr(endpoint, _ATTRIBUTE, None)
    return found if isinstance(found, CatalogEntry) else None
