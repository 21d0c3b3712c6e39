"""Enumeration: an actor walking vehicle ids or VINs, caught even at a low request rate.

Two signals per actor (a user, or a client acting as itself):

* **distinct objects** touched in a sliding window (vehicle ids in request paths, VINs typed
  into the ownership-transfer accept): a person has a handful of vehicles, so hundreds of
  distinct ones in a day is a walk whatever the pace. Counted by a :class:`DistinctCounter`
  (in-process, or Redis shared by every replica);
* **sequential patterns**: each id is read as a number in its family (a vehicle id's suffix
  in base 36 under its prefix; a VIN's serial, positions 12-17, under the rest of the VIN
  without its check digit). A run grows when the next object is a small step past the
  last one, in the run's direction (a walk from the top down is a walk too); random ids
  never make a run, so a handful of consecutive steps is a walk even at one request an
  hour.

Above the ``slow`` thresholds the actor is slowed: each request waits (a delay that grows
with the excess, bounded by ``max_delay``). At the ``stop`` thresholds the actor is stopped:
every request is refused (429) until ``cooldown`` has passed; then it may go on with the
objects it already touched, and is stopped again by its next new one while the window's
count is above the threshold (or by a new run). Each escalation is
reported once (the caller audits it: ``abuse:enumeration:suspected``, then
``abuse:enumeration:stopped``), never once per request.

Runs and levels live in this process: with several replicas, give the counter the Redis
store so the distinct count is shared, and the same store as ``stops`` so that a stop made on
one replica holds on all (:class:`SharedStops`); a run split across replicas by the load
balancer is seen in part on each (docs/operations.md).
Memory is bounded: at most ``max_actors`` actors (least recently seen dropped first), and a
distinct set stops growing at four times the stop threshold (an actor that far is stopped
again after every cool-down).
"""

from __future__ import annotations

import asyncio
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Final, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from fleetward.abuse.quotas import epoch_ms
from fleetward.abuse.store import QuotaUnavailable
from fleetward.observability.logging import get_logger

logger = get_logger(__name__)

DEFAULT_REDIS_PREFIX: Final = "fw:enum:"
_CAP_FACTOR: Final = 4
_SUFFIX = re.compile(r"[0-9a-z]{1,32}")
_VIN = re.compile(r"[0-9A-HJ-NPR-Z]{17}")
_HOLD = re.compile(rb"([0-9]{1,15}) ([0-9]{1,9})")


class Level(StrEnum):
    NORMAL = "normal"
    SLOWED = "slowed"
    STOPPED = "stopped"


class Signal(StrEnum):
    """Why an actor was slowed or stopped (the audit reason)."""

    DISTINCT = "distinct-objects"
    SEQUENCE = "sequential-ids"


@dataclass(frozen=True, slots=True)
class EnumerationConfig:
    window: timedelta = timedelta(days=1)
    slow_distinct: int = 200
    stop_distinct: int = 500
    slow_run: int = 4
    stop_run: int = 8
    # Largest gap between two objects that still continues a run (walkers skip gaps).
    max_step: int = 16
    cooldown: timedelta = timedelta(hours=1)
    delay_step: timedelta = timedelta(milliseconds=250)
    max_delay: timedelta = timedelta(seconds=2)
    max_actors: int = 100_000

    def __post_init__(self) -> None:
        if not 1 <= self.slow_distinct <= self.stop_distinct:
            raise ValueError("need 1 <= slow_distinct <= stop_distinct")
        if not 2 <= self.slow_run <= self.stop_run:
            raise ValueError("need 2 <= slow_run <= stop_run")
        if self.max_step < 1 or self.max_actors < 1:
            raise ValueError("max_step and max_actors must be positive")
        if self.window < timedelta(seconds=1) or self.cooldown < timedelta(seconds=1):
            raise ValueError("window and cooldown must be at least a second")
        if not timedelta(0) <= self.delay_step <= self.max_delay <= timedelta(seconds=10):
            raise ValueError("need 0 <= delay_step <= max_delay <= 10 s")


@dataclass(frozen=True, slots=True)
class Touched:
    """One object a request names: ``key`` counts it as distinct, ``family`` and ``ordinal``
    place it in a sequence (``None``: not a sequence-able id)."""

    key: str
    family: str | None = None
    ordinal: int | None = None


def vehicle_touched(vehicle_id: str) -> Touched:
    """A vehicle id from a path. Its suffix (after the last ``_``) read in base 36, under its
    prefix and length: ``veh_..0041`` then ``veh_..0042`` is a step of one."""
    prefix, sep, suffix = vehicle_id.rpartition("_")
    if sep and _SUFFIX.fullmatch(suffix):
        return Touched(f"vehicle:{vehicle_id}", f"id:{prefix}:{len(suffix)}", int(suffix, 36))
    return Touched(f"vehicle:{vehicle_id}")


def vin_touched(vin: str) -> Touched:
    """A VIN as typed, read as the transfer accept compares it (whitespace around it and
    case do not matter: ``vehicles.transfers.normalise_vin``), so a variant is the same
    object and never a way out of a run. Its serial (positions 12-17) in base 36, under the
    VIN without its check digit (position 9, which changes with the serial) and without the
    serial."""
    vin = vin.strip().upper()
    if not _VIN.fullmatch(vin):
        return Touched(f"vin:{vin[:32]}")
    family = vin[:8] + vin[9:11]
    return Touched(f"vin:{vin}", f"vin:{family}", int(vin[11:], 36))


class DistinctCounter(Protocol):
    """Distinct members per actor over a sliding window. ``add`` records ``member`` for
    ``actor`` at ``now`` and returns about how many distinct members the last ``window``
    before ``now`` holds (it may stop counting above ``cap``). Safe for concurrent use on one
    event loop; raises :class:`~fleetward.abuse.store.QuotaUnavailable` when it cannot
    answer.

    The sliding window is approximated with two fixed windows: the members of the current
    window, plus those of the previous window not seen again in this one, weighted by the
    share of the previous window the sliding window still covers (all of it at the
    boundary, none of it a window later). Fixed windows alone reset at their boundary: an
    actor got a whole budget just before midnight (a day's window) and another just after.
    Members of the previous window are assumed spread evenly over it; a burst at its very
    end is under-weighted by at most the share of the window elapsed since the boundary."""

    async def add(self, actor: str, member: str, now: datetime, *, cap: int) -> int: ...


@dataclass(frozen=True, slots=True)
class Hold:
    """A stop as every replica reads it: until when, and the distinct count it was made at
    (after the cool-down, only a new object stops the actor again)."""

    until: datetime
    distinct: int


class SharedStops(Protocol):
    """Stops every replica honours. Both raise :class:`QuotaUnavailable` when they cannot
    answer."""

    async def hold(self, actor: str, hold: Hold, now: datetime) -> None: ...

    async def held(self, actor: str, now: datetime) -> Hold | None: ...


def _window_index(now: datetime, window: timedelta) -> int:
    return epoch_ms(now) // (window // timedelta(milliseconds=1))


def _sliding(current: int, previous_only: int, now: datetime, window: timedelta) -> int:
    """The sliding estimate: ``current`` plus the share of ``previous_only`` (members of the
    previous window not in the current one) the sliding window still covers, rounded up (a
    fraction of an object rounded down let one more through than the budget)."""
    window_ms = window // timedelta(milliseconds=1)
    remaining = window_ms - epoch_ms(now) % window_ms
    return current + -(-previous_only * remaining // window_ms)


@dataclass(slots=True)
class _Windows:
    index: int
    current: set[str] = field(default_factory=set)
    previous: frozenset[str] = frozenset()
    previous_only: int = 0  # members of ``previous`` not (yet) in ``current``


class InMemoryDistinct:
    """A :class:`DistinctCounter` in this process (one loop; not thread-safe)."""

    def __init__(self, window: timedelta, *, max_actors: int = 100_000) -> None:
        self._window = window
        self._max = max_actors
        self._sets: OrderedDict[str, _Windows] = OrderedDict()

    async def add(self, actor: str, member: str, now: datetime, *, cap: int) -> int:
        index = _window_index(now, self._window)
        found = self._sets.get(actor)
        if found is None or found.index != index:
            previous = (
                frozenset(found.current)
                if found is not None and found.index == index - 1
                else frozenset()
            )
            found = _Windows(index, previous=previous, previous_only=len(previous))
            self._sets[actor] = found
        self._sets.move_to_end(actor)
        members = found.current
        if len(members) < cap and member not in members:  # bounded: above the cap the
            members.add(member)  # answer no longer changes
            if member in found.previous:
                found.previous_only -= 1
        while len(self._sets) > self._max:
            self._sets.popitem(last=False)
        return min(cap, _sliding(len(members), found.previous_only, now, self._window))


class RedisDistinct:
    """A :class:`DistinctCounter` in Redis, shared by every replica: one set per actor and
    window (``SADD`` + ``SCARD`` in one MULTI, with the previous window's ``SCARD`` and its
    ``SINTERCARD`` with the current one, Redis 7 or later), expiring one window after its
    own. Any error or timeout raises :class:`QuotaUnavailable`."""

    def __init__(
        self,
        redis: Redis,
        window: timedelta,
        *,
        prefix: str = DEFAULT_REDIS_PREFIX,
        timeout: timedelta = timedelta(milliseconds=250),
    ) -> None:
        if not prefix:
            raise ValueError("a key prefix is required")
        self._redis = redis
        self._window = window
        self._prefix = prefix
        self._timeout = timeout.total_seconds()

    async def add(self, actor: str, member: str, now: datetime, *, cap: int) -> int:
        index = _window_index(now, self._window)
        key = f"{self._prefix}{index}|{actor}"
        previous = f"{self._prefix}{index - 1}|{actor}"
        try:
            async with asyncio.timeout(self._timeout):
                pipe = self._redis.pipeline(transaction=True)
                pipe.scard(key)
                pipe.sadd(key, member)
                # Kept one window past its own end: the previous window of the next one.
                pipe.pexpire(key, 2 * (self._window // timedelta(milliseconds=1)))
                pipe.scard(key)
                pipe.scard(previous)
                pipe.sintercard(2, [previous, key])
                size_before, _added, _expiry, size, before, both = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise QuotaUnavailable(f"distinct counter unavailable: {type(exc).__name__}") from exc
        counts = (size_before, size, before, both)
        if any(type(n) is not int for n in counts):
            raise QuotaUnavailable("distinct counter: malformed reply")
        size_before, size, before, both = (int(n) for n in counts)
        estimate = _sliding(size, max(0, before - both), now, self._window)
        return min(estimate, max(cap, size_before))

    # A stop is shared too (``SharedStops``): ``<prefix>stop|<actor>`` holds
    # ``"<until, epoch ms> <distinct>"`` and expires with the cool-down.
    def _stop_key(self, actor: str) -> str:
        return f"{self._prefix}stop|{actor}"

    async def hold(self, actor: str, hold: Hold, now: datetime) -> None:
        until_ms = -(-hold.until.timestamp() * 1000 // 1)  # rounded up: never shortened
        left = int(until_ms) - epoch_ms(now)
        if left <= 0:
            return
        value = f"{int(until_ms)} {hold.distinct}"
        try:
            async with asyncio.timeout(self._timeout):
                await self._redis.set(self._stop_key(actor), value, px=left)
        except (RedisError, OSError, TimeoutError) as exc:
            raise QuotaUnavailable(f"stop store unavailable: {type(exc).__name__}") from exc

    async def held(self, actor: str, now: datetime) -> Hold | None:
        try:
            async with asyncio.timeout(self._timeout):
                value = await self._redis.get(self._stop_key(actor))
        except (RedisError, OSError, TimeoutError) as exc:
            raise QuotaUnavailable(f"stop store unavailable: {type(exc).__name__}") from exc
        if value is None:
            return None
        match = _HOLD.fullmatch(value) if isinstance(value, bytes) else None
        if match is None:
            raise QuotaUnavailable("stop store: malformed value")
        until = datetime.fromtimestamp(int(match[1]) / 1000, UTC)
        return Hold(until, int(match[2])) if until > now else None


@dataclass(frozen=True, slots=True)
class EnumerationVerdict:
    """What to do with one request. ``escalated`` is set on the request that moved the actor
    to a higher level (audit it); ``signal`` says which signal is the strongest."""

    level: Level
    delay: timedelta = timedelta(0)
    retry_after: timedelta = timedelta(0)
    signal: Signal | None = None
    distinct: int = 0
    run: int = 0
    escalated: bool = False


_OK: Final = EnumerationVerdict(Level.NORMAL)


# Runs followed per actor at once. One was not enough: any other id of the family between
# two guesses (the walker's own car, a fixed decoy) broke the run, so a walk interleaved
# with a decoy never got past a run of 1. A repeated object extends nothing and opens
# nothing, so only new objects (each one counted as distinct) can push a run out.
_TAILS: Final = 8


@dataclass(slots=True)
class _Tail:
    """One run being followed: its family, its last ordinal, its length and its direction
    (1 up, -1 down; 0 for a run of one, which the next step in either direction extends)."""

    family: str
    last: int
    run: int
    direction: int = 0

    def continued_by(self, ordinal: int, max_step: int) -> bool:
        gap = ordinal - self.last
        if not 0 < abs(gap) <= max_step:
            return False
        return self.direction == 0 or (gap > 0) == (self.direction > 0)


@dataclass(slots=True)
class _Actor:
    tails: list[_Tail] = field(default_factory=list)  # oldest first
    run: int = 0  # the longest run followed
    seen_at: datetime | None = None
    level: Level = Level.NORMAL
    level_window: int = -1  # the window the level was reached in (levels reset with it)
    stopped_until: datetime | None = None
    stopped_at: int = 0  # the distinct count of the last stop (a re-stop needs a new object)
    distinct: int = 0


class EnumerationGuard:
    """Per-actor enumeration state. Safe for concurrent use on one event loop."""

    def __init__(
        self,
        config: EnumerationConfig,
        counter: DistinctCounter | None = None,
        *,
        stops: SharedStops | None = None,
        retry_shared_after: timedelta = timedelta(seconds=1),
    ) -> None:
        self.config = config
        # Stops made on other replicas (None: this process alone).
        self._stops = stops
        self._local = InMemoryDistinct(config.window, max_actors=config.max_actors)
        self._counter: DistinctCounter = counter if counter is not None else self._local
        # After the shared counter failed it is not asked again before this (the callers'
        # clock): every request during an outage would otherwise wait for its timeout.
        self._retry_shared_after = retry_shared_after
        self._shared_down_until: datetime | None = None
        self._actors: OrderedDict[str, _Actor] = OrderedDict()
        # Sets stop growing here; an actor at the cap is stopped after every cool-down.
        self._cap = _CAP_FACTOR * config.stop_distinct

    def stopped(self, actor: str, now: datetime) -> EnumerationVerdict | None:
        """The refusal for an actor in its cool-down, else ``None``."""
        state = self._actors.get(actor)
        if state is None or state.stopped_until is None or now >= state.stopped_until:
            return None
        return EnumerationVerdict(
            Level.STOPPED,
            retry_after=state.stopped_until - now,
            distinct=state.distinct,
            run=state.run,
        )

    async def observe(
        self, actor: str, touched: Sequence[Touched], now: datetime
    ) -> EnumerationVerdict:
        """Count ``touched`` for ``actor`` and say whether to go on, slow down or stop."""
        held = self.stopped(actor, now)
        if held is not None:
            return held
        if not touched:
            return _OK
        config = self.config
        state = self._state(actor)
        held = await self._held_elsewhere(actor, state, now)
        if held is not None:
            return held
        window = _window_index(now, config.window)
        if state.level_window != window:
            state.level, state.level_window, state.distinct = Level.NORMAL, window, 0
            state.stopped_at = 0
        if state.seen_at is not None and now - state.seen_at > config.window:
            state.tails.clear()
            state.run = 0
        state.seen_at = now
        for item in touched:
            state.distinct = max(state.distinct, await self._count(actor, item.key, now))
            self._step(state, item)
        # A concurrent request may have stopped the actor while this one awaited its count
        # (a shared counter answers in any order): this one is refused with it, not judged
        # on its own count (served if smaller, a second escalation if larger).
        held = self.stopped(actor, now)
        if held is not None:
            return held
        verdict = self._judge(state, now)
        if verdict.escalated and verdict.level is Level.STOPPED:
            await self._share_stop(actor, state, now)
        return verdict

    async def _held_elsewhere(
        self, actor: str, state: _Actor, now: datetime
    ) -> EnumerationVerdict | None:
        """A stop another replica made and this one has not (its refusal, already audited
        there), taken over here for the rest of its cool-down."""
        if self._stops is None or not self._shared_up(now):
            return None
        try:
            hold = await self._stops.held(actor, now)
        except QuotaUnavailable as exc:
            self._shared_failed(now, exc)
            return None
        if hold is None:
            return None
        state.level = Level.STOPPED
        state.level_window = _window_index(now, self.config.window)
        state.stopped_until = hold.until
        state.stopped_at = max(state.stopped_at, hold.distinct)
        state.distinct = max(state.distinct, hold.distinct)
        state.tails.clear()
        state.run = 0
        return self.stopped(actor, now)

    async def _share_stop(self, actor: str, state: _Actor, now: datetime) -> None:
        if self._stops is None or state.stopped_until is None or not self._shared_up(now):
            return
        try:
            await self._stops.hold(actor, Hold(state.stopped_until, state.stopped_at), now)
        except QuotaUnavailable as exc:  # the stop stands here; the others judge alone
            self._shared_failed(now, exc)

    def _shared_up(self, now: datetime) -> bool:
        return self._shared_down_until is None or now >= self._shared_down_until

    def _shared_failed(self, now: datetime, exc: QuotaUnavailable) -> None:
        if self._shared_down_until is None:
            logger.warning("enumeration.counter.unavailable", error=str(exc))
        self._shared_down_until = now + self._retry_shared_after

    async def _count(self, actor: str, member: str, now: datetime) -> int:
        cap = self._cap
        down_until = self._shared_down_until
        if self._counter is not self._local and (down_until is None or now >= down_until):
            try:
                count = await self._counter.add(actor, member, now, cap=cap)
            except QuotaUnavailable as exc:
                # The shared set is down: count in this process (a per-replica view) rather
                # than stop every request, and rather than stop counting. Said once an outage.
                if down_until is None:
                    logger.warning("enumeration.counter.unavailable", error=str(exc))
                self._shared_down_until = now + self._retry_shared_after
            else:
                if down_until is not None:
                    logger.info("enumeration.counter.recovered")
                    self._shared_down_until = None
                return count
        return await self._local.add(actor, member, now, cap=cap)

    def _step(self, state: _Actor, item: Touched) -> None:
        if item.family is None or item.ordinal is None:
            return
        family, ordinal = item.family, item.ordinal
        same = [t for t in state.tails if t.family == family]
        if any(t.last == ordinal for t in same):
            return  # the same object again neither extends nor breaks a run
        # Walkers go down as well as up: a step either way continues a run, in the
        # direction the run took (a zig-zag around a start is two runs, not one).
        steps = [t for t in same if t.continued_by(ordinal, self.config.max_step)]
        if steps:
            tail = max(steps, key=lambda t: t.run)
            state.tails.remove(tail)
            tail.direction = 1 if ordinal > tail.last else -1
            tail.last, tail.run = ordinal, tail.run + 1
        else:
            tail = _Tail(family, ordinal, 1)
        state.tails.append(tail)
        del state.tails[:-_TAILS]
        state.run = max(t.run for t in state.tails)

    def _judge(self, state: _Actor, now: datetime) -> EnumerationVerdict:
        config = self.config
        # After a cool-down the actor may go on with the objects it already touched; only a
        # new one (or reaching the cap, where new ones can no longer be told) stops it again.
        by_distinct = state.distinct >= config.stop_distinct and (
            state.distinct > state.stopped_at or state.distinct >= self._cap
        )
        by_run = state.run >= config.stop_run
        if by_distinct or by_run:
            # observe() answers a stopped actor before counting: reaching here is a new stop
            # (the first, or the first new object after a cool-down while still above).
            verdict = EnumerationVerdict(
                Level.STOPPED,
                retry_after=config.cooldown,
                signal=Signal.SEQUENCE if by_run else Signal.DISTINCT,
                distinct=state.distinct,
                run=state.run,
                escalated=True,
            )
            state.level = Level.STOPPED
            state.stopped_until = now + config.cooldown
            state.stopped_at = state.distinct
            state.tails.clear()
            state.run = 0  # a fresh run after the cool-down
            return verdict
        over_distinct = state.distinct - config.slow_distinct + 1
        over_run = state.run - config.slow_run + 1
        over = max(over_distinct, over_run)
        if over <= 0:
            return EnumerationVerdict(Level.NORMAL, distinct=state.distinct, run=state.run)
        escalated = state.level is Level.NORMAL
        if escalated:
            state.level = Level.SLOWED
        delay = min(config.max_delay, config.delay_step * over)
        return EnumerationVerdict(
            Level.SLOWED,
            delay=delay,
            signal=Signal.SEQUENCE if over_run >= over_distinct else Signal.DISTINCT,
            distinct=state.distinct,
            run=state.run,
            escalated=escalated,
        )

    def _state(self, actor: str) -> _Actor:
        state = self._actors.get(actor)
        if state is None:
            state = _Actor()
            self._actors[actor] = state
        self._actors.move_to_end(actor)
        while len(self._actors) > self.config.max_actors:
            self._actors.popitem(last=False)
        return state
