"""Which surface (token audience) and which tenant a token is for.

Surface: the ``resource`` parameter (RFC 8707) names exactly one surface as
``urn:fleetward:api:<surface>``; a client may only name surfaces in its list, and a client with
exactly one surface gets it by default. Tenant: a person's active membership whose tenant kind
fits the surface; a client bound to a tenant (partners, workloads) only ever gets that tenant.
No match, or more than one, is a refusal: the server never guesses which tenant was meant.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetward.core.surfaces import Surface
from fleetward.core.windows import is_active
from fleetward.identity.models import Membership, Tenant, User
from fleetward.identity.oauth.adapters import OAuthClient
from fleetward.identity.oauth.errors import InvalidTargetError
from fleetward.identity.oauth.policy import SURFACE_TENANT_KIND

_BY_AUDIENCE = {surface.audience: surface for surface in Surface}


def requested_surface(resources: Sequence[str], client: OAuthClient) -> Surface:
    if len(resources) > 1:
        # One audience per token: a multi-audience token could be replayed across surfaces.
        raise InvalidTargetError("Only one resource may be requested per token.")
    allowed = client.surfaces
    if not resources:
        if len(allowed) == 1:
            return allowed[0]
        raise InvalidTargetError("This client must name the resource it wants a token for.")
    surface = _BY_AUDIENCE.get(resources[0])
    if surface is None or surface not in allowed:
        raise InvalidTargetError("The resource is unknown or not available to this client.")
    return surface


def check_same_surface(resources: Sequence[str], surface: Surface) -> None:
    """At the token endpoint a ``resource`` may repeat the grant's surface, never change it."""
    if len(resources) > 1 or (resources and resources[0] != surface.audience):
        raise InvalidTargetError("The resource does not match the grant.")


def person_tenant(
    session: Session, user_id: str, surface: Surface, client: OAuthClient, now: datetime
) -> Tenant | None:
    """The one tenant a person acts in on ``surface`` through ``client``, or None."""
    user = session.get(User, user_id)
    if user is None or user.disabled_at is not None:
        return None
    rows = session.execute(
        select(Membership, Tenant)
        .join(Tenant, Tenant.id == Membership.tenant_id)
        .where(Membership.user_id == user_id)
    ).all()
    kind = SURFACE_TENANT_KIND[surface]
    candidates = {
        tenant.id: tenant
        for membership, tenant in rows
        if tenant.kind == kind
        and tenant.disabled_at is None
        and is_active(membership.valid_from, membership.valid_until, now)
    }
    bound = client.row.tenant_id
    if bound is not None:
        # Partner clients are bound to their tenant: a person's other memberships never leak
        # into a token of that client.
        candidates = {tid: t for tid, t in candidates.items() if tid == bound}
    elif surface is Surface.PARTNER:
        # The partner surface is only reachable through a partner client's own tenant.
        return None
    return next(iter(candidates.values())) if len(candidates) == 1 else None


def bound_tenant(session: Session, client: OAuthClient, surface: Surface) -> Tenant | None:
    """The tenant a machine token of ``client`` carries on ``surface``, or None."""
    if client.row.tenant_id is None:
        return None
    tenant = session.get(Tenant, client.row.tenant_id)
    if tenant is None or tenant.disabled_at is not None:
        return None
    return tenant if tenant.kind == SURFACE_TENANT_KIND[surface] else None
