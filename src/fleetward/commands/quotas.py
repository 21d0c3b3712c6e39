"""Commands against the abuse quotas (``fleetward.abuse``): per actor and command type and per
vehicle, one unit per targeted vehicle, all or nothing (the request's user, client, tenant
and global charges are drawn for every request by ``api.quota_guard``). Commands never
degrade to a local limit: an unreachable shared store refuses them (fail closed)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime

from fleetward.abuse.errors import QuotaStoreDown, TooManyTargets
from fleetward.abuse.policy import Degrade, QuotaPlan
from fleetward.abuse.runtime import QuotaRuntime
from fleetward.commands.families import CommandSpec
from fleetward.commands.service import Grant, QuotaAnswer
from fleetward.core.clock import Clock
from fleetward.observability.logging import get_logger

logger = get_logger(__name__)


class AbuseCommandQuotas:
    """The :class:`~fleetward.commands.service.CommandQuotas` of the platform."""

    def __init__(self, runtime: QuotaRuntime, clock: Clock) -> None:
        self._runtime = runtime
        self._clock = clock

    async def charge(self, grant: Grant, spec: CommandSpec, vehicle_ids: list[str]) -> QuotaAnswer:
        # The request's user, client, tenant and global charges were drawn when it was
        # authenticated (api/quota_guard.py): only the command's own limits are left.
        return await self._consume(
            lambda now: self._runtime.policy.plan_command(
                spec.permission,
                tenant=grant.tenant,
                client=grant.client_id,
                now=now,
                user=grant.sub if grant.sub_type == "user" else None,
                vehicles=vehicle_ids,
            )
        )

    async def charge_vehicles(self, grant: Grant, vehicle_ids: list[str]) -> QuotaAnswer:
        """The per-vehicle limit alone, for jobs created after their request was charged
        (an approved bulk's): the cars pay when they are sent something."""
        return await self._consume(
            lambda now: self._runtime.policy.plan_vehicle_commands(
                tenant=grant.tenant, now=now, vehicles=vehicle_ids
            )
        )

    async def _consume(self, plan_of: Callable[[datetime], QuotaPlan]) -> QuotaAnswer:
        now = self._clock.now()
        try:
            plan = plan_of(now)
            verdict = await self._runtime.quotas.consume(
                plan.charges, plan.cost, now=now, degrade=Degrade.FAIL_CLOSED
            )
        except TooManyTargets:
            return QuotaAnswer(False, "too-many-targets")
        except QuotaStoreDown as down:
            return QuotaAnswer(False, "quota-store-unavailable", _seconds(down.headers))
        except Exception as exc:  # fail closed, never allow by accident
            logger.warning("commands.quota_error", error=type(exc).__name__)
            return QuotaAnswer(False, "quota-error", 1)
        if verdict.allowed:
            return QuotaAnswer(True, f"within {verdict.limit_name}")
        retry = max(1, math.ceil(verdict.retry_after.total_seconds()))
        return QuotaAnswer(False, verdict.limit_name, retry)


def _seconds(headers: dict[str, str]) -> int:
    value = headers.get("Retry-After", "1")
    return int(value) if value.isdigit() else 1
