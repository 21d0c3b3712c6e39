"""Infrastructure routes: liveness, readiness and the OpenAPI document."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from fleetward.api.routing import infrastructure_router
from fleetward.catalog.entry import (
    INFRASTRUCTURE,
    PUBLIC,
    CallerType,
    CatalogEntry,
    DataClass,
    Impact,
    catalogued,
)
from fleetward.platform import Platform

router = infrastructure_router()

_PROBE = frozenset({CallerType.ANONYMOUS, CallerType.TOOL})


@router.get("/healthz", include_in_schema=True)
@catalogued(
    CatalogEntry(
        surface=INFRASTRUCTURE,
        owner="platform-team",
        purpose="liveness probe",
        callers=_PROBE,
        permission=PUBLIC,
        data_class=DataClass.PUBLIC,
        impact=frozenset({Impact.OPERATIONAL}),
        expected_rate_per_minute=120,
    )
)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
@catalogued(
    CatalogEntry(
        surface=INFRASTRUCTURE,
        owner="platform-team",
        purpose="readiness probe: ready only when the store answers and is migrated",
        callers=_PROBE,
        permission=PUBLIC,
        data_class=DataClass.PUBLIC,
        impact=frozenset({Impact.OPERATIONAL}),
        expected_rate_per_minute=120,
    )
)
async def readyz(request: Request) -> JSONResponse:
    platform: Platform = request.app.state.platform
    ready, reason = await platform.store_ready()
    if ready and not await request.app.state.revocation_gate.try_load():
        ready, reason = False, "revocations not loaded"
    # The policy version is a hash of the policy text (public in the repository): probes and
    # audits record which policy a deployment enforced when they tested it.
    body = {
        "status": "ready" if ready else "not-ready",
        "store": reason,
        "policy_version": platform.pdp.policy_version,
    }
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/openapi.json", include_in_schema=False)
@catalogued(
    CatalogEntry(
        surface=INFRASTRUCTURE,
        owner="platform-team",
        purpose="the OpenAPI document, with the catalog as x-fleetward-* extensions",
        callers=frozenset({CallerType.ANONYMOUS, CallerType.TOOL}),
        permission=PUBLIC,
        data_class=DataClass.PUBLIC,
        expected_rate_per_minute=10,
    )
)
async def openapi_document(request: Request) -> dict[str, Any]:
    document: dict[str, Any] = request.app.openapi()
    return document
