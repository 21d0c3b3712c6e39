"""The platform's shared services, created once by the composition root.

Nothing here is created at import time. Tests build a Platform with their own clock.
Building reads (or on first start creates) the data key and the signing keyring in the data
directory; it does not connect to the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fleetward.audit.recorder import AuditRecorder
from fleetward.authz.entities import StoreRelations
from fleetward.authz.pdp import CedarPdp, PdpConfig, PolicyText
from fleetward.authz.permissions import Permission
from fleetward.core.clock import Clock, SystemClock
from fleetward.identity.passwords import PasswordHasher
from fleetward.identity.runtime import IdentityRuntime
from fleetward.services import RelationshipLimits, ServiceContext
from fleetward.settings import Settings
from fleetward.store.engine import create_engine, session_factory
from fleetward.store.group import RowGroup
from fleetward.store.migrate import current_revision, head_revision
from fleetward.store.uow import UnitOfWork


@dataclass(frozen=True, slots=True)
class Platform:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    clock: Clock
    audit: AuditRecorder
    passwords: PasswordHasher
    limits: RelationshipLimits
    identity: IdentityRuntime
    # The policy decision point. Routes bind it to their own session (CedarPdp.bind) so that a
    # decision sees the request's transaction; unbound, it reads in short sessions of its own.
    pdp: CedarPdp
    # Where read-only requests' records are committed together (``store.group``).
    group: RowGroup | None = None

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        clock: Clock | None = None,
        engine: AsyncEngine | None = None,
        policy: PolicyText | None = None,
    ) -> Platform:
        """Raises :class:`fleetward.authz.pdp.PolicyInvalid` when the policy (the packaged one
        unless ``policy`` is given) does not validate: the platform refuses to start."""
        the_clock = clock or SystemClock()
        the_engine = engine or create_engine(settings.resolved_database_url)
        sessions = session_factory(the_engine)
        # Compiled before anything else is built: an invalid policy stops start-up here.
        pdp = CedarPdp(StoreRelations(sessions), policy=policy, config=_pdp_config(settings))
        return cls(
            settings=settings,
            engine=the_engine,
            sessions=sessions,
            clock=the_clock,
            audit=AuditRecorder(the_clock),
            passwords=PasswordHasher(
                memory_kib=settings.password_hash_memory_kib,
                time_cost=settings.password_hash_time_cost,
            ),
            limits=RelationshipLimits(
                max_delegation=timedelta(days=settings.max_delegation_days),
                max_delegation_lead=timedelta(days=settings.max_delegation_lead_days),
                max_consent=timedelta(days=settings.max_consent_days),
            ),
            identity=IdentityRuntime.build(settings, the_clock),
            pdp=pdp,
            group=RowGroup(sessions),
        )

    def unit_of_work(self, *, inline_writes: bool = False, write_lock: bool = False) -> UnitOfWork:
        return UnitOfWork(
            self.sessions, inline_writes=inline_writes, write_lock=write_lock, group=self.group
        )

    @asynccontextmanager
    async def services(
        self, *, inline_writes: bool = False, write_lock: bool = False
    ) -> AsyncIterator[tuple[UnitOfWork, ServiceContext]]:
        """A unit of work and the context that domain services are built on
        (``inline_writes``, ``write_lock``: see :class:`UnitOfWork`)."""
        async with self.unit_of_work(inline_writes=inline_writes, write_lock=write_lock) as uow:
            yield uow, ServiceContext(uow.session, self.clock, self.audit, self.limits)

    async def store_ready(self) -> tuple[bool, str]:
        """Whether the store answers and its schema is at the head migration."""
        try:
            async with self.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
            revision = await current_revision(self.engine)
        except Exception as exc:  # any failure means "not ready", reported by type only
            return False, f"store unreachable ({type(exc).__name__})"
        if revision != head_revision():
            return False, "store schema is not migrated"
        return True, "ok"

    async def close(self) -> None:
        if self.group is not None:
            await self.group.close()
        await self.identity.close()
        await self.engine.dispose()


def _pdp_config(settings: Settings) -> PdpConfig:
    barred: dict[Permission, frozenset[str]] = {}
    if settings.remote_start_barred_regions:
        barred[Permission.VEHICLE_REMOTE_START] = frozenset(settings.remote_start_barred_regions)
    return PdpConfig(barred_regions=barred)
