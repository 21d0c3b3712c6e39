"""Approved raised quotas: the legitimate high-volume path.

A tenant (a rental fleet locking 5,000 cars every evening) may hold a raised capacity for
one named limit, with an accountable owner, a reason and an expiry. While it is valid the
policy uses it for that tenant's requests instead of the configured capacity, and every
plan lists the raises it applied so that their use is audited. An expired raise is ignored
on the next request; nothing needs to clean it up.

:class:`RaisedQuotas` is the seam. :class:`InMemoryRaisedQuotas` is filled from settings
(``quota_raised``) and by administrative code in this process; a store table with an admin
API (grant, list, revoke, each audited) is the planned replacement and needs only the
``lookup`` method.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from fleetward.abuse.quotas import MAX_CAPACITY

_MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class RaisedQuota:
    tenant: str
    limit_name: str
    capacity: int
    owner: str  # who approved it and answers for it
    reason: str
    expires_at: datetime

    def __post_init__(self) -> None:
        if type(self.capacity) is not int or not 1 <= self.capacity <= MAX_CAPACITY:
            raise ValueError(f"a raised capacity must be an integer in 1..{MAX_CAPACITY}")
        for name, text in (
            ("tenant", self.tenant),
            ("limit_name", self.limit_name),
            ("owner", self.owner),
            ("reason", self.reason),
        ):
            if not text.strip() or len(text) > _MAX_TEXT:
                raise ValueError(f"a raised quota needs a {name} of 1..{_MAX_TEXT} chars")
        if self.expires_at.tzinfo is None:
            raise ValueError("a raised quota's expiry must be an aware datetime")

    def valid_at(self, now: datetime) -> bool:
        return now < self.expires_at


class RaisedQuotas(Protocol):
    """Looks up the raise a tenant holds for a limit. Implementations are safe for concurrent
    use and never fail open: an expired raise is not returned."""

    def lookup(self, tenant: str, limit_name: str, now: datetime) -> RaisedQuota | None: ...


class InMemoryRaisedQuotas:
    """Raises held in this process (from settings, or granted by code). One raise per
    (tenant, limit); granting again replaces it."""

    def __init__(self, raised: Iterable[RaisedQuota] = ()) -> None:
        self._raised: dict[tuple[str, str], RaisedQuota] = {}
        for quota in raised:
            self.grant(quota)

    def grant(self, quota: RaisedQuota) -> None:
        self._raised[(quota.tenant, quota.limit_name)] = quota

    def revoke(self, tenant: str, limit_name: str) -> None:
        self._raised.pop((tenant, limit_name), None)

    def lookup(self, tenant: str, limit_name: str, now: datetime) -> RaisedQuota | None:
        quota = self._raised.get((tenant, limit_name))
        if quota is None or not quota.valid_at(now):
            return None
        return quota

    def all(self) -> list[RaisedQuota]:
        return list(self._raised.values())
