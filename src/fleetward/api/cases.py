"""Case routes: dealer service cases (``/dealer/v1/cases``) and support cases
(``/support/v1/cases``). See :mod:`fleetward.api.dealer_cases` and
:mod:`fleetward.api.support_cases`."""

from __future__ import annotations

from fastapi import APIRouter

from fleetward.api import dealer_cases, support_cases

router = APIRouter()
router.include_router(dealer_cases.router)
router.include_router(support_cases.router)

__all__ = ["router"]
