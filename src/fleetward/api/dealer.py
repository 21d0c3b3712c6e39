"""The dealer surface (audience `urn:fleetward:api:dealer`), mounted under `/dealer/v1`."""

from __future__ import annotations

from fleetward.api.surfaces import build_surface_router
from fleetward.core.surfaces import Surface

router = build_surface_router(Surface.DEALER)
