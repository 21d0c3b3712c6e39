"""Failure counters in the ``login_throttles`` table, shared by every replica.

An attempt *reserves* before the secret is checked: the counters are raised first, in a
transaction the caller commits before verifying, and given back (``refund``) only when the
attempt succeeds. So N parallel guesses cost N, whichever replica answers them; checking
first and counting afterwards would let a burst of parallel guesses through the limit.

Every write is one atomic upsert (``INSERT .. ON CONFLICT DO UPDATE``), identical on SQLite
and PostgreSQL; on PostgreSQL the row lock it takes serialises concurrent writers of a key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, case, delete, literal, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.core.ids import new_id
from fleetward.identity.credential_models import LoginThrottle
from fleetward.identity.login.limits import (
    MAX_BLOCK,
    SPRAY_ACCOUNTS,
    WINDOW,
    Dimension,
    Factor,
    ThrottleKey,
    backoff,
)
from fleetward.services import ServiceContext
from fleetward.store.base import UtcDateTime


@dataclass(frozen=True, slots=True)
class Blocked:
    """The attempt is refused without checking anything; retry after ``retry_after`` s."""

    key: ThrottleKey
    retry_after: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """Counted attempts; ``blocks`` are the blocks this attempt started (key -> until)."""

    keys: tuple[ThrottleKey, ...]
    blocks: dict[str, datetime] = field(default_factory=dict)

    @property
    def started_lockout(self) -> tuple[ThrottleKey, ...]:
        return tuple(k for k in self.keys if k.key in self.blocks)


def _insert(session: AsyncSession) -> Any:
    # Both dialects spell the upsert the same way; the module differs.
    name = session.get_bind().dialect.name
    return (postgresql if name == "postgresql" else sqlite).insert(LoginThrottle)


def _at(when: datetime) -> ColumnElement[datetime]:
    return literal(when, UtcDateTime())


def _retry_after(until: datetime, now: datetime) -> int:
    return max(1, int((until - now).total_seconds() + 0.999))


class Throttle:
    def __init__(self, ctx: ServiceContext) -> None:
        self._ctx = ctx

    async def reserve(self, keys: tuple[ThrottleKey, ...]) -> Reservation | Blocked:
        """Count one attempt on every key, or refuse it if any key is blocked."""
        now = self._ctx.clock.now()
        # Look first, so a blocked network does not also burn the account's budget.
        rows = await self._ctx.session.execute(
            select(LoginThrottle.key, LoginThrottle.blocked_until).where(
                LoginThrottle.key.in_([k.key for k in keys])
            )
        )
        blocked = {key: until for key, until in rows if until is not None and until > now}
        for k in keys:
            if k.key in blocked:
                return Blocked(k, _retry_after(blocked[k.key], now))
        blocks: dict[str, datetime] = {}
        for k in keys:
            failures = await self._count(k.key, now, only_if_unblocked=True)
            if failures is None:  # blocked by a concurrent attempt since we looked
                until = await self._blocked_until(k.key) or now + timedelta(seconds=1)
                return Blocked(k, _retry_after(until, now))
            if failures >= k.limit:
                # Blocked now, before this attempt is even checked: parallel attempts wait.
                until = now + backoff(failures, k.limit)
                await self._block(k.key, until, now)
                blocks[k.key] = until
        return Reservation(keys, blocks)

    async def refund(self, reservation: Reservation, *, ends_streak: bool = True) -> None:
        """The attempt succeeded: it was not a failure. ``ends_streak``: the right secret
        for the account clears its counter; without it every key only gets this attempt
        back (where success proves nothing about the account, e.g. a device user code the
        caller may have started themselves, a clearing success would reset the budget of
        their guesses)."""
        session = self._ctx.session
        for k in reservation.keys:
            if ends_streak and k.dimension is Dimension.ACCOUNT:
                # The right secret for this account ends its streak.
                await session.execute(delete(LoginThrottle).where(LoginThrottle.key == k.key))
                continue
            values: dict[str, Any] = {
                "failures": case((LoginThrottle.failures > 0, LoginThrottle.failures - 1), else_=0)
            }
            if k.key in reservation.blocks:
                values["blocked_until"] = case(
                    (LoginThrottle.blocked_until == reservation.blocks[k.key], None),
                    else_=LoginThrottle.blocked_until,
                )
            await session.execute(
                update(LoginThrottle).where(LoginThrottle.key == k.key).values(**values)
            )

    async def record_spray(self, network: str, account: str) -> bool:
        """Count a password failure for (network, account); block a spraying network.

        Returns True when the network has just crossed the distinct-accounts threshold.
        """
        now = self._ctx.clock.now()
        pair = await self._count(f"password:ip-account:{network}:{account}", now)
        if pair != 1:
            return False  # the same account again: not a new account for this network
        distinct = await self._count(f"password:ip-accounts:{network}", now)
        if distinct is None or distinct < SPRAY_ACCOUNTS:
            return False
        await self._block(
            ThrottleKey(Factor.PASSWORD, Dimension.IP, network).key, now + MAX_BLOCK, now
        )
        return distinct == SPRAY_ACCOUNTS

    async def claim_once(self, key: str, period: timedelta) -> bool:
        """Take a slot that can be taken once per ``period`` (e.g. a recovery-code login)."""
        now = self._ctx.clock.now()
        statement = (
            _insert(self._ctx.session)
            .values(
                id=new_id("thr"),
                key=key,
                failures=1,
                window_started_at=now,
                blocked_until=now + period,
            )
            .on_conflict_do_update(
                index_elements=[LoginThrottle.key],
                set_={
                    "failures": LoginThrottle.failures + 1,
                    "window_started_at": _at(now),
                    "blocked_until": _at(now + period),
                },
                where=or_(
                    LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until <= now
                ),
            )
            .returning(LoginThrottle.id)
        )
        return (await self._ctx.session.execute(statement)).scalar_one_or_none() is not None

    async def blocked_until(self, key: str) -> datetime | None:
        until = await self._blocked_until(key)
        return until if until is not None and until > self._ctx.clock.now() else None

    async def prune(self) -> int:
        """Delete counters that can no longer matter (stale window, no block in force)."""
        now = self._ctx.clock.now()
        result = await self._ctx.session.execute(
            delete(LoginThrottle).where(
                LoginThrottle.window_started_at <= now - WINDOW,
                or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until <= now),
            )
        )
        return int(getattr(result, "rowcount", 0) or 0)

    async def _count(
        self, key: str, now: datetime, *, only_if_unblocked: bool = False
    ) -> int | None:
        """Add one failure (starting a new window when the old one is over); the new count."""
        expired = LoginThrottle.window_started_at <= now - WINDOW
        statement = (
            _insert(self._ctx.session)
            .values(
                id=new_id("thr"), key=key, failures=1, window_started_at=now, blocked_until=None
            )
            .on_conflict_do_update(
                index_elements=[LoginThrottle.key],
                set_={
                    "failures": case((expired, 1), else_=LoginThrottle.failures + 1),
                    "window_started_at": case(
                        (expired, _at(now)), else_=LoginThrottle.window_started_at
                    ),
                },
                where=(
                    or_(LoginThrottle.blocked_until.is_(None), LoginThrottle.blocked_until <= now)
                    if only_if_unblocked
                    else None
                ),
            )
            .returning(LoginThrottle.failures)
        )
        found = (await self._ctx.session.execute(statement)).scalar_one_or_none()
        return None if found is None else int(found)

    async def _block(self, key: str, until: datetime, now: datetime) -> None:
        # The streak's window restarts at each block, so the backoff level survives it.
        statement = (
            _insert(self._ctx.session)
            .values(
                id=new_id("thr"), key=key, failures=0, window_started_at=now, blocked_until=until
            )
            .on_conflict_do_update(
                index_elements=[LoginThrottle.key],
                set_={"blocked_until": _at(until), "window_started_at": _at(now)},
            )
        )
        await self._ctx.session.execute(statement)

    async def _blocked_until(self, key: str) -> datetime | None:
        return await self._ctx.session.scalar(
            select(LoginThrottle.blocked_until).where(LoginThrottle.key == key)
        )
