"""Quota refusals as problems, with ``Retry-After`` and the IETF RateLimit fields.

The RateLimit fields follow draft-ietf-httpapi-ratelimit-headers-11 (May 2026), both
Structured Field lists:

    RateLimit-Policy: "user-objects";q=600;w=60
    RateLimit: "user-objects";r=0;t=12

``q`` is the limit's capacity, ``w`` its window, ``r`` the whole units left and ``t`` the
seconds of the effective window. The unit is the default ("requests"), each targeted object
counting as one (the cost rule). No partition key (``pk``) is sent: it would have to carry
or hash user, tenant or vehicle ids, and the policy name already tells the caller which
limit it met. On a refusal ``t`` equals ``Retry-After``, so the two never disagree (the
draft asks that Retry-After not point before the end of the effective window). The 429 body
carries the draft's ``violated-policies`` member beside Fleetward's stable ``reason``.
"""

from __future__ import annotations

import math
from datetime import timedelta

from fleetward.abuse.quotas import QuotaVerdict
from fleetward.core.errors import InvalidInput, ServiceUnavailable, TooManyRequests


def whole_seconds(delta: timedelta) -> int:
    """Seconds for a header, rounded up, at least 1 (a 0 would invite an instant retry)."""
    return max(1, math.ceil(delta.total_seconds()))


def rate_limit_headers(verdict: QuotaVerdict) -> dict[str, str]:
    """``RateLimit-Policy`` and ``RateLimit`` for the limit a verdict reports; fit for a
    successful response too."""
    limit = verdict.limit
    window = whole_seconds(limit.window)
    effective = verdict.retry_after if not verdict.allowed else verdict.reset_after
    return {
        "RateLimit-Policy": f'"{limit.name}";q={limit.capacity};w={window}',
        "RateLimit": f'"{limit.name}";r={verdict.remaining};t={whole_seconds(effective)}',
    }


class QuotaExceeded(TooManyRequests):
    """A request would exceed a quota; nothing was consumed. ``reason`` is the limit name."""

    code = "quota-exceeded"
    title = "Quota exceeded"

    def __init__(self, verdict: QuotaVerdict) -> None:
        if verdict.allowed:
            raise ValueError("QuotaExceeded needs a denied verdict")
        limit = verdict.limit
        window = whole_seconds(limit.window)
        if verdict.retryable:
            detail = (
                f"the {limit.name} quota allows {limit.capacity} objects per {window} s;"
                f" retry after {whole_seconds(verdict.retry_after)} s"
            )
        else:
            detail = (
                f"this request targets more objects than the {limit.name} quota allows per"
                f" {window} s ({limit.capacity}); split it or ask for a raised quota"
            )
        headers = rate_limit_headers(verdict)
        headers["Retry-After"] = str(whole_seconds(verdict.retry_after))
        super().__init__(
            detail,
            reason=limit.name,
            extra={"violated-policies": [limit.name], "retryable": verdict.retryable},
            headers=headers,
        )
        self.verdict = verdict


class QuotaStoreDown(ServiceUnavailable):
    """The shared quota store is unreachable and this request may not degrade (commands,
    sensitive flows, or a route configured to fail closed): refused, nothing done."""

    code = "quota-store-down"
    title = "Quota store unavailable"

    def __init__(self, retry_after_s: int = 1) -> None:
        super().__init__(
            "quotas cannot be checked right now; retry the request",
            reason="quota-store-unavailable",
            headers={"Retry-After": str(max(1, retry_after_s))},
        )


class TooManyTargets(InvalidInput):
    """One request names more objects than any request may (a bound on work per request,
    checked before any quota is drawn)."""

    code = "too-many-targets"
    title = "Too many targets"

    def __init__(self, targets: int, most: int) -> None:
        super().__init__(
            f"a request may target at most {most} objects; this one targets {targets}",
            reason="too-many-targets",
            extra={"max-targets": most},
        )


class EnumerationStopped(TooManyRequests):
    """The actor walked too many distinct or consecutive vehicles (``abuse.enumeration``)
    and is stopped for a cool-down; ``reason`` says which signal, not the thresholds."""

    code = "enumeration-stopped"
    title = "Too many distinct objects"

    def __init__(self, retry_after: timedelta, signal: str | None) -> None:
        seconds = whole_seconds(retry_after)
        super().__init__(
            f"this caller touched too many distinct objects; retry after {seconds} s",
            reason=signal or "enumeration",
            headers={"Retry-After": str(seconds)},
        )
