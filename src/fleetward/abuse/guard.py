"""What a request meets: the shared store, and an explicit choice when it is down.

:class:`GuardedQuotas` asks the primary store (Redis when configured, else the in-process
store). When the primary cannot answer, the call's :class:`~fleetward.abuse.policy.Degrade`
mode decides, and it is chosen per route in the catalog:

* ``fail_closed``: :class:`~fleetward.abuse.errors.QuotaStoreDown` (503), nothing done;
* ``local_limit``: the same charges are drawn from this process's buckets instead, and the
  verdict says ``degraded``. Each replica then counts alone, so while Redis is down the
  platform admits up to (replicas x limit); that is the price of keeping reads up.

Commands, sensitive flows and anything charged per vehicle never degrade, whatever the route
asks: a plan says so (``may_degrade``), and so do the charges themselves, so a misconfigured
route cannot turn a command's quota into a per-replica one.

After a failure the primary is not asked again for ``retry_primary_after`` (measured on the
callers' clock): every request during an outage would otherwise wait for the store's timeout
first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Final

from fleetward.abuse.errors import QuotaExceeded, QuotaStoreDown, whole_seconds
from fleetward.abuse.memory import InMemoryQuotaStore
from fleetward.abuse.policy import Degrade, QuotaPlan
from fleetward.abuse.quotas import Charge, Dimension, QuotaVerdict
from fleetward.abuse.store import QuotaStore, QuotaUnavailable
from fleetward.observability.logging import get_logger

logger = get_logger(__name__)

_NEVER_DEGRADE: Final = frozenset({Dimension.COMMAND, Dimension.FLOW, Dimension.VEHICLE})
DEFAULT_RETRY_PRIMARY_AFTER: Final = timedelta(seconds=1)


def may_degrade(charges: Sequence[Charge]) -> bool:
    return not any(charge.dimension in _NEVER_DEGRADE for charge in charges)


class GuardedQuotas:
    """Safe for concurrent use on one event loop (as safe as the stores it wraps)."""

    def __init__(
        self,
        primary: QuotaStore,
        fallback: QuotaStore | None = None,
        *,
        retry_primary_after: timedelta = DEFAULT_RETRY_PRIMARY_AFTER,
    ) -> None:
        self._primary = primary
        self._fallback = fallback if fallback is not None else InMemoryQuotaStore()
        self._retry_after = retry_primary_after
        self._down_until: datetime | None = None

    @property
    def primary_down(self) -> bool:
        return self._down_until is not None

    async def consume(
        self, charges: Sequence[Charge], cost: int, *, now: datetime, degrade: Degrade
    ) -> QuotaVerdict:
        """The primary's verdict; if it is down, the fallback's (``local_limit`` and charges
        that may degrade) or :class:`QuotaStoreDown`."""
        if self._down_until is None or now >= self._down_until:
            try:
                verdict = await self._primary.consume(charges, cost, now=now)
            except QuotaUnavailable as exc:
                if self._down_until is None:
                    logger.warning("quota.store.unavailable", error=str(exc))
                self._down_until = now + self._retry_after
            else:
                if self._down_until is not None:
                    logger.info("quota.store.recovered")
                    self._down_until = None
                return verdict
        if degrade is not Degrade.LOCAL_LIMIT or not may_degrade(charges):
            raise QuotaStoreDown(whole_seconds(self._retry_after))
        local = await self._fallback.consume(charges, cost, now=now)
        return QuotaVerdict(
            allowed=local.allowed,
            limit=local.limit,
            remaining=local.remaining,
            retry_after=local.retry_after,
            reset_after=local.reset_after,
            retryable=local.retryable,
            degraded=True,
        )

    async def enforce(self, plan: QuotaPlan, *, now: datetime, degrade: Degrade) -> QuotaVerdict:
        """Draw ``plan`` or refuse: returns the allowed verdict (for RateLimit headers on the
        response), raises :class:`QuotaExceeded` (429) or :class:`QuotaStoreDown` (503)."""
        mode = degrade if plan.may_degrade else Degrade.FAIL_CLOSED
        verdict = await self.consume(plan.charges, plan.cost, now=now, degrade=mode)
        if not verdict.allowed:
            raise QuotaExceeded(verdict)
        return verdict
