"""The partner surface (audience `urn:fleetward:api:partner`), mounted under `/partner/v1`."""

from __future__ import annotations

from fleetward.api.surfaces import build_surface_router
from fleetward.core.surfaces import Surface

router = build_surface_router(Surface.PARTNER)
