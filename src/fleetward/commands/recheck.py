"""A stored grant's question asked again later: at a bulk's approval, at a job's delivery.

The person and the token's facts (tenant, scopes, acr) are those stored with the request;
``now`` is the moment of asking. Step-up was the request's link and is not asked again
(``auth_time`` is now). Recorded like any decision, in the caller's transaction. An allow
carrying any obligation is a deny (a job applies none), as on the routes.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from fleetward.authz.audited import decide_audited
from fleetward.authz.decision import (
    APPLIES_NONE,
    AuthzRequest,
    Decision,
    PrincipalKind,
    PrincipalRef,
    RequestContext,
    ResourceRef,
    as_applied,
)
from fleetward.authz.pdp import CedarPdp
from fleetward.authz.permissions import Permission
from fleetward.services import ServiceContext


async def decide_again(
    ctx: ServiceContext,
    pdp: CedarPdp,
    *,
    user_id: str,
    permission: Permission,
    resource: ResourceRef,
    tenant_id: str,
    scopes: Iterable[str],
    acr: str,
    now: datetime,
    command: Permission | None = None,
) -> Decision:
    ask = AuthzRequest(
        PrincipalRef(PrincipalKind.USER, user_id),
        permission,
        resource,
        RequestContext(
            now=now,
            tenant_id=tenant_id,
            scopes=frozenset(scopes),
            acr=acr,
            auth_time=now,
            command=command,
        ),
    )
    (decision,) = await decide_audited(pdp, ctx.session, ctx.audit, [ask])
    # A job applies no obligation: an allow carrying one is a deny here too (fail closed).
    return as_applied(decision, APPLIES_NONE)


__all__ = ["decide_again"]
