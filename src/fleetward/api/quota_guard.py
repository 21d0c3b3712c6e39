"""Quotas and enumeration on every authenticated API request (``fleetward.abuse``).

:func:`charge_request` runs once the caller is known (``api.auth.authenticate`` calls it),
before any object is authorized. It

1. refuses an actor stopped for enumeration, and feeds the enumeration guard with the
   vehicle id in the path (slowing the actor, bounded, or stopping it);
2. charges the request's cost (the number of objects it targets: 1 for an object route; the
   page size asked for on a list route, ``limit`` capped by ``max_page_size``; the number of
   ids a body names in its ``*_ids`` lists, e.g. a bulk command) against the user (when a
   person is signed in), the client, the tenant and the platform, all or nothing;
3. when the quota store is down, fails closed unless the route's catalog entry chose
   ``local_limit`` and the request is a plain read (GET or HEAD);
4. on a refusal raises the 429 problem (``Retry-After`` and RateLimit fields) after
   recording ``abuse:quota:exceeded`` in a transaction of its own (the request's is rolled
   back); on success leaves the RateLimit fields for :class:`RateLimitHeaders` to add to the
   response; audits the use of a raised quota.

Sensitive flows add their own semantic limit at their route with one call:
:func:`charge_flow`, :func:`charge_command_flow` (unlock attempts, diagnostic requests) and
:func:`watch_vin` (VINs typed at the ownership-transfer accept, for enumeration).

Audit events for repeating facts (a refusal, a raised quota used, the store down) are
folded: at most one per actor and limit per period (``abuse.notices``), with the count of
folded ones, so a flood of refused requests is not a flood of database writes.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import TYPE_CHECKING, Final

from fastapi import Request
from pydantic import TypeAdapter, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fleetward.abuse.enumeration import (
    EnumerationVerdict,
    Level,
    Touched,
    vehicle_touched,
    vin_touched,
)
from fleetward.abuse.errors import EnumerationStopped, QuotaExceeded, QuotaStoreDown
from fleetward.abuse.errors import rate_limit_headers as headers_of
from fleetward.abuse.policy import Degrade, Flow, QuotaPlan
from fleetward.abuse.quotas import QuotaVerdict
from fleetward.abuse.runtime import QuotaRuntime
from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CatalogEntry, entry_of
from fleetward.core.digest import framed_sha256
from fleetward.core.errors import JsonValue
from fleetward.platform import Platform

if TYPE_CHECKING:  # api.auth imports this module: the type only, no import cycle
    from fleetward.api.auth import Caller

_SCOPE_KEY: Final = "fleetward.rate_limit"
_READS: Final = frozenset({"GET", "HEAD"})
_MAX_ID: Final = 64
# Command families that are sensitive flows of their own (the rest: command limits only).
COMMAND_FLOWS: Final = {
    Permission.VEHICLE_UNLOCK: Flow.REMOTE_UNLOCK,
    Permission.VEHICLE_DIAGNOSTICS_RUN: Flow.DIAGNOSTIC_REQUEST,
}
_RAISED_NOTICE_EVERY: Final = timedelta(minutes=1)
_STORE_DOWN_NOTICE_EVERY: Final = timedelta(minutes=1)
_RETRY_WINDOW: Final = timedelta(days=1)
# How list routes read their ``limit`` query parameter (fleetward.api.objects.Limit).
_LIMIT: Final = TypeAdapter(int)


async def charge_request(request: Request, caller: Caller) -> None:
    """Charge one authenticated request; raises the 429/503/422 problem that refuses it."""
    runtime, platform = _wiring(request)
    now = platform.clock.now()
    vehicle = request.path_params.get("vehicle_id")
    touched = [vehicle_touched(vehicle[:_MAX_ID])] if isinstance(vehicle, str) else []
    await _watch(request, caller, runtime, touched, now)
    await _charge(request, caller, runtime, now, await _targets(request, platform))


async def charge_objects(request: Request, caller: Caller, objects: int) -> None:
    """Charge the objects a request turned out to target beyond the one
    :func:`charge_request` paid for it: a route whose targets are stored, not named in the
    request (a bulk command's vehicles, read back), pays each of them like a request naming
    them would, against the same user, client, tenant and global limits, all or nothing.
    Call it before the route decides or reads them, and outside a transaction that has
    written (a refusal is recorded in one of its own)."""
    if objects <= 1:
        return
    runtime, platform = _wiring(request)
    await _charge(request, caller, runtime, platform.clock.now(), objects - 1)


async def _charge(
    request: Request, caller: Caller, runtime: QuotaRuntime, now: datetime, objects: int
) -> None:
    """``objects`` against the caller's user, client, tenant and global limits, all or
    nothing; raises the problem that refuses it, else attaches the RateLimit headers."""
    claims = caller.claims
    plan = runtime.policy.plan(
        tenant=claims.tenant, client=claims.client_id, now=now, user=_user(caller), objects=objects
    )
    entry = entry_of(request.scope.get("endpoint"))
    verdict = await _enforce(request, caller, runtime, plan, now, _degrade(entry, request.method))
    _attach(request, verdict)


async def charge_flow(
    request: Request,
    caller: Caller,
    flow: Flow,
    *,
    objects: int = 1,
    retry_of: RetryOf | None = None,
) -> None:
    """Charge a sensitive flow's own limit (``objects`` for a per-object flow, else once);
    never degrades. Call it at the route, before the flow acts, so refused attempts count.

    With ``retry_of``, a retry of the same request (same actor, same key, same target and
    body, within a day) is not a new attempt and pays nothing here: the route answers it
    from its first outcome (replayed). The target and body are part of what is remembered:
    one key sent to other vehicles or with other bodies is a new attempt each time."""
    runtime, platform = _wiring(request)
    now = platform.clock.now()
    retry = None
    if retry_of is not None:
        retry = f"flow|{flow}|{_actor_key(caller)}|{retry_of.key}|{retry_of.digest}"
        if runtime.notices.seen(retry, now):
            return
    claims = caller.claims
    plan = runtime.policy.plan_flow(
        flow,
        tenant=claims.tenant,
        client=claims.client_id,
        now=now,
        user=_user(caller),
        objects=objects,
    )
    verdict = await _enforce(request, caller, runtime, plan, now, Degrade.FAIL_CLOSED)
    if retry is not None:
        # Only a charged attempt frees its retries: a refused one pays again when retried.
        runtime.notices.mark(retry, now, _RETRY_WINDOW)
    _attach(request, verdict)


async def charge_command_flow(
    request: Request,
    caller: Caller,
    command: Permission,
    retry_of: Callable[[], RetryOf],
    *,
    vehicles: int = 1,
) -> None:
    """The flow of a command family, if it is one (unlock attempts, diagnostic requests),
    one unit per targeted vehicle (a bulk unlock of N vehicles is N unlocks, or the bulk
    route would be the way around the flow). ``retry_of`` is asked only then: most commands
    have no flow of their own."""
    flow = COMMAND_FLOWS.get(command)
    if flow is not None:
        await charge_flow(request, caller, flow, objects=vehicles, retry_of=retry_of())


@dataclass(frozen=True, slots=True)
class RetryOf:
    """What makes two requests the same request for the flow limits: the Idempotency-Key
    and a digest of what the request targets and carries (path and body)."""

    key: str
    digest: str

    @classmethod
    def of(cls, key: str, *parts: str) -> RetryOf:
        return cls(key, framed_sha256(parts))


async def watch_vin(request: Request, caller: Caller, vin: str) -> None:
    """Count a VIN the caller typed for enumeration (distinct VINs, consecutive serials)."""
    runtime, platform = _wiring(request)
    await _watch(request, caller, runtime, [vin_touched(vin)], platform.clock.now())


class RateLimitHeaders:
    """ASGI middleware: adds the RateLimit fields :func:`charge_request` left for a request
    to its response (whatever the route returns: a model, a Response, a stream). A header
    the response already carries (a 429 problem's own) is kept as it is."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # A mutable holder: found by the request even if a layer copies the scope.
        holder: list[tuple[int, dict[str, str]]] = []
        scope[_SCOPE_KEY] = holder

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start" and holder:
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _value in headers}
                for name, value in holder[0][1].items():
                    raw = name.lower().encode("latin-1")
                    if raw not in present:
                        headers.append((raw, value.encode("latin-1")))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_limits)


# ----------------------------------------------------------------------------- internals


def _wiring(request: Request) -> tuple[QuotaRuntime, Platform]:
    """The app's quota runtime (``app.state.quota_runtime``, set by the composition root so
    that commands and requests share one set of buckets)."""
    platform: Platform = request.app.state.platform
    runtime: QuotaRuntime = request.app.state.quota_runtime
    return runtime, platform


def _user(caller: Caller) -> str | None:
    return caller.claims.sub if caller.claims.sub_type == "user" else None


def _actor_key(caller: Caller) -> str:
    claims = caller.claims
    return f"user:{claims.sub}" if claims.sub_type == "user" else f"client:{claims.client_id}"


def _audit_actor(caller: Caller) -> Actor:
    claims = caller.claims
    kind = ActorType.USER if claims.sub_type == "user" else ActorType.WORKLOAD
    return Actor(kind, claims.sub, claims.tenant)


def _degrade(entry: CatalogEntry | None, method: str) -> Degrade:
    if entry is None or method.upper() not in _READS:
        return Degrade.FAIL_CLOSED  # writes never degrade, whatever the entry says
    return entry.degrade


@lru_cache(maxsize=1024)
def _page_default(endpoint: object) -> int | None:
    """The default ``limit`` of a list endpoint; ``None`` for an endpoint without one."""
    try:
        parameter = inspect.signature(endpoint).parameters.get("limit")  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if parameter is None:
        return None
    default = parameter.default
    return default if type(default) is int and default > 0 else 0


async def _targets(request: Request, platform: Platform) -> int:
    """The number of objects the request targets (the cost rule's input)."""
    largest = platform.settings.max_page_size
    default = _page_default(request.scope.get("endpoint"))
    if default is not None:
        size = _asked_page(request.query_params.get("limit"))
        return min(size if size > 0 else default or largest, largest)
    if request.method.upper() in _READS or not _body_names_ids(request.scope.get("route")):
        return 1
    return max(1, await _ids_in_body(request))


def _asked_page(asked: str | None) -> int:
    """The ``limit`` as the route will read it (0: absent, or malformed and refused by
    validation after this). Read by the same integer validator as the route's parameter:
    a stricter reading here would charge the default page for ``100.0``, ``+100`` or
    ``1_00``, which the route serves as a page of 100."""
    if asked is None:
        return 0
    try:
        return _LIMIT.validate_python(asked)
    except ValidationError:
        return 0


def _body_names_ids(route: object) -> bool:
    """Whether the route's body model has ``*_ids`` fields: only such a body is read here
    (the route validates it again), never every write's. (A few attribute reads: routes
    compare by value, so they cannot key a cache.)"""
    field = getattr(route, "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    fields = getattr(model, "model_fields", None)
    return isinstance(fields, dict) and any(name.endswith("_ids") for name in fields)


async def _ids_in_body(request: Request) -> int:
    """How many ids a JSON body names in its top-level ``*_ids`` lists (0: none, or not a
    JSON object, or nested too deep to parse; validation answers a bad body afterwards).

    The Content-Type is not consulted: the framework reads ``application/JSON`` or
    ``application/x+json`` as JSON too, and a guard parsing the header differently would
    charge such a body 1 however many vehicles it names. A body that parses is counted; one
    the route then refuses for its media type has paid no more than it named."""
    try:
        body = json.loads(await request.body() or b"null")
    except (ValueError, RecursionError):
        # RecursionError: nesting deeper than the parser goes (the body cap allows a
        # megabyte of brackets); the framework only parses a JSON media type itself, so
        # such a body in text/plain reaches here first and must be refused, not a 500.
        return 0
    if not isinstance(body, dict):
        return 0
    return sum(
        len(value)
        for name, value in body.items()
        if isinstance(name, str) and name.endswith("_ids") and isinstance(value, list)
    )


async def _enforce(
    request: Request,
    caller: Caller,
    runtime: QuotaRuntime,
    plan: QuotaPlan,
    now: datetime,
    degrade: Degrade,
) -> QuotaVerdict:
    try:
        verdict = await runtime.quotas.enforce(plan, now=now, degrade=degrade)
    except QuotaExceeded as refused:
        limit = refused.verdict.limit_name
        every = max(refused.verdict.retry_after, timedelta(seconds=1))
        folded = runtime.notices.due(f"exceeded|{_actor_key(caller)}|{limit}", now, every)
        if folded is not None:
            await _record(
                request,
                caller,
                EventName.QUOTA_EXCEEDED,
                Target("quota", limit, caller.claims.tenant),
                decision=Decision.DENIED,
                reason=limit,
                details={
                    "cost": plan.cost,
                    "retry_after_s": int(refused.verdict.retry_after.total_seconds()),
                    "retryable": refused.verdict.retryable,
                    "route": _route_name(request),
                    "folded": folded,
                },
            )
        raise
    except QuotaStoreDown:
        await _store_down(request, caller, runtime, now, degrade, refused=True)
        raise
    if verdict.degraded:
        await _store_down(request, caller, runtime, now, degrade, refused=False)
    for raised in plan.raised:
        key = f"raised|{raised.tenant}|{raised.limit_name}|{_actor_key(caller)}"
        folded = runtime.notices.due(key, now, _RAISED_NOTICE_EVERY)
        if folded is None:
            continue
        await _record(
            request,
            caller,
            EventName.RAISED_QUOTA_USED,
            Target("raised_quota", raised.limit_name, raised.tenant),
            reason=raised.limit_name,
            details={
                "capacity": raised.capacity,
                "owner": raised.owner,
                "reason": raised.reason,
                "expires_at": raised.expires_at.isoformat(),
                "route": _route_name(request),
                "folded": folded,
            },
        )
    return verdict


async def _store_down(
    request: Request,
    caller: Caller,
    runtime: QuotaRuntime,
    now: datetime,
    degrade: Degrade,
    *,
    refused: bool,
) -> None:
    folded = runtime.notices.due("store-down", now, _STORE_DOWN_NOTICE_EVERY)
    if folded is None:
        return
    await _record(
        request,
        caller,
        EventName.QUOTA_STORE_DOWN,
        Target("quota_store", "primary"),
        decision=Decision.DENIED if refused else Decision.ALLOWED,
        reason="refused" if refused else "degraded-to-local-limit",
        details={"degrade": degrade.value, "route": _route_name(request), "folded": folded},
    )


async def _watch(
    request: Request,
    caller: Caller,
    runtime: QuotaRuntime,
    touched: Sequence[Touched],
    now: datetime,
) -> None:
    verdict = await runtime.enumeration.observe(_actor_key(caller), touched, now)
    if verdict.escalated:
        await _record_enumeration(request, caller, verdict, touched)
    if verdict.level is Level.STOPPED:
        raise EnumerationStopped(verdict.retry_after, verdict.signal)
    if verdict.level is Level.SLOWED and verdict.delay > timedelta(0):
        await runtime.sleep(verdict.delay.total_seconds())


async def _record_enumeration(
    request: Request, caller: Caller, verdict: EnumerationVerdict, touched: Sequence[Touched]
) -> None:
    stopped = verdict.level is Level.STOPPED
    await _record(
        request,
        caller,
        EventName.ENUMERATION_STOPPED if stopped else EventName.ENUMERATION_SUSPECTED,
        Target("actor", caller.claims.sub, caller.claims.tenant),
        decision=Decision.DENIED if stopped else Decision.ALLOWED,
        reason=verdict.signal.value if verdict.signal else "enumeration",
        details={
            "distinct": verdict.distinct,
            "run": verdict.run,
            "objects": [item.key for item in touched],
            "delay_ms": int(verdict.delay.total_seconds() * 1000),
            "retry_after_s": int(verdict.retry_after.total_seconds()),
            "route": _route_name(request),
        },
    )


async def _record(
    request: Request,
    caller: Caller,
    name: EventName,
    target: Target,
    *,
    decision: Decision = Decision.ALLOWED,
    reason: str,
    details: dict[str, JsonValue],
) -> None:
    """One event in a transaction of its own: a refusal's is rolled back with the request."""
    platform: Platform = request.app.state.platform
    async with platform.services() as (uow, ctx):
        ctx.audit.record(
            ctx.session,
            name,
            actor=_audit_actor(caller),
            target=target,
            decision=decision,
            reason=reason,
            details=details,
        )
        await uow.commit()


def _route_name(request: Request) -> str:
    route = request.scope.get("route")
    name = getattr(route, "name", None)
    return name if isinstance(name, str) else request.url.path[:128]


def _attach(request: Request, verdict: QuotaVerdict) -> None:
    """Keep the tightest verdict's RateLimit fields (fewest units left) for the response."""
    holder = request.scope.get(_SCOPE_KEY)
    if not isinstance(holder, list):
        return  # RateLimitHeaders is not installed: the limits hold, only the fields are lost
    if holder and holder[0][0] <= verdict.remaining:
        return
    holder[:] = [(verdict.remaining, headers_of(verdict))]


__all__ = [
    "COMMAND_FLOWS",
    "RateLimitHeaders",
    "charge_command_flow",
    "charge_flow",
    "charge_objects",
    "charge_request",
    "watch_vin",
]
