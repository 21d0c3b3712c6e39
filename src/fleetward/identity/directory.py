"""Tenants, users and memberships: create, look up, grant and end roles."""

from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.ids import new_id
from fleetward.core.windows import OverlappingWindow, check_window, is_active, overlaps
from fleetward.identity.errors import (
    DuplicateName,
    InvalidName,
    RoleNotAllowed,
    UnknownTenant,
    UnknownUser,
)
from fleetward.identity.models import ROLES_BY_TENANT_KIND, Membership, Role, Tenant, TenantKind
from fleetward.identity.models import User as User
from fleetward.services import ServiceContext

# Slugs and usernames are ASCII only: no look-alike characters in names that appear in logs,
# audit records and tokens.
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,63}$")


def is_valid_name(value: object) -> bool:
    """Whether ``value`` could be a slug or username (the shape every stored one has)."""
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None


def _check_name(kind: str, value: str) -> str:
    if not is_valid_name(value):
        raise InvalidName(
            f"{kind} must be 2-64 characters of a-z, 0-9, '.', '_' or '-'", reason=kind
        )
    return value


class Directory:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def create_tenant(
        self, slug: str, name: str, kind: TenantKind, *, actor: Actor
    ) -> Tenant:
        _check_name("slug", slug)
        session = self._ctx.session
        if await session.scalar(select(Tenant.id).where(Tenant.slug == slug)) is not None:
            raise DuplicateName(f"a tenant named {slug!r} exists", reason="tenant")
        tenant = Tenant(
            id=new_id("ten"),
            slug=slug,
            name=name,
            kind=TenantKind(kind),
            created_at=self._ctx.clock.now(),
            disabled_at=None,
        )
        session.add(tenant)
        self._ctx.audit.record(
            session,
            EventName.TENANT_CREATED,
            actor=actor,
            target=Target("tenant", tenant.id, tenant.id),
            details={"kind": tenant.kind.value},
        )
        try:
            await session.flush()
        except IntegrityError:  # a concurrent create took the slug after the check above
            raise DuplicateName(f"a tenant named {slug!r} exists", reason="tenant") from None
        return tenant

    async def tenant(self, slug: str) -> Tenant:
        found = await self._ctx.session.scalar(select(Tenant).where(Tenant.slug == slug))
        if found is None:
            raise UnknownTenant("no such tenant", reason="slug")
        return found

    async def tenant_by_id(self, tenant_id: str) -> Tenant:
        found = await self._ctx.session.get(Tenant, tenant_id)
        if found is None:
            raise UnknownTenant("no such tenant", reason="id")
        return found

    async def create_user(
        self,
        username: str,
        display_name: str,
        home_tenant: Tenant,
        *,
        password_hash: str | None,
        actor: Actor,
    ) -> User:
        _check_name("username", username)
        session = self._ctx.session
        if await session.scalar(select(User.id).where(User.username == username)) is not None:
            raise DuplicateName("that username is taken", reason="username")
        user = User(
            id=new_id("usr"),
            username=username,
            display_name=display_name,
            home_tenant_id=home_tenant.id,
            password_hash=password_hash,
            created_at=self._ctx.clock.now(),
            disabled_at=None,
        )
        session.add(user)
        self._ctx.audit.record(
            session,
            EventName.USER_CREATED,
            actor=actor,
            target=Target("user", user.id, home_tenant.id),
        )
        try:
            await session.flush()
        except IntegrityError:  # a concurrent create took the username after the check above
            raise DuplicateName("that username is taken", reason="username") from None
        return user

    async def user(self, username: str) -> User:
        found = await self._ctx.session.scalar(select(User).where(User.username == username))
        if found is None:
            raise UnknownUser("no such user", reason="username")
        return found

    async def grant_membership(
        self,
        user: User,
        tenant: Tenant,
        role: Role,
        *,
        actor: Actor,
        valid_from: datetime | None = None,
        valid_until: datetime | None = None,
    ) -> Membership:
        now = self._ctx.clock.now()
        start = valid_from or now
        check_window(start, valid_until, now=now, open_end_allowed=True)
        if role not in ROLES_BY_TENANT_KIND[tenant.kind]:
            raise RoleNotAllowed(
                f"role {role.value} does not exist in a {tenant.kind.value} tenant",
                reason=f"{tenant.kind.value}:{role.value}",
            )
        session = self._ctx.session
        existing = await session.scalars(
            select(Membership).where(
                Membership.user_id == user.id,
                Membership.tenant_id == tenant.id,
                Membership.role == role,
            )
        )
        for other in existing:
            if overlaps(start, valid_until, other.valid_from, other.valid_until):
                raise OverlappingWindow(
                    "the user already holds this role in that period", reason="membership"
                )
        membership = Membership(
            id=new_id("mem"),
            user_id=user.id,
            tenant_id=tenant.id,
            role=role,
            valid_from=start,
            valid_until=valid_until,
            ended_reason=None,
        )
        session.add(membership)
        self._ctx.audit.record(
            session,
            EventName.MEMBERSHIP_GRANTED,
            actor=actor,
            target=Target("membership", membership.id, tenant.id),
            details={"user": user.id, "role": role.value},
        )
        await session.flush()
        return membership

    async def active_roles(
        self, user: User, tenant: Tenant, at: datetime | None = None
    ) -> set[Role]:
        when = at or self._ctx.clock.now()
        rows = await self._ctx.session.scalars(
            select(Membership).where(
                Membership.user_id == user.id, Membership.tenant_id == tenant.id
            )
        )
        return {m.role for m in rows if is_active(m.valid_from, m.valid_until, when)}
