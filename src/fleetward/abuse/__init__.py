"""Abuse limits by business meaning: quotas per user, client, vehicle, tenant, command type,
sensitive flow and the whole platform, where a request costs the number of objects it
targets.

This package owns the quota domain (:mod:`.quotas`: limits, charges, the cost rule, the
verdict), the store seam and its two implementations (:mod:`.store`, :mod:`.memory` for the
embedded single process, :mod:`.redis_store` shared by every replica), the configured
limits and how a request becomes charges (:mod:`.policy`), approved raised quotas
(:mod:`.raised`), what happens when the shared store is unreachable (:mod:`.guard`), the
caller-visible refusals with their ``Retry-After`` and RateLimit headers (:mod:`.errors`),
and the wiring from settings (:mod:`.runtime`). Operators' guide: docs/operations.md.

It does not decide who may act on what (that is ``authz``), and it does not wire itself into
routes: callers build a plan with :meth:`QuotaPolicy.plan` and pass it to
:meth:`GuardedQuotas.enforce` before authorizing each object.
"""

from fleetward.abuse.errors import QuotaExceeded, QuotaStoreDown, TooManyTargets
from fleetward.abuse.guard import GuardedQuotas
from fleetward.abuse.memory import InMemoryQuotaStore
from fleetward.abuse.policy import Degrade, Flow, QuotaPlan, QuotaPolicy
from fleetward.abuse.quotas import Charge, Dimension, Limit, QuotaVerdict, request_cost
from fleetward.abuse.raised import InMemoryRaisedQuotas, RaisedQuota, RaisedQuotas
from fleetward.abuse.store import QuotaStore, QuotaUnavailable

__all__ = [
    "Charge",
    "Degrade",
    "Dimension",
    "Flow",
    "GuardedQuotas",
    "InMemoryQuotaStore",
    "InMemoryRaisedQuotas",
    "Limit",
    "QuotaExceeded",
    "QuotaPlan",
    "QuotaPolicy",
    "QuotaStore",
    "QuotaStoreDown",
    "QuotaUnavailable",
    "QuotaVerdict",
    "RaisedQuota",
    "RaisedQuotas",
    "TooManyTargets",
    "request_cost",
]
