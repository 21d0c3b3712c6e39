"""Reading a batch's relations from the relationship store: the principal first (refused
when unknown, disabled or not a member of the token's tenant), then the relations the
principal's tenant kind and roles make relevant (:class:`fleetward.authz.relations.loader.Loader`).
Nothing read here outlives the call: revocation takes effect on the next request."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from fleetward.authz.decision import (
    PrincipalKind,
    PrincipalRef,
    Reason,
    RequestContext,
    ResourceRef,
)
from fleetward.authz.relations.facts import PrincipalFacts, Relations, RelationsRefused
from fleetward.authz.relations.loader import Loader
from fleetward.core.windows import is_active
from fleetward.identity.models import Membership, Tenant, TenantKind, User
from fleetward.identity.oauth_models import Client, ClientType
from fleetward.store.reads import read_rows

# Built once, bound at execution (building a statement cost about as much as running it).
_PERSON: Final = (
    select(
        User.disabled_at,
        Tenant.kind,
        Tenant.disabled_at,
        Membership.role,
        Membership.valid_from,
        Membership.valid_until,
    )
    .select_from(User)
    .join(Tenant, Tenant.id == bindparam("tenant"))
    .outerjoin(Membership, (Membership.user_id == User.id) & (Membership.tenant_id == Tenant.id))
    .where(User.id == bindparam("user"))
)
_CLIENT: Final = (
    select(
        Client.client_type,
        Client.tenant_id,
        Client.disabled_at,
        Tenant.kind,
        Tenant.disabled_at,
    )
    .select_from(Client)
    .join(Tenant, Tenant.id == Client.tenant_id)
    .where(Client.id == bindparam("client"))
)


class SessionRelations:
    """Reads in the caller's transaction (so a request sees its own changes). Follows the
    session's rule: one call at a time."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def relations(
        self, principal: PrincipalRef, context: RequestContext, resources: Sequence[ResourceRef]
    ) -> Relations:
        return await load_relations(self._session, principal, context, resources)


class StoreRelations:
    """Reads in a short session of its own per call (for checks outside any request, such as
    a command's re-authorization at delivery). Safe for concurrent use."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def relations(
        self, principal: PrincipalRef, context: RequestContext, resources: Sequence[ResourceRef]
    ) -> Relations:
        async with self._sessions() as session:
            return await load_relations(session, principal, context, resources)


async def load_relations(
    session: AsyncSession,
    principal: PrincipalRef,
    context: RequestContext,
    resources: Sequence[ResourceRef],
) -> Relations:
    now = context.now
    facts = await _principal(session, principal, context.tenant_id, now)
    loader = Loader(session, facts, now, resources)
    await loader.load()
    return Relations(
        principal=loader.principal,
        vehicles=loader.vehicles,
        objects=loader.objects,
        notes=loader.notes,
    )


def _held_since(windows: list[tuple[datetime, datetime | None]], now: datetime) -> datetime:
    """When the unbroken run of ``windows`` (one role's memberships) holding ``now`` began:
    renewals without a gap included, so someone taken on again starts afresh."""
    since = now
    extended = True
    while extended:
        extended = False
        for start, end in windows:
            if start < since and (end is None or end >= since):
                since, extended = start, True
    return since


async def _principal(
    session: AsyncSession, ref: PrincipalRef, tenant_id: str, now: datetime
) -> PrincipalFacts:
    if ref.kind is PrincipalKind.USER:
        rows = await read_rows(session, _PERSON, {"user": ref.id, "tenant": tenant_id})
        if not rows:
            raise RelationsRefused(Reason.UNKNOWN_PRINCIPAL)
        user_disabled, kind, tenant_disabled = rows[0][0], rows[0][1], rows[0][2]
        if user_disabled is not None or tenant_disabled is not None:
            raise RelationsRefused(Reason.PRINCIPAL_DISABLED)
        roles = frozenset(
            row[3] for row in rows if row[3] is not None and is_active(row[4], row[5], now)
        )
        if not roles:
            # The token names a tenant this person does not belong to (now).
            raise RelationsRefused(Reason.TOKEN_TENANT_MISMATCH)
        held_since = tuple(
            (role, _held_since([(r[4], r[5]) for r in rows if r[3] == role], now))
            for role in sorted(roles)
        )
        return PrincipalFacts(ref, tenant_id, TenantKind(kind), roles=roles, held_since=held_since)

    expected = ClientType.PARTNER if ref.kind is PrincipalKind.PARTNER else ClientType.WORKLOAD
    found = await read_rows(session, _CLIENT, {"client": ref.id})
    row = found[0] if found else None
    # A client of another type (a mobile app, a dealer tool) never acts for itself here.
    if row is None or row[0] is not expected or row[1] is None:
        raise RelationsRefused(Reason.UNKNOWN_PRINCIPAL)
    if row[2] is not None or row[4] is not None:
        raise RelationsRefused(Reason.PRINCIPAL_DISABLED)
    return PrincipalFacts(ref, row[1], TenantKind(row[3]), client_type=row[0])


__all__ = ["SessionRelations", "StoreRelations", "load_relations"]
