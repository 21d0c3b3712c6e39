"""The evaluator: follows the audit log by ``seq`` and feeds every rule, one batch per step.

A step is one transaction: lock the cursor, read the next events (and any late ones found in
the seq ranges it moved past empty: detection/cursor.py, audit/gaps.py), let the rules
observe them, apply their findings to alerts, move the cursor. Alerts and cursor commit
together, so a crash or restart replays nothing that was applied and skips nothing that was
not.

Replicas take turns: the step's transaction locks the cursor row on PostgreSQL (``SELECT ...
FOR UPDATE``) and begins holding the store's write lock on SQLite (``BEGIN IMMEDIATE``: SQLite
has no row locks, and without it two processes on one store file both read the cursor, both
evaluated the batch and the second to write found the cursor moved, voiding its batch and
replaying its rules). The rules are warmed up to the cursor before that, outside the lock: a
replay reads up to ``warmup_events`` and must not hold every writer of the store.

Rules keep their windows in memory. Whenever the evaluator's memory may differ from the
cursor (at start, after a failed step), the rules are rebuilt and warmed by replaying the
events before the cursor, their findings discarded: windows then hold what they would have
held had the process never stopped. When another replica only moved the cursor ahead, the
rules just observe the events in between (replicas take turns cheaply).

On first start (no cursor row) evaluation begins after the newest event: history is for
investigation, not alerts (a freshly seeded store would otherwise alert on its own setup).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit import gaps
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import AuditRecorder
from fleetward.core.clock import Clock
from fleetward.detection import cursor, raising
from fleetward.detection.config import EvaluatorConfig
from fleetward.detection.finding import Finding, Rule
from fleetward.detection.observed import Observed
from fleetward.observability.logging import get_logger
from fleetward.store.uow import UnitOfWork

_log = get_logger("fleetward.detection")
_WARM_PAGE = 1_000

RuleFactory = Callable[[], Sequence[Rule]]


class Units(Protocol):
    """A unit of work, optionally holding the store's write lock (``Platform.unit_of_work``)."""

    def __call__(self, *, write_lock: bool = False) -> UnitOfWork: ...


def evaluate(rules: Sequence[Rule], events: Sequence[Observed]) -> list[Finding]:
    """What ``rules`` find in ``events`` (in order). Pure: the rules' memory is the only state."""
    found: list[Finding] = []
    for event in events:
        for rule in rules:
            if rule.accepts(event):
                found.extend(rule.observe(event))
    return found


class Evaluator:
    """One per process; ``step`` is called from one task at a time (not thread-safe). Several
    replicas may run one each: the cursor row lock makes their steps take turns."""

    def __init__(
        self,
        units: Units,
        clock: Clock,
        audit: AuditRecorder,
        rules: RuleFactory,
        config: EvaluatorConfig,
    ) -> None:
        self._units = units
        self._clock = clock
        self._audit = audit
        self._make_rules = rules
        self._config = config
        self._rules: Sequence[Rule] = ()
        # The cursor position the rules' memory corresponds to (its seq, and the ranges below
        # it still pending then, which the rules have not seen); None: rebuild before use.
        self._warm_at: int | None = None
        self._warm_pending: frozenset[tuple[int, int]] = frozenset()

    @property
    def rules(self) -> Sequence[Rule]:
        return self._rules

    def rebuild(self) -> None:
        """Make and warm the rules again before the next step (their configuration changed)."""
        self._warm_at = None

    async def step(self) -> int:
        """Evaluate one batch; the number of events evaluated (0: nothing new)."""
        try:
            await self._catch_up()
            async with self._units(write_lock=True) as uow:
                evaluated = await self._step(uow.session)
                await uow.commit()
                return evaluated
        except BaseException:
            self._warm_at = None  # the rules saw events whose findings were not committed
            raise

    async def run_until_idle(self) -> int:
        """Steps until a step finds nothing new (tests, `fleetward alerts` tooling)."""
        total = 0
        while (evaluated := await self.step()) > 0:
            total += evaluated
        return total

    async def _catch_up(self) -> None:
        """Rules warmed up to the cursor as it stands, before the step takes its lock (which
        then has at most what another replica did meanwhile to catch up on)."""
        async with self._units() as uow:
            position = await cursor.read(uow.session, lock=False)
            if position is not None and not self._warm_for(position):
                await self._warm(uow.session, position, self._warm_at)

    async def _step(self, session: AsyncSession) -> int:
        now = self._clock.now()
        position = await cursor.read(session, lock=True)
        if position is None:
            newest = await session.scalar(select(func.max(AuditRecord.seq)))
            created = await cursor.create(session, newest or 0, now)
            if created is not None:  # else another replica placed it: the next step reads it
                self._rules, self._warm_at = self._make_rules(), created.seq
                self._warm_pending = frozenset()
            return 0
        if not self._warm_for(position):
            await self._warm(session, position, self._warm_at)
        limit = self._config.batch_size
        snapshot = await gaps.oldest_running(session)  # before the ranges' records are read
        late = await _in_ranges(session, [(g.low, g.high) for g in position.pending], limit)
        pending = gaps.fill(position.pending, (r.seq for r in late))
        records: list[AuditRecord] = []
        if len(late) < limit:  # every record the ranges hold was read: some may go
            pending = gaps.settle(pending, snapshot, now=now, grace=self._config.gap_grace)
            records = list(
                await session.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.seq > position.seq)
                    .order_by(AuditRecord.seq)
                    .limit(limit - len(late))
                )
            )
            records = _within_bound(position.seq, records, room=cursor.PENDING_MAX - len(pending))
        pending.extend(gaps.opened(gaps.missing(position.seq, (r.seq for r in records)), now))
        new = cursor.Position(records[-1].seq if records else position.seq, tuple(pending))
        if not records and not late:
            if new.pending != position.pending:  # ranges bound or given up: nothing to evaluate
                await cursor.move(session, position, new, now)
                self._warm_pending = new.ranges
            return 0
        events = [Observed.of(r) for r in (*late, *records)]
        findings = evaluate(self._rules, events)
        await raising.apply(session, self._audit, findings, evidence_cap=self._config.evidence_cap)
        await cursor.move(session, position, new, now)
        await session.flush()
        self._warm_at, self._warm_pending = new.seq, new.ranges
        if findings:
            _log.info("detection findings", events=len(events), findings=len(findings))
        return len(events)

    def _warm_for(self, position: cursor.Position) -> bool:
        """Whether the rules have seen what the cursor says was evaluated: the same seq, and
        the same gaps still pending (another replica may have evaluated a late commit that
        filled one without moving the seq)."""
        return self._warm_at == position.seq and self._warm_pending == position.ranges

    async def _warm(
        self, session: AsyncSession, position: cursor.Position, warm_at: int | None
    ) -> None:
        """Rules that have seen the events up to the cursor (findings dropped): the current
        ones caught up when another evaluator only moved the cursor ahead of them or filled
        some of its gaps (replicas taking turns), else fresh ones replaying up to
        ``warmup_events``."""
        floor = max(0, position.seq - self._config.warmup_events)
        if warm_at is not None and floor <= warm_at <= position.seq:
            rules, after = self._rules, warm_at
            # Late commits evaluated since: in the ranges pending then (all below what the
            # rules saw), no longer pending now.
            was = sorted(self._warm_pending - position.ranges)
            late = await _in_ranges(session, was, limit=None)
            evaluate(
                rules, [Observed.of(r) for r in late if not gaps.covers(position.pending, r.seq)]
            )
        else:
            rules, after = self._make_rules(), floor
        while True:
            page = list(
                await session.scalars(
                    select(AuditRecord)
                    .where(AuditRecord.seq > after, AuditRecord.seq <= position.seq)
                    .order_by(AuditRecord.seq)
                    .limit(_WARM_PAGE)
                )
            )
            if not page:
                break
            after = page[-1].seq
            # Records still pending were never evaluated: they will be, once, when found.
            events = [Observed.of(r) for r in page if not gaps.covers(position.pending, r.seq)]
            evaluate(rules, events)
        self._rules, self._warm_at = rules, position.seq
        self._warm_pending = position.ranges


async def _in_ranges(
    session: AsyncSession, ranges: Sequence[tuple[int, int]], limit: int | None
) -> list[AuditRecord]:
    """Up to ``limit`` (None: all) records in ``ranges`` (sorted, disjoint), in seq order,
    asked for ``RANGES_PAGE`` ranges at a time."""
    found: list[AuditRecord] = []
    for start in range(0, len(ranges), gaps.RANGES_PAGE):
        query = select(AuditRecord).where(gaps.within(ranges[start : start + gaps.RANGES_PAGE]))
        if limit is not None:
            query = query.limit(limit - len(found))
        found.extend(await session.scalars(query.order_by(AuditRecord.seq)))
        if limit is not None and len(found) >= limit:
            break
    return found


def _within_bound(after: int, records: list[AuditRecord], room: int) -> list[AuditRecord]:
    """The first of ``records`` (seqs above ``after``, ascending) that open at most ``room``
    new ranges: the cursor never moves past a range it could not hold, it waits for some
    to be filled or given up (and says so)."""
    ranges = gaps.missing(after, (r.seq for r in records))
    if len(ranges) <= room:
        return records
    stop = ranges[max(room, 0)][0]  # the first range it cannot hold
    _log.warning(
        "detection waits: too many missing seq ranges pending",
        limit=cursor.PENDING_MAX,
        before_seq=stop,
    )
    return [r for r in records if r.seq < stop]
