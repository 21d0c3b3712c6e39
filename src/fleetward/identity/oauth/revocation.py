"""Revoking tokens at once: a user, a client, a tenant, a refresh-token family or one token.

Each revocation does three things in the caller's transaction:

1. writes a :class:`RevocationEpoch` row, so the revocation survives restarts
   (:func:`load_revocations` reads them back at start-up);
2. raises the epoch in the platform's revocation store, so every access token already issued
   to that subject stops validating on the very next request (the validator checks it on
   every call, cached or not); it is applied before the commit, which can only over-revoke;
3. ends what could still mint new tokens: refresh tokens are marked revoked, unexchanged
   authorization codes spent, approved-but-unpolled device authorizations denied, and for a
   user their login sessions ended.

The store may be the in-memory one (synchronous) or a shared one such as Redis (async); both
are driven through :class:`RevocationSink`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import InstrumentedAttribute

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.ids import new_id
from fleetward.identity.models import User
from fleetward.identity.oauth_models import (
    AuthorizationCode,
    DeviceAuthorization,
    DeviceAuthorizationStatus,
    RefreshToken,
    RevocationEpoch,
    RevocationKind,
)
from fleetward.identity.sessions import LoginSessions
from fleetward.services import ServiceContext

if TYPE_CHECKING:
    from fleetward.platform import Platform

_REASON_LENGTH = 64


class RevocationSink(Protocol):
    """A revocation store (``InMemoryRevocations``, ``RedisRevocations``): each method may
    return ``None`` or an awaitable."""

    def revoke_user(self, sub: str, at: datetime) -> Any: ...
    def revoke_client(self, client_id: str, at: datetime) -> Any: ...
    def revoke_tenant(self, tenant: str, at: datetime) -> Any: ...
    def revoke_family(self, fam: str, at: datetime) -> Any: ...
    def revoke_jti(self, jti: str, until: datetime) -> Any: ...


async def _settle(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


async def apply_epoch(
    sink: RevocationSink, kind: RevocationKind, subject: str, at: datetime, until: datetime | None
) -> None:
    if kind is RevocationKind.JTI:
        if until is None:
            raise ValueError("a jti revocation needs the token's expiry")
        await _settle(sink.revoke_jti(subject, until))
        return
    method = {
        RevocationKind.USER: sink.revoke_user,
        RevocationKind.CLIENT: sink.revoke_client,
        RevocationKind.TENANT: sink.revoke_tenant,
        RevocationKind.FAMILY: sink.revoke_family,
    }[kind]
    await _settle(method(subject, at))


# Passes of the refresh tokens' UPDATE at most (see RevocationService._end_grants).
_REFRESH_PASSES: Final = 5


@dataclass(frozen=True, slots=True)
class _Columns:
    """Which column of each grant table names the revoked subject (None: not affected)."""

    refresh: InstrumentedAttribute[str] | None
    code: InstrumentedAttribute[str] | None
    device: InstrumentedAttribute[str | None] | InstrumentedAttribute[str] | None


_COLUMNS: dict[RevocationKind, _Columns] = {
    RevocationKind.USER: _Columns(
        RefreshToken.user_id, AuthorizationCode.user_id, DeviceAuthorization.user_id
    ),
    RevocationKind.CLIENT: _Columns(
        RefreshToken.client_id, AuthorizationCode.client_id, DeviceAuthorization.client_id
    ),
    RevocationKind.TENANT: _Columns(
        RefreshToken.tenant_id, AuthorizationCode.tenant_id, DeviceAuthorization.tenant_id
    ),
    RevocationKind.FAMILY: _Columns(RefreshToken.family_id, None, None),
    RevocationKind.JTI: _Columns(None, None, None),
}


class RevocationService:
    def __init__(self, ctx: ServiceContext, sink: RevocationSink) -> None:
        self._ctx = ctx
        self._sink = sink

    async def revoke_user(self, user_id: str, *, reason: str, actor: Actor) -> None:
        await self._revoke(RevocationKind.USER, user_id, reason=reason, actor=actor)

    async def revoke_client(self, client_id: str, *, reason: str, actor: Actor) -> None:
        await self._revoke(RevocationKind.CLIENT, client_id, reason=reason, actor=actor)

    async def revoke_tenant(self, tenant_id: str, *, reason: str, actor: Actor) -> None:
        await self._revoke(RevocationKind.TENANT, tenant_id, reason=reason, actor=actor)

    async def revoke_family(self, family_id: str, *, reason: str, actor: Actor) -> None:
        await self._revoke(RevocationKind.FAMILY, family_id, reason=reason, actor=actor)

    async def revoke_access_token(
        self, jti: str, *, until: datetime, reason: str, actor: Actor
    ) -> None:
        await self._revoke(RevocationKind.JTI, jti, reason=reason, actor=actor, until=until)

    async def revoke(
        self,
        kind: RevocationKind,
        subject: str,
        *,
        reason: str,
        actor: Actor,
        until: datetime | None = None,
    ) -> None:
        await self._revoke(kind, subject, reason=reason, actor=actor, until=until)

    async def _revoke(
        self,
        kind: RevocationKind,
        subject: str,
        *,
        reason: str,
        actor: Actor,
        until: datetime | None = None,
    ) -> None:
        if not subject or len(subject) > 64:
            raise ValueError("revocation subjects are non-empty ids of at most 64 characters")
        reason = reason[:_REASON_LENGTH]
        session = self._ctx.session
        now = self._ctx.clock.now()
        session.add(
            RevocationEpoch(
                id=new_id("rve"),
                kind=kind,
                subject=subject,
                epoch=now,
                until=until,
                reason=reason,
                created_at=now,
            )
        )
        await apply_epoch(self._sink, kind, subject, now, until)
        await self._end_grants(kind, subject, reason, now)
        self._ctx.audit.record(
            session,
            EventName.OAUTH_TOKENS_REVOKED,
            actor=actor,
            target=Target(kind.value, subject, subject if kind is RevocationKind.TENANT else None),
            reason=reason,
        )
        await session.flush()

    async def _end_grants(
        self, kind: RevocationKind, subject: str, reason: str, now: datetime
    ) -> None:
        session = self._ctx.session
        columns = _COLUMNS[kind]
        if columns.refresh is not None:
            # On PostgreSQL (read committed) the UPDATE waits for a rotation in flight (it
            # holds the old token's row) and then cannot see the token that rotation
            # inserted: a second pass, begun after the first, sees and ends it. More passes
            # while each one still ends something (a rotation raced that pass too).
            ending = (
                update(RefreshToken)
                .where(columns.refresh == subject, RefreshToken.revoked_at.is_(None))
                .values(revoked_at=now, revoked_reason=reason)
            )
            for passes in range(1, _REFRESH_PASSES + 1):
                ended = await session.execute(ending)
                if passes >= 2 and ended.rowcount == 0:  # type: ignore[attr-defined]
                    break
        if columns.code is not None:
            await session.execute(
                update(AuthorizationCode)
                .where(columns.code == subject, AuthorizationCode.used_at.is_(None))
                .values(used_at=now)
            )
        if columns.device is not None:
            await session.execute(
                update(DeviceAuthorization)
                .where(
                    columns.device == subject,
                    DeviceAuthorization.status.in_(
                        [DeviceAuthorizationStatus.PENDING, DeviceAuthorizationStatus.APPROVED]
                    ),
                )
                .values(status=DeviceAuthorizationStatus.DENIED)
            )
        if kind is RevocationKind.USER:
            user = await session.get(User, subject)
            if user is not None:
                await LoginSessions(self._ctx).end_all_for(user)


async def load_revocations(platform: Platform) -> int:
    """Replay the durable revocations into the platform's revocation store (at start-up).

    Epochs older than the longest token lifetime (plus skew) can only match expired tokens,
    and jti entries past their ``until`` likewise; both are skipped. Returns how many were
    applied.
    """
    now = platform.clock.now()
    keyring = platform.identity.keyring
    horizon = now - keyring.max_token_lifetime - keyring.skew
    async with platform.unit_of_work() as uow:
        rows = list(await uow.session.scalars(select(RevocationEpoch)))
    applied = 0
    for row in rows:
        if row.kind is RevocationKind.JTI:
            # Kept past the token's expiry by the skew: verifiers accept a token that long.
            if row.until is None or row.until + keyring.skew <= now:
                continue
        elif row.epoch < horizon:
            continue
        await apply_epoch(
            platform.identity.revocations, row.kind, row.subject, row.epoch, row.until
        )
        applied += 1
    return applied
