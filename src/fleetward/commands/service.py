"""Creating and cancelling command jobs: idempotency, the authorization chain, preconditions,
conflicts, quotas and deadlines. HTTP-free: routes hand in the verified token's claims and a
``decide`` function (the PDP, audited by the route).

The caller commits. A job that passes the chain leaves here ``queued`` (after ``requested``
and ``authorized``), one that fails it ``rejected`` with the failing link named; both are
stored. Only an accepted job binds the Idempotency-Key, so a retry after a rejection (say,
after the step-up the rejection asked for) is judged afresh.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from sqlalchemy import bindparam, select

from fleetward.authz.decision import Decision, Reason
from fleetward.authz.permissions import Permission
from fleetward.commands import jobs
from fleetward.commands.chain import PDP_LINKS, Chain, Link, link_of
from fleetward.commands.errors import IdempotencyKeyReused
from fleetward.commands.families import CommandSpec, ParameterValue
from fleetward.commands.models import CommandJob, JobState
from fleetward.commands.preconditions import Outcome, judge, latest_state
from fleetward.commands.states import IN_FLIGHT
from fleetward.core.digest import framed_sha256
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth_models import Client
from fleetward.identity.tokens import AccessTokenClaims
from fleetward.services import ServiceContext
from fleetward.store.sqlite_driver import INLINE_READ

Decide = Callable[[Permission, str], Awaitable[Decision]]


class Replayed(Exception):
    """A concurrent copy of this very request (same caller, same key) committed first: the
    caller rolls back and answers with that job (:func:`replay`)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


@dataclass(frozen=True, slots=True)
class Grant:
    """Who asks and under what token: as the verified token said it, or as a bulk request
    stored it for the jobs it creates later (after a second approval)."""

    sub: str
    sub_type: str
    client_id: str
    token_id: str | None
    # The refresh-token family the access token was minted from (None: no refresh token).
    token_family: str | None
    tenant: str
    scopes: frozenset[str]
    acr: str
    auth_time: datetime
    surface: Surface

    @classmethod
    def of(cls, claims: AccessTokenClaims, surface: Surface) -> Grant:
        return cls(
            sub=claims.sub,
            sub_type=claims.sub_type,
            client_id=claims.client_id,
            token_id=claims.jti,
            token_family=claims.fam,
            tenant=claims.tenant,
            scopes=claims.scopes,
            acr=claims.acr,
            auth_time=claims.authenticated_at,
            surface=surface,
        )


@dataclass(frozen=True, slots=True)
class QuotaAnswer:
    allowed: bool
    reason: str = "ok"
    retry_after_s: int = 0


class CommandQuotas(Protocol):
    """Charges a command against the quotas (per user, client, vehicle, tenant, command type,
    global), one unit per targeted vehicle, all or nothing. Must not raise: an unreachable
    quota store is a refusal (commands fail closed)."""

    async def charge(
        self, grant: Grant, spec: CommandSpec, vehicle_ids: list[str]
    ) -> QuotaAnswer: ...

    async def charge_vehicles(self, grant: Grant, vehicle_ids: list[str]) -> QuotaAnswer:
        """Only the per-vehicle command limit, one unit per vehicle, all or nothing (a bulk
        request's jobs created at its approval, see ``commands.bulk.charge_at_approval``)."""
        ...


@dataclass(frozen=True, slots=True)
class CommandConfig:
    # Older reported state is not trusted for a precondition (the vehicle checks instead).
    state_max_age: timedelta = timedelta(seconds=120)
    # How long after its deadline a delivered, unanswered job becomes outcome_unknown.
    answer_grace: timedelta = timedelta(seconds=5)
    # Bulk: the most vehicles one request may target, how many it may target before a second
    # fleet admin must approve it, and how long a request waits for that approval.
    max_bulk: int = 500
    approval_threshold: int = 25
    approval_window: timedelta = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class NewCommand:
    vehicle_id: str
    spec: CommandSpec
    parameters: Mapping[str, ParameterValue]
    idempotency_key: str | None
    request_hash: str
    ttl: timedelta | None = None
    bulk_id: str | None = None


# The version of the single-command request hash (a job stored before it no longer matches
# a retry of itself: the retry is a 409, never a replay of another request).
_REQUEST_HASH_FORMAT: Final = "fleetward:command-request:v2"


def request_hash(
    vehicle_id: str,
    spec: CommandSpec,
    parameters: Mapping[str, ParameterValue],
    *,
    ttl_seconds: int | None,
) -> str:
    """SHA-256 of every field of the request a retry must repeat: what "the same body" means
    for a command's Idempotency-Key. Each field is framed by its length (``framed_sha256``)
    after a format tag: the vehicle, the command, the canonical (validated) parameters, and
    the ttl with a presence tag. The ttl is a field of its own, never merged into the
    parameters, so a parameter named ``ttl`` can never stand for it (nor the ttl for it)."""
    canonical = json.dumps(dict(parameters), sort_keys=True, separators=(",", ":"))
    return framed_sha256(
        [
            _REQUEST_HASH_FORMAT,
            vehicle_id,
            spec.name,
            canonical,
            "ttl:none" if ttl_seconds is None else f"ttl:{ttl_seconds}",
        ]
    )


# Built once, bound per request (the statement's construction cost as much as its run). A
# row of what the check needs: almost every request finds nothing, and a replay loads its job.
_REPLAY: Final = select(CommandJob.id, CommandJob.request_hash, CommandJob.client_id).where(
    CommandJob.requested_by == bindparam("sub"), CommandJob.idempotency_key == bindparam("key")
)


async def replay(
    ctx: ServiceContext, claims: AccessTokenClaims, key: str, digest: str
) -> CommandJob | None:
    """The job this caller's key already created, if any; the key with another body: 409."""
    found = (
        await ctx.session.execute(
            _REPLAY, {"sub": claims.sub, "key": key}, execution_options=INLINE_READ
        )
    ).first()
    if found is None:
        return None
    if found.request_hash != digest or found.client_id != claims.client_id:
        raise IdempotencyKeyReused(
            "this Idempotency-Key was used for a different request", reason="different-body"
        )
    return await ctx.session.get(CommandJob, found.id, execution_options=INLINE_READ)


async def settle_overdue(ctx: ServiceContext, config: CommandConfig, vehicle_id: str) -> None:
    """Expire the vehicle's in-flight jobs past their deadline (delivered ones become
    outcome_unknown after the grace), so that a dead job never holds the vehicle's slot."""
    now = ctx.clock.now()
    overdue = await ctx.session.scalars(
        select(CommandJob).where(
            CommandJob.vehicle_id == vehicle_id,
            CommandJob.state.in_(list(IN_FLIGHT)),
            CommandJob.expires_at <= now,
        )
    )
    moved = [job for job in overdue if settle(ctx, config, job, now)]
    if moved:
        await ctx.session.flush()  # their security slots are free for the checks that follow


def settle(ctx: ServiceContext, config: CommandConfig, job: CommandJob, now: datetime) -> bool:
    """Move one overdue in-flight job to where its deadline leaves it; True when moved."""
    if job.state is JobState.DELIVERED:
        if now < job.expires_at + config.answer_grace:
            return False
        jobs.move(ctx.session, ctx.audit, job, JobState.OUTCOME_UNKNOWN, reason="no-answer", at=now)
        job.finished_at = now
        return True
    if job.expires_at > now:
        return False
    if job.state is JobState.REQUESTED:
        jobs.move(ctx.session, ctx.audit, job, JobState.REJECTED, reason="expired", at=now)
    elif job.state is JobState.AUTHORIZED:
        jobs.move(ctx.session, ctx.audit, job, JobState.CANCELLED, reason="expired", at=now)
    else:
        jobs.move(ctx.session, ctx.audit, job, JobState.EXPIRED, reason="deadline", at=now)
    job.finished_at = now
    return True


class CommandService:
    """One request's command creation, in the route's transaction."""

    def __init__(
        self,
        ctx: ServiceContext,
        *,
        quotas: CommandQuotas,
        config: CommandConfig,
        decide: Decide | None = None,
    ) -> None:
        """``decide``: the PDP for jobs judged here; a service that only creates prejudged
        jobs (a bulk request's) has none, and a job judged without one is refused."""
        self._ctx = ctx
        self._decide = decide
        self._quotas = quotas
        self._config = config

    async def create(
        self,
        grant: Grant,
        new: NewCommand,
        *,
        tenant_id: str,
        prejudged: Chain | None = None,
    ) -> tuple[CommandJob, Chain]:
        """Create the job and judge it link by link. ``prejudged``: a bulk request's links up
        to the region (decided for every vehicle when it was asked for, and its quota charged
        for all of them); the state and conflict links are still this job's. The caller
        commits."""
        ctx = self._ctx
        now = ctx.clock.now()
        spec = new.spec
        lifetime = min(spec.lifetime, new.ttl) if new.ttl is not None else spec.lifetime
        job = CommandJob(
            id=new_id("job"),
            vehicle_id=new.vehicle_id,
            tenant_id=tenant_id,
            command=spec.permission.value,
            parameters=dict(new.parameters),
            state=JobState.REQUESTED,
            requested_by=grant.sub,
            client_id=grant.client_id,
            created_at=now,
            expires_at=now + lifetime,
            updated_at=now,
            idempotency_key=None,
            request_hash=new.request_hash,
            surface=grant.surface.value,
            subject_type=grant.sub_type,
            token_id=grant.token_id,
            token_family=grant.token_family,
            token_tenant_id=grant.tenant,
            token_scopes=sorted(grant.scopes),
            acr=grant.acr,
            auth_time=grant.auth_time,
            bulk_id=new.bulk_id,
        )
        # Judged before anything is written, without autoflush: the job, its transitions and
        # the audit records then go to the store in one flush at commit (a few statements,
        # not one per object).
        with ctx.session.no_autoflush:
            chain = await self._judge(grant, new, now, prejudged)
        jobs.start(ctx.session, ctx.audit, job, at=now, actor=jobs.requester(job))
        job.chain = list(chain.links)
        actor = jobs.requester(job)
        if not chain.held:
            job.rejected_link = chain.failed.value if chain.failed else None
            jobs.move(
                ctx.session,
                ctx.audit,
                job,
                JobState.REJECTED,
                reason=chain.reason or "rejected",
                at=now,
                actor=actor,
                details={"link": job.rejected_link},
            )
            job.finished_at = now
            return job, chain
        job.idempotency_key = new.idempotency_key
        if spec.exclusive:
            job.exclusive_vehicle = new.vehicle_id
        jobs.move(ctx.session, ctx.audit, job, JobState.AUTHORIZED, reason="chain-held", at=now)
        jobs.move(ctx.session, ctx.audit, job, JobState.QUEUED, reason="awaiting-delivery", at=now)
        return job, chain

    async def _judge(
        self, grant: Grant, new: NewCommand, now: datetime, prejudged: Chain | None
    ) -> Chain:
        spec = new.spec
        if prejudged is not None:
            chain = Chain(list(prejudged.links))
        else:
            chain = Chain()
            await self._client_link(chain, grant, spec.permission)
            if not chain.held:
                return chain
            if grant.sub_type != "user":
                chain.fail(Link.USER, "not-a-person")
                return chain
            if self._decide is None:
                chain.fail(Link.PERMISSION, "no-decision")  # fail closed: nobody decided
                return chain
            decision = await self._decide(spec.permission, new.vehicle_id)
            self._pdp_links(chain, decision)
            if not chain.held:
                return chain
        needs = spec.needs_for(new.parameters)
        if needs is None:
            chain.ok(Link.VEHICLE_STATE, "no precondition")
        else:
            state = await latest_state(self._ctx.session, new.vehicle_id)
            checked = judge(needs, state, now, self._config.state_max_age)
            if checked.outcome is Outcome.NOT_MET:
                chain.fail(Link.VEHICLE_STATE, checked.detail)
                return chain
            chain.ok(
                Link.VEHICLE_STATE, f"{needs.value}: {checked.outcome.value} ({checked.detail})"
            )
        if spec.exclusive:
            await settle_overdue(self._ctx, self._config, new.vehicle_id)
            busy = await self._ctx.session.scalar(
                select(CommandJob).where(CommandJob.exclusive_vehicle == new.vehicle_id)
            )
            if busy is not None:
                if (
                    new.idempotency_key is not None
                    and busy.requested_by == grant.sub
                    and busy.idempotency_key == new.idempotency_key
                ):
                    # This request's own copy, committed by a concurrent twin meanwhile.
                    raise Replayed(busy.id)
                chain.fail(Link.CONFLICT, "security-command-in-flight")
                return chain
            chain.ok(Link.CONFLICT, "no security command in flight")
        if prejudged is not None:
            chain.ok(Link.QUOTA, "charged by the bulk request")
            return chain
        answer = await self._quotas.charge(grant, spec, [new.vehicle_id])
        if answer.allowed:
            chain.ok(Link.QUOTA, answer.reason)
        else:
            chain.fail(Link.QUOTA, answer.reason)
            chain.retry_after_s = answer.retry_after_s
        return chain

    async def _client_link(self, chain: Chain, grant: Grant, permission: Permission) -> None:
        await client_link(self._ctx, chain, grant, permission)

    @staticmethod
    def _pdp_links(chain: Chain, decision: Decision) -> None:
        pdp_links(chain, decision)


# What the client link reads of a registration (a row, not an ORM object to build).
_CLIENT: Final = select(Client.id, Client.disabled_at, Client.surfaces, Client.scopes).where(
    Client.id == bindparam("cid")
)


async def client_link(
    ctx: ServiceContext, chain: Chain, grant: Grant, permission: Permission
) -> None:
    """The approved-client link: registered, enabled, for this surface and this command."""
    client = (
        await ctx.session.execute(_CLIENT, {"cid": grant.client_id}, execution_options=INLINE_READ)
    ).first()
    if client is None:
        chain.fail(Link.CLIENT, "unregistered-client")
    elif client.disabled_at is not None:
        chain.fail(Link.CLIENT, "client-disabled")
    elif grant.surface.value not in client.surfaces:
        chain.fail(Link.CLIENT, "client-not-for-surface")
    elif permission.value not in client.scopes:
        chain.fail(Link.CLIENT, "client-not-approved-for-command")
    else:
        chain.ok(Link.CLIENT, client.id)


def pdp_links(chain: Chain, decision: Decision) -> None:
    """The links a PDP decision establishes, or the one it breaks."""
    if decision.allowed:
        for link in PDP_LINKS:
            chain.ok(link, decision.reason.value)
        return
    failed = link_of(decision.reason)
    if failed is Link.RELATIONSHIP and decision.reason is Reason.NO_RELATIONSHIP:
        # The caller sees the vehicle (the route checked), so a relationship exists; it
        # just does not carry this command (a driver without the family delegated).
        failed = Link.PERMISSION
    for link in PDP_LINKS:
        if link is failed:
            chain.fail(link, decision.reason.value)
            return
        chain.ok(link, "held")
