"""The quota store seam: where buckets live (this process, or Redis shared by replicas)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from fleetward.abuse.quotas import Charge, QuotaVerdict


class QuotaUnavailable(Exception):
    """The store could not answer (unreachable, timed out, a malformed reply). Never an
    allowance: the caller fails closed or, where the route allows it, falls back to a local
    limit (:class:`~fleetward.abuse.guard.GuardedQuotas`). The request may or may not have
    been counted (a timeout after the store acted), which errs on the side of counting."""


class QuotaStore(Protocol):
    """Token buckets keyed by :attr:`Charge.key`.

    ``consume`` is atomic per call: it checks every charge's bucket at ``now`` and then
    either draws ``charge.cost_for(cost)`` units from all of them (``allowed``) or from none
    (denied), with no other consume interleaving between the check and the draw, however
    many callers (tasks, processes, replicas) share the store. Two concurrent requests can
    therefore never both pass on the last unit. Implementations are safe for concurrent use
    from one event loop; the in-memory one is not thread-safe (one loop per process).

    ``now`` is the caller's clock (the platform :class:`~fleetward.core.clock.Clock`), not
    the store's, so a frozen clock drives tests; replicas sharing a store must keep their
    clocks NTP-synced. A clock behind a bucket's last update refills nothing (never a gift).

    ``cost`` and ``charges`` must satisfy :func:`~fleetward.abuse.quotas.check_request`
    (``ValueError`` otherwise). Any failure to answer raises :class:`QuotaUnavailable`.
    """

    async def consume(
        self, charges: Sequence[Charge], cost: int, *, now: datetime
    ) -> QuotaVerdict: ...
