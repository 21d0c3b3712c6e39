"""The mobile surface (audience `urn:fleetward:api:mobile`), mounted under `/mobile/v1`."""

from __future__ import annotations

from fleetward.api.surfaces import build_surface_router
from fleetward.core.surfaces import Surface

router = build_surface_router(Surface.MOBILE)
