"""The admin surface (audience `urn:fleetward:api:admin`), mounted under `/admin/v1`."""

from __future__ import annotations

from fleetward.api.surfaces import build_surface_router
from fleetward.core.surfaces import Surface

router = build_surface_router(Surface.ADMIN)
