"""The seam of a shared quota gate that leases tokens (with replicas: the device and fleet
buckets live in Redis, :mod:`fleetward.abuse.telemetry_leases`).

Its ``admit`` stays synchronous and never waits. A frame whose device or fleet has no usable
lease in this process is answered :data:`PENDING`; the pipeline then awaits
:meth:`Leasing.lease` and asks once more. The in-process gate never answers it.
"""

from __future__ import annotations

from typing import Final, Protocol, runtime_checkable

from fleetward.gateway.session import DeviceSession
from fleetward.telemetry.quotas import QuotaVerdict

LEASE_SCOPE: Final = "lease"
# Refused only if still pending after the wait: the device re-sends soon.
PENDING: Final = QuotaVerdict(False, LEASE_SCOPE, 100)


@runtime_checkable
class Leasing(Protocol):
    """A :class:`~fleetward.telemetry.quotas.QuotaGate` whose ``admit`` may answer
    :data:`PENDING`: ``lease`` then draws what it lacks (bounded by the store's timeout;
    never raises). Safe for concurrent use from one event loop. Owned by the pipeline, which
    closes it when it stops."""

    async def lease(self, session: DeviceSession, cost: int = 1) -> None: ...

    async def close(self) -> None: ...
