"""API surfaces: one per audience. A token is valid for exactly one surface."""

from __future__ import annotations

from enum import StrEnum


class Surface(StrEnum):
    MOBILE = "mobile"
    FLEET = "fleet"
    DEALER = "dealer"
    PARTNER = "partner"
    SUPPORT = "support"
    ADMIN = "admin"

    @property
    def audience(self) -> str:
        """The ``aud`` value of access tokens for this surface."""
        return f"urn:fleetward:api:{self.value}"

    @property
    def prefix(self) -> str:
        """The URL prefix the surface's router is mounted under."""
        return f"/{self.value}"
