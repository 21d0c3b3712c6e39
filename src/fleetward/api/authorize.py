"""One authorization helper for routes: ask the PDP, audit the answer, turn a deny into the
right problem.

* object routes: every denial is the same 404 as a missing object (not-yours and not-found
  answer the same; the body carries no reason);
* function routes (``object_route=False``): a denial is 403;
* ``step-up-required`` (reported by the PDP only when a permit would otherwise allow) is the
  RFC 9470 ``insufficient_user_authentication`` challenge (401).

Fail closed: any error while deciding or recording is a deny (``pdp-error``); relations the
store could not read in time are a 503 ``store-busy`` with Retry-After (nothing written).

Obligations are applied or refused: a route declares the obligations it applies
(``applies``, none by default), and an allow carrying any other is a deny
(``obligation-not-applied``), after the PDP's answer has been recorded as it was given. So a
policy that attaches an obligation to a permit never widens what a route that ignores it
returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from fastapi import Request

from fleetward.api.auth import Caller, StepUp, StepUpRequired, step_up_challenge
from fleetward.authz.audited import decide_audited
from fleetward.authz.decision import (
    APPLIES_NONE,
    AuthzRequest,
    Decision,
    Obligation,
    Reason,
    ResourceRef,
    as_applied,
    audit_decision,
)
from fleetward.authz.permissions import Permission
from fleetward.core.errors import Forbidden, NotFound
from fleetward.observability.logging import get_logger
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.store.busy import StoreBusy

logger = get_logger(__name__)

_STEP_UP: Final = StepUp()


class ObjectNotFound(NotFound):
    """Not found and not authorized, indistinguishable by construction."""

    code = "not-found"
    title = "Not found"


class NotPermitted(Forbidden):
    code = "forbidden"
    title = "Forbidden"


def not_found() -> ObjectNotFound:
    """The one body every object route answers for a missing or not-permitted object."""
    return ObjectNotFound("no such object")


def _refusal(decision: Decision, *, object_route: bool) -> Exception:
    if decision.reason is Reason.STEP_UP_REQUIRED:
        return StepUpRequired(
            "this operation needs a stronger or more recent sign-in",
            reason="step-up",
            headers=step_up_challenge(_STEP_UP),
        )
    if object_route:
        return not_found()
    return NotPermitted("this operation is not permitted to the caller")


def _platform(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def build_request(
    platform: Platform,
    caller: Caller,
    action: Permission,
    resource: ResourceRef,
    *,
    command: Permission | None = None,
    now: datetime | None = None,
) -> AuthzRequest:
    """``now``: the instant of a batch (one context for all its asks: one load of relations);
    the platform clock's now by default."""
    return AuthzRequest.from_claims(
        caller.claims,
        caller.surface,
        action,
        resource,
        now=now or platform.clock.now(),
        command=command,
    )


async def decide_each(
    request: Request,
    caller: Caller,
    asks: Sequence[tuple[Permission, ResourceRef]],
    *,
    ctx: ServiceContext,
    command: Permission | None = None,
    applies: frozenset[Obligation] = APPLIES_NONE,
) -> list[Decision]:
    """Decisions for (action, resource) pairs in one PDP batch (one load of relations), each
    recorded in ``ctx``'s transaction (the route commits it). ``command``: the command a
    ``fleet:bulk_command`` sends. A decision the PDP cannot make denies; one it could not
    make in time is a retryable 503 (``decide_audited``). An allow carrying an obligation
    not in ``applies`` is returned as a deny (:func:`as_applied`)."""
    platform = _platform(request)
    now = platform.clock.now()  # one instant: the asks share their context and relations
    built = [build_request(platform, caller, a, r, command=command, now=now) for a, r in asks]
    decisions = await decide_audited(platform.pdp, ctx.session, platform.audit, built)
    return [as_applied(d, applies) for d in decisions]


async def decide_many(
    request: Request,
    caller: Caller,
    action: Permission,
    resources: Sequence[ResourceRef],
    *,
    ctx: ServiceContext,
    command: Permission | None = None,
    applies: frozenset[Obligation] = APPLIES_NONE,
) -> list[Decision]:
    """One action on many resources (list filtering): :func:`decide_each`."""
    return await decide_each(
        request, caller, [(action, r) for r in resources], ctx=ctx, command=command, applies=applies
    )


async def authorize(
    request: Request,
    caller: Caller,
    action: Permission,
    resource: ResourceRef,
    *,
    object_route: bool = True,
    ctx: ServiceContext | None = None,
    applies: frozenset[Obligation] = APPLIES_NONE,
) -> Decision:
    """Decide, audit, and raise on deny. With ``ctx`` the relations are read in the route's
    transaction and the decision is recorded there: the route commits an allow; a denial's
    record outlives the refusal's rollback (written by the unit of work). ``applies``: the
    obligations the route applies (none by default); an allow carrying any other is refused
    like a deny (:func:`as_applied`). Returns the allowed decision, whose obligations the
    route then applies."""
    platform = _platform(request)
    ask = build_request(platform, caller, action, resource)
    if ctx is not None:
        # The one path that asks in the route's transaction (decide_audited): fails closed,
        # and a decision cut off by its deadline is a retryable 503 with nothing written,
        # never this route's 404. A decision's record is kept (store.pending): a refusal
        # rolls the route's transaction back, and its unit of work then writes this and the
        # request's earlier decisions in a transaction of their own.
        (decision,) = await decide_audited(platform.pdp, ctx.session, platform.audit, [ask])
    else:
        try:
            decision = await platform.pdp.decide(ask)
        except Exception as exc:  # fail closed
            logger.warning("authz.route_error", error=type(exc).__name__)
            decision = Decision.deny(Reason.PDP_ERROR, platform.pdp.policy_version)
        if decision.reason is Reason.PDP_TIMEOUT:
            raise StoreBusy()  # no answer about the object: retry, as decide_audited says
        async with platform.unit_of_work() as uow:
            audit_decision(platform.audit, uow.session, ask, decision)
            await uow.commit()
    decision = as_applied(decision, applies)
    if not decision.allowed:
        raise _refusal(decision, object_route=object_route)
    return decision
