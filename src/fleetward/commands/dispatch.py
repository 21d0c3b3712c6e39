"""Delivery: queued jobs go down the vehicle's live session as signed envelopes, signed
results come back, and executed jobs are confirmed from telemetry.

One :class:`Dispatcher` per gateway process (it implements the gateway's ``CommandPort``).

* A job is delivered when its vehicle has a commandable session HERE (an active device, never
  a quarantined one): at once when it is queued (``notify``), when the vehicle connects
  (``session_ready``), and by a sweep every ``sweep_interval`` (jobs queued by another
  replica, retries after a busy store). A job queued on another replica for a vehicle
  connected here arrives as a hint on the command bus (``commands/bus.py``) and is
  delivered at once too; the hint only says where to look: the job is read from the store
  and delivered only if it is still queued and is this vehicle's.
* Delivery is one transaction: claim the job (compare-and-set on its state and update time,
  so a concurrent cancel or another dispatcher cannot deliver it too), re-check the grant
  with the PDP (a delegation revoked while the job waited stops it here), check its deadline,
  take the vehicle's next envelope counter, sign the envelope, mark it ``delivered``; commit;
  only then send it. A send that fails leaves the job delivered: the vehicle may have got it,
  so without an answer it ends ``outcome_unknown``, never a guess. A send is bounded by the
  gateway's send timeout: a vehicle that stops reading has its session closed, so the send,
  the vehicle's delivery lock and its task end, and its other jobs stay ``queued`` (never
  sealed for a session that cannot take them) until it connects again or they expire.
* A result is verified with the session's device key, then bound to the envelope (job,
  vehicle, device, counter, digest) before anything is recorded; anything else is refused
  and audited.
* The sweep also settles overdue jobs and confirms executed ones whose effect shows in
  telemetry reported after the result.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm.exc import StaleDataError

from fleetward.authz.decision import (
    Decision,
    ResourceRef,
)
from fleetward.authz.permissions import Permission
from fleetward.commands import jobs
from fleetward.commands.bulk import requester_still_may
from fleetward.commands.bus import CommandBus, Hint, SingleReplica
from fleetward.commands.chain import Link
from fleetward.commands.confirm import confirm_effects
from fleetward.commands.envelope import (
    CommandEnvelope,
    envelope_digest,
    seal_command,
)
from fleetward.commands.families import BY_PERMISSION
from fleetward.commands.models import CommandBulk, CommandJob, JobState, VehicleCommandCounter
from fleetward.commands.recheck import decide_again
from fleetward.commands.results import append_link, record_result
from fleetward.commands.service import CommandConfig, settle
from fleetward.commands.signing import CommandSigner
from fleetward.devices.models import DeviceStatus
from fleetward.gateway.handshake import CloseCode, epoch_ms
from fleetward.gateway.registry import LiveSession, SessionRegistry
from fleetward.identity.oauth_models import RevocationEpoch, RevocationKind
from fleetward.observability.logging import get_logger
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.store.busy import is_store_busy
from fleetward.store.races import judged_again

logger = get_logger(__name__)


# Pauses before recording a result again when the store was busy (a vehicle's answer is
# never dropped for a lock wait that a moment later would have passed).
_RESULT_RETRIES: Final = (0.05, 0.2, 0.5, 1.0)


@dataclass(frozen=True, slots=True)
class Sealed:
    """An envelope sealed in a caller's transaction, to send once it committed."""

    job_id: str
    live: LiveSession
    frame: bytes


@dataclass(frozen=True, slots=True)
class DispatchConfig:
    sweep_interval: timedelta = timedelta(milliseconds=500)
    # Executed jobs are watched for their effect in telemetry this long.
    confirm_window: timedelta = timedelta(minutes=5)
    # Jobs looked at per sweep (oldest first).
    batch: int = 500


class Dispatcher:
    """Runs on the gateway's event loop. ``start``/``stop`` from the app's lifespan."""

    def __init__(
        self,
        platform: Platform,
        registry: SessionRegistry,
        signer: CommandSigner,
        *,
        config: CommandConfig | None = None,
        dispatch: DispatchConfig | None = None,
        bus: CommandBus | None = None,
    ) -> None:
        self._platform = platform
        self._bus: CommandBus = bus or SingleReplica()
        self._registry = registry
        self._signer = signer
        self._config = config or CommandConfig()
        self._dispatch = dispatch or DispatchConfig()
        # One delivery at a time per vehicle (kept per vehicle seen: a few hundred bytes each).
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        # Job id -> event set whenever the job changed in this process (followers wait on it).
        # Held weakly: an entry lives as long as a follower holds its event, so jobs nobody
        # follows (or no longer follows) leave nothing behind in a long-running process.
        self._changed: weakref.WeakValueDictionary[str, asyncio.Event] = (
            weakref.WeakValueDictionary()
        )

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        if self._sweeper is None:
            await self._bus.start(self._on_hint)
            self._sweeper = asyncio.create_task(self._sweep_forever(), name="command-sweeper")

    async def stop(self) -> None:
        tasks = [t for t in (self._sweeper, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sweeper = None
        self._tasks.clear()
        await self._bus.stop()

    # ------------------------------------------------------------------ followers

    def changed(self, job_id: str) -> asyncio.Event:
        """An event set the next time this process changes ``job_id`` (for followers)."""
        event = self._changed.get(job_id)
        if event is None:
            event = self._changed[job_id] = asyncio.Event()
        return event

    def followed(self, job_id: str) -> bool:
        """Whether this process holds a change event for ``job_id`` (someone follows it)."""
        return job_id in self._changed

    def touched(self, job_id: str) -> None:
        """``job_id`` changed in this process: wake its followers (each then waits on a new
        event). Followers on other replicas see it at their next poll."""
        event = self._changed.pop(job_id, None)
        if event is not None:
            event.set()

    def _on_hint(self, hint: Hint) -> None:
        """Another replica queued a job for a vehicle (parsed strictly by the bus; see
        ``commands/bus.py``): delivered now if the vehicle is connected here."""
        if self._registry.commandable(hint.vehicle_id) is not None:
            self._spawn(self.deliver_pending(hint.vehicle_id, hint.job_id))

    # ------------------------------------------------------------------ CommandPort

    def notify(self, vehicle_id: str, job_id: str) -> None:
        """Job ``job_id`` for ``vehicle_id`` was queued (committed): deliver it now if the
        vehicle is reachable here, else tell the other replicas (the one holding its
        session delivers it at once; without a bus, at its next sweep)."""
        if self._registry.commandable(vehicle_id) is not None:
            self._spawn(self.deliver_pending(vehicle_id, job_id))
        else:
            self._bus.queued(vehicle_id, job_id)

    def session_ready(self, live: LiveSession) -> None:
        self._spawn(self.deliver_pending(live.session.vehicle_id))

    async def on_result(self, live: LiveSession, frame: bytes) -> None:
        if live.refused_results >= REFUSED_RESULTS_PER_SESSION:
            return  # the session is being closed: nothing more of it is recorded
        changed = None
        # A quarantined device's answers are not trusted (its key may be a clone's): refused
        # and audited; a job it was given before ends outcome_unknown, never guessed.
        quarantined = self._registry.status_of(live.session.device_id) is DeviceStatus.QUARANTINED
        refusal = "device-quarantined" if quarantined else None
        for attempt, pause in enumerate(_RESULT_RETRIES):
            try:
                changed = await record_result(self._platform, live, frame, refusal=refusal)
                break
            except Exception as exc:  # never take the session down for a result
                if not is_store_busy(exc) or attempt == len(_RESULT_RETRIES) - 1:
                    # A verified answer that could not be recorded: the job will read
                    # outcome_unknown (the vehicle answers a redelivery byte for byte).
                    logger.error("commands.result_error", error=type(exc).__name__)
                    return
                await asyncio.sleep(pause)
        if changed is not None:
            self.touched(changed)
            return
        # A result that changed no job: refused (malformed, forged, not awaited, from a
        # quarantined device) or a duplicate. Results are not telemetry, so the pipeline's
        # limits never see them: a session that sends many ends here (each was an audited
        # write transaction).
        live.refused_results += 1
        if live.refused_results >= REFUSED_RESULTS_PER_SESSION:
            logger.warning("commands.results_refused_session_closed", refused=live.refused_results)
            await live.close(CloseCode.PROTOCOL)

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ delivery

    async def deliver_pending(self, vehicle_id: str, only: str | None = None) -> int:
        """Deliver the vehicle's queued jobs, oldest first (``only``: just that one); returns
        how many were sent."""
        lock = self._locks.setdefault(vehicle_id, asyncio.Lock())
        sent = 0
        try:
            async with lock:
                while True:
                    live = self._registry.commandable(vehicle_id)
                    if live is None:
                        break
                    job_id = only if only is not None else await self._next_queued(vehicle_id)
                    if job_id is None:
                        break
                    frame = await self._deliver(job_id, live)
                    self.touched(job_id)
                    if frame is not None and await self._send(live, frame, job_id):
                        sent += 1
                    if only is not None:
                        break
        except Exception as exc:  # a busy store: the sweep tries again
            logger.warning("commands.delivery_failed", error=type(exc).__name__)
        return sent

    async def _next_queued(self, vehicle_id: str) -> str | None:
        async with self._platform.sessions() as session:
            found: str | None = await session.scalar(
                select(CommandJob.id)
                .where(CommandJob.vehicle_id == vehicle_id, CommandJob.state == JobState.QUEUED)
                .order_by(CommandJob.created_at, CommandJob.id)
                .limit(1)
            )
            return found

    async def _send(self, live: LiveSession, frame: bytes, job_id: str) -> bool:
        """Send a sealed envelope. Not sent (the session closed, or the send timed out and
        closed it): the job stays delivered, since the frame may sit in the session's
        buffers and reach the car before its deadline, so it keeps the vehicle's security
        slot and, without an answer, ends ``outcome_unknown`` after deadline and grace."""
        try:
            sent = await live.send(frame)
        except Exception as exc:  # the job stays delivered: its outcome is now unknown
            logger.warning("commands.send_failed", job_id=job_id, error=type(exc).__name__)
            return False
        if not sent:
            closed = live.closed_with.phrase if live.closed_with else "unknown"
            logger.warning("commands.not_sent", job_id=job_id, closed=closed)
        return sent

    async def _deliver(self, job_id: str, live: LiveSession) -> bytes | None:
        """One job's delivery transaction; the signed frame, or None if it must not go."""
        platform = self._platform
        async with platform.services(inline_writes=True) as (uow, ctx):
            job = await ctx.session.get(CommandJob, job_id)
            if (
                job is None
                or job.state is not JobState.QUEUED
                or job.vehicle_id != live.session.vehicle_id
            ):
                # Not queued any more, or another vehicle's (a hint names both ids: a job is
                # only ever sealed for the session of its own vehicle).
                return None
            now = ctx.clock.now()
            claimed = await ctx.session.execute(
                update(CommandJob)
                .where(
                    CommandJob.id == job.id,
                    CommandJob.state == JobState.QUEUED,
                    CommandJob.updated_at == job.updated_at,
                )
                .values(updated_at=now)
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None  # cancelled or delivered by someone else meanwhile
            if epoch_ms(job.expires_at) <= epoch_ms(now):
                settle(ctx, self._config, job, now)
                await uow.commit()
                return None
            if not await self._recheck(ctx, job, now):
                await uow.commit()
                return None
            counter = await _next_counter(ctx, job.vehicle_id)
            if not self._still_commandable(live):
                return None  # rolled back: the job stays queued (see _still_commandable)
            # The deadline again, at the moment of sealing: the re-check may have taken up
            # to the PDP's budget, and an envelope must never be issued at or past its own
            # expiry (a car whose clock runs behind would act after the user's deadline).
            now = ctx.clock.now()
            if epoch_ms(job.expires_at) <= epoch_ms(now):
                settle(ctx, self._config, job, now)
                await uow.commit()
                return None
            frame = self._seal(ctx, job, live, now, counter)
            await uow.commit()
        return frame

    def _still_commandable(self, live: LiveSession) -> bool:
        """Is ``live`` still the session a command for its vehicle may go down? It was
        chosen before the delivery's awaits (the job's read, the revocations, the PDP, the
        counter); meanwhile its device may have been quarantined (a frame naming another
        vehicle, a clone finding) or the session closed. Asked again just before sealing:
        an envelope is never signed for a device no command may reach."""
        return self._registry.commandable(live.session.vehicle_id) is live

    async def deliver_in(
        self, ctx: ServiceContext, job: CommandJob, *, decided: Decision | None = None
    ) -> Sealed | None:
        """Deliver a job in the transaction that authorized it (the create route's) when its
        vehicle has a commandable session here: sealed and marked ``delivered`` now, sent by
        :meth:`send_sealed` once the caller committed. None: not delivered now (no session
        here, or its deadline passed while it was judged: the job stays ``queued`` for
        :meth:`notify` after the commit; or the grant ended meanwhile: the job is
        ``rejected`` at the delivery re-check).

        ``decided``: the command's decision, made in this transaction while it held the
        store's write lock from its start (``UnitOfWork.serialized``). No other transaction
        can have committed since, so the re-check would read the very same relations: that
        decision is the re-check. Without it, the counter's UPDATE comes first: on SQLite it
        takes the write lock, so the re-check that follows reads the relations as they are
        at the commit (a revocation commits before this transaction, and is seen, or after
        it, once the job was delivered); on PostgreSQL it leaves the same window as the
        dispatcher's own path."""
        live = self._registry.commandable(job.vehicle_id)
        if live is None or job.state is not JobState.QUEUED:
            return None
        now = ctx.clock.now()
        if epoch_ms(job.expires_at) <= epoch_ms(now):
            # Its deadline passed while it was judged (a short TTL, a slow step): never
            # sealed (an envelope issued at its own expiry is out of format). It stays queued
            # and the dispatcher's deadline check expires it, as for any late delivery.
            return None
        # Not flushed before the counter's UPDATE: the job is INSERTed once, as delivered.
        with ctx.session.no_autoflush:
            counter = await _next_counter(ctx, job.vehicle_id)
            if decided is not None and decided.allowed:
                append_link(
                    job, Link.DELIVERY_RECHECK, True, f"{decided.reason.value} (this transaction)"
                )
            elif not await self._recheck(ctx, job, now, token_checked=True):
                # Rejected before the request was answered: like any rejected attempt it
                # binds no Idempotency-Key (the retry is judged afresh, not replayed).
                job.idempotency_key = None
                return None
            if not self._still_commandable(live):
                return None  # stays queued, for notify() after the commit
            now = ctx.clock.now()
            if epoch_ms(job.expires_at) <= epoch_ms(now):
                return None  # its deadline passed meanwhile: as above, never sealed
            frame = self._seal(ctx, job, live, now, counter)
        return Sealed(job.id, live, frame)

    def send_sealed(self, sealed: Sealed) -> None:
        """Send a job sealed by :meth:`deliver_in`, once its transaction committed."""
        self.touched(sealed.job_id)
        self._spawn(self._send(sealed.live, sealed.frame, sealed.job_id))

    def _seal(
        self, ctx: ServiceContext, job: CommandJob, live: LiveSession, now: datetime, counter: int
    ) -> bytes:
        """Sign the envelope under the vehicle's next ``counter``, mark the job delivered."""
        envelope = CommandEnvelope(
            vehicle_id=job.vehicle_id,
            job_id=job.id,
            command=job.command,
            parameters=dict(job.parameters),
            issued_at_ms=epoch_ms(now),
            expires_at_ms=epoch_ms(job.expires_at),
            counter=counter,
            key_id=self._signer.key_id,
        )
        frame = seal_command(envelope, self._signer)
        job.counter = counter
        job.envelope_digest = envelope_digest(frame).hex()
        job.delivered_at = now
        job.delivered_device_id = live.session.device_id
        append_link(job, Link.COMMAND_SERVICE, True, self._signer.key_id)
        jobs.move(
            ctx.session,
            ctx.audit,
            job,
            JobState.DELIVERED,
            reason="sent",
            at=now,
            details={"counter": counter, "session_id": live.session.session_id},
        )
        return frame

    async def _recheck(
        self, ctx: ServiceContext, job: CommandJob, now: datetime, *, token_checked: bool = False
    ) -> bool:
        """Does the grant still hold? The same question as at creation, asked now, with the
        token's scopes and tenant, and the token not revoked since (``token_checked``: the
        creating request's own transaction, whose token was just validated). A bulk's job
        asks the bulk's question too (:func:`_bulk_still_allowed`). Step-up was the
        request's link: it is not asked again."""
        allowed, reason = False, "unknown-command"
        if not token_checked and await _token_revoked(ctx, job):
            reason = "token-revoked"
        elif job.command in BY_PERMISSION:
            decision = await decide_again(
                ctx,
                self._platform.pdp,
                user_id=job.requested_by,
                permission=Permission(job.command),
                resource=ResourceRef.vehicle(job.vehicle_id),
                tenant_id=job.token_tenant_id or "",
                scopes=job.token_scopes or (),
                acr=job.acr or "",
                now=now,
            )
            allowed, reason = decision.allowed, decision.reason.value
            if allowed and job.bulk_id is not None:
                allowed, reason = await self._bulk_still_allowed(ctx, job.bulk_id, now)
        if allowed:
            append_link(job, Link.DELIVERY_RECHECK, True, reason)
            return True
        append_link(job, Link.DELIVERY_RECHECK, False, reason)
        job.rejected_link = Link.DELIVERY_RECHECK.value
        jobs.move(
            ctx.session,
            ctx.audit,
            job,
            JobState.REJECTED,
            reason="grant-ended-before-delivery",
            at=now,
            details={"link": Link.DELIVERY_RECHECK.value, "pdp_reason": reason},
        )
        job.finished_at = now
        return False

    async def _bulk_still_allowed(
        self, ctx: ServiceContext, bulk_id: str, now: datetime
    ) -> tuple[bool, str]:
        """May the requester still send the bulk this job belongs to (``fleet:bulk_command``
        for its command, on the fleet or its group), as the approval asks? Each car's own
        command may still be theirs where the bulk is not: an admin demoted to an operator
        of the cars' group may immobilise each of them, never all of them in one request
        (no-bulk-immobilize). No bulk row: refused (fail closed)."""
        bulk = await ctx.session.get(CommandBulk, bulk_id)
        if bulk is None:
            return False, "unknown-bulk"
        decision = await requester_still_may(ctx, self._platform.pdp, bulk, now)
        return decision.allowed, decision.reason.value

    # ------------------------------------------------------------------ results

    # ------------------------------------------------------------------ sweep

    async def _sweep_forever(self) -> None:
        interval = self._dispatch.sweep_interval.total_seconds()
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sweep()
            except Exception as exc:
                logger.warning("commands.sweep_failed", error=type(exc).__name__)

    async def sweep(self) -> None:
        """One pass: deliver what is reachable here, settle overdue jobs, confirm effects.

        Every replica sweeps the same overdue and executed jobs: one that moved a job between
        this pass's read and its commit (settled it, confirmed it) makes the commit fail
        (``CommandJob``'s state is its version), and the pass runs once more from the top,
        judging each job as the other left it (``store.races``). Before, the whole pass was
        lost, its other jobs' settlements and confirmations with it."""
        queued, changed = await judged_again(self._sweep_once, StaleDataError)
        for job_id in changed:
            self.touched(job_id)
        for vehicle_id in queued:
            # Each car's deliveries run on their own: one whose socket does not drain (a TCU
            # that stopped reading) holds up only itself, never this sweep's other work.
            lock = self._locks.get(vehicle_id)
            if lock is None or not lock.locked():
                self._spawn(self.deliver_pending(vehicle_id))

    async def _sweep_once(self) -> tuple[set[str], list[str]]:
        """One transaction of a sweep: the vehicles here with a queued job, and the jobs it
        settled or confirmed (committed)."""
        reachable = self._registry.vehicles()
        async with self._platform.services() as (uow, ctx):
            now = ctx.clock.now()
            queued = await self._queued_among(ctx, reachable)
            overdue = list(
                await ctx.session.scalars(
                    select(CommandJob)
                    .where(
                        CommandJob.state.in_(
                            [JobState.REQUESTED, JobState.AUTHORIZED, JobState.QUEUED]
                        ),
                        CommandJob.expires_at <= now,
                    )
                    .limit(self._dispatch.batch)
                )
            )
            overdue += list(
                await ctx.session.scalars(
                    select(CommandJob)
                    .where(
                        CommandJob.state == JobState.DELIVERED,
                        CommandJob.expires_at <= now - self._config.answer_grace,
                    )
                    .limit(self._dispatch.batch)
                )
            )
            moved = [job.id for job in overdue if settle(ctx, self._config, job, now)]
            confirmed = await confirm_effects(
                ctx, now, window=self._dispatch.confirm_window, batch=self._dispatch.batch
            )
            if moved or confirmed:
                await uow.commit()
        return queued, [*moved, *confirmed]

    async def _queued_among(self, ctx: ServiceContext, reachable: set[str]) -> set[str]:
        """The vehicles connected here that have a queued job. Asked only about them (in
        chunks of ``batch``): jobs queued for cars that are not here, however many, never
        fill the answer and hide a connected car's job."""
        found: set[str] = set()
        ordered = sorted(reachable)
        size = self._dispatch.batch
        for start in range(0, len(ordered), size):
            found.update(
                await ctx.session.scalars(
                    select(CommandJob.vehicle_id)
                    .where(
                        CommandJob.state == JobState.QUEUED,
                        CommandJob.vehicle_id.in_(ordered[start : start + size]),
                    )
                    .distinct()
                )
            )
        return found


# A revocation of the job's token, person, client or tenant recorded since the job was
# created (its token was issued before it, so an epoch at or after the job's creation covers
# it). Refresh-token families are not on the job: a family revocation ends the tokens, and
# the job's own token only by its id, person or client.
_REVOKED_SINCE: Final = (
    select(RevocationEpoch.id)
    .where(
        or_(
            (RevocationEpoch.kind == RevocationKind.JTI)
            & (RevocationEpoch.subject == bindparam("jti")),
            (RevocationEpoch.epoch >= bindparam("created"))
            & or_(
                (RevocationEpoch.kind == RevocationKind.USER)
                & (RevocationEpoch.subject == bindparam("sub")),
                (RevocationEpoch.kind == RevocationKind.CLIENT)
                & (RevocationEpoch.subject == bindparam("client")),
                (RevocationEpoch.kind == RevocationKind.TENANT)
                & (RevocationEpoch.subject == bindparam("tenant")),
                (RevocationEpoch.kind == RevocationKind.FAMILY)
                & (RevocationEpoch.subject == bindparam("family")),
            ),
        )
    )
    .limit(1)
)


# When the bulk request a job belongs to was asked for (its token's use).
_BULK_ASKED: Final = select(CommandBulk.created_at).where(CommandBulk.id == bindparam("bid"))


async def _token_revoked(ctx: ServiceContext, job: CommandJob) -> bool:
    """Was the token that asked for ``job`` revoked while the job waited? A queued job asked
    for with a stolen token, then revoked ("sign out everywhere"), never reaches the car.

    A bulk request's job is created at its approval, up to an hour after the token asked for
    it: the revocations that count are those since the bulk request, not since the job."""
    asked = job.created_at
    if job.bulk_id is not None:
        found = await ctx.session.scalar(_BULK_ASKED, {"bid": job.bulk_id})
        asked = found or datetime.min.replace(tzinfo=UTC)  # no bulk row: every epoch counts
    found = await ctx.session.scalar(
        _REVOKED_SINCE,
        {
            "jti": job.token_id or "",
            "created": asked,
            "sub": job.requested_by,
            "client": job.client_id,
            "tenant": job.token_tenant_id or "",
            "family": job.token_family or "",
        },
    )
    return found is not None


# Results that change no job a session may send before it is closed (a car answers each
# delivered job once; a redelivery's duplicate answer is one of these).
REFUSED_RESULTS_PER_SESSION: Final = 16

# Built once, bound per delivery.
_BUMP_COUNTER: Final = (
    update(VehicleCommandCounter)
    .where(VehicleCommandCounter.vehicle_id == bindparam("vid"))
    .values(counter=VehicleCommandCounter.counter + 1)
    .returning(VehicleCommandCounter.counter)
    # Nothing of it is loaded in the session: no need to look (the ORM's "auto" evaluates
    # the condition against every loaded counter first).
    .execution_options(synchronize_session=False)
)


async def _next_counter(ctx: ServiceContext, vehicle_id: str) -> int:
    """The vehicle's next envelope counter, in the delivering transaction."""
    bumped = await ctx.session.execute(_BUMP_COUNTER, {"vid": vehicle_id})
    value = bumped.scalar_one_or_none()
    if value is not None:
        return int(value)
    ctx.session.add(VehicleCommandCounter(vehicle_id=vehicle_id, counter=1))
    await ctx.session.flush()
    return 1
