"""The vehicle's side of command envelopes: verify, decide, act at most once, answer signed.

A reference for TCU teams next to ``docs/vehicle-protocol.md`` section 6, and what the
simulator runs. For each COMMAND frame received on the device session, in this order:

1. :func:`open_command`: size, framing, trusted key id, signature. A failure is answered with
   nothing: no field of an unauthenticated frame (not even its job id) can be trusted, and
   signing an answer about it would let anyone obtain device signatures on chosen text.
2. Vehicle: an envelope for another vehicle is not acted on and not answered. It can only
   reach this session through a platform or gateway fault; a signed refusal would be this
   device's statement about another vehicle's job, which the platform has no use for and a
   faulty gateway could try to pass off as that vehicle's answer. Its counter belongs to the
   other vehicle's sequence, so it does not touch this one's window.
3. An exact redelivery (the same bytes) of an envelope this vehicle already answered gets the
   first answer again, byte for byte, and nothing acts. A result lost on the way back (link
   loss) is thus recovered by redelivering the same frame, and the platform never hears two
   different stories about one envelope.
4. Counter: a counter above the highest seen, or within ``window`` below it and not seen yet
   (the IPsec anti-replay window), is consumed by this envelope *whatever the answer*; any
   other is refused (``replayed``, ``stale-counter``) without acting.
5. Job: another envelope for a job this vehicle already answered is refused (``replayed``):
   a job acts at most once even if the platform signed it twice.
6. Time on the device clock: ``not-yet-valid`` (issued more than ``max_clock_skew`` ahead),
   ``expired`` (at or past ``expires_at``). Refused, answered, and final, since the counter is
   spent: a refused envelope can never act later, so an answer the platform recorded stays true.
7. Act through the :class:`CommandReceiver` and answer with its verdict.

Refusals from step 4 on are answered with a signed ``rejected_by_vehicle`` result whose
reason is the refusal's. Nothing in this class raises for a hostile frame.
"""

from __future__ import annotations

import asyncio
import hmac
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from types import MappingProxyType
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ed25519

from fleetward.authz.permissions import Permission
from fleetward.commands.envelope import (
    CommandEnvelope,
    CommandResult,
    EnvelopeRefused,
    ResultVerdict,
    envelope_digest,
    open_command,
    seal_result,
)
from fleetward.gateway.device_client import DevicePrivateKey
from fleetward.gateway.handshake import epoch_ms
from fleetward.sim.commands import CommandReceiver, VehicleCommand

DEFAULT_WINDOW: Final = 32
DEFAULT_REMEMBERED_ANSWERS: Final = 64
# The handshake accepts a device clock within 2 minutes of the platform's.
DEFAULT_MAX_CLOCK_SKEW: Final = timedelta(seconds=120)
# Refusals of an envelope that consumed its counter for a job not seen before: remembered,
# so a redelivery of the same bytes gets the same answer.
_FINAL_REFUSALS: Final = frozenset({"not-yet-valid", "expired"})


class CounterWindow:
    """Anti-replay for per-vehicle counters: a sliding bitmap of the last ``size`` counters
    below the highest seen (RFC 4303 section 3.4.3). A TCU keeps ``highest`` and ``bitmap``
    in non-volatile storage: the platform's counters never restart."""

    __slots__ = ("_mask", "bitmap", "highest", "size")

    def __init__(self, size: int = DEFAULT_WINDOW, *, highest: int = 0, bitmap: int = 0) -> None:
        if size < 1:
            raise ValueError("a window holds at least one counter")
        self.size = size
        self._mask = (1 << size) - 1
        self.highest = highest  # 0: nothing seen (counters start at 1)
        self.bitmap = bitmap & self._mask  # bit i set: counter ``highest - i`` was seen

    def refusal(self, counter: int) -> str | None:
        """Why ``counter`` may not be used (``replayed``, ``stale-counter``), or None."""
        if counter > self.highest:
            return None
        offset = self.highest - counter
        if offset >= self.size:
            return "stale-counter"  # below the window: it cannot tell, so it refuses
        if self.bitmap >> offset & 1:
            return "replayed"
        return None

    def consume(self, counter: int) -> None:
        """Mark ``counter`` seen; call only after :meth:`refusal` returned None."""
        if counter > self.highest:
            shift = counter - self.highest
            self.bitmap = ((self.bitmap << shift) | 1) & self._mask if shift < self.size else 1
            self.highest = counter
        else:
            self.bitmap |= 1 << (self.highest - counter)


class GuardAction(StrEnum):
    ACTED = "acted"  # handed to the receiver; answered with its verdict
    REFUSED = "refused"  # not acted on; answered rejected_by_vehicle, or not answered at all
    RESENT = "resent"  # an exact redelivery: the first answer sent again, nothing acted


@dataclass(frozen=True, slots=True)
class GuardOutcome:
    action: GuardAction
    reason: str  # the receiver's reason when acted, else the refusal reason
    job_id: str | None = None  # set when the decision concerns one of this vehicle's jobs
    verdict: ResultVerdict | None = None  # what the answer says; None when nothing was sent


@dataclass(slots=True)
class GuardStats:
    """What the guard did, for tests and the simulator's tally."""

    acted: int = 0
    executed: int = 0  # acted, and the receiver answered executed
    resent: int = 0
    refused: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True, slots=True)
class _Answer:
    digest: bytes
    frame: bytes
    outcome: GuardOutcome


class CommandGuard:
    """One vehicle's envelope checks and its memory of counters and answers.

    Handles one frame at a time (an internal lock serialises concurrent calls), so a
    duplicate arriving while its first copy is acting waits and is then answered from memory.
    Not thread-safe: use it from one event loop.
    """

    def __init__(
        self,
        *,
        vehicle_id: str,
        device_id: str,
        device_key: DevicePrivateKey,
        trusted_keys: Mapping[str, ed25519.Ed25519PublicKey],
        clock: Callable[[], datetime],
        receiver: CommandReceiver,
        window: int = DEFAULT_WINDOW,
        max_clock_skew: timedelta = DEFAULT_MAX_CLOCK_SKEW,
        remembered_answers: int = DEFAULT_REMEMBERED_ANSWERS,
    ) -> None:
        if not trusted_keys:
            raise ValueError("a vehicle needs at least one trusted command key")
        if remembered_answers < window:
            # Every counter still inside the window must find its answer for a redelivery.
            raise ValueError("remember at least as many answers as the window holds")
        self._vehicle_id = vehicle_id
        self._device_id = device_id
        self._device_key = device_key
        self._keys = MappingProxyType(dict(trusted_keys))
        self._clock = clock
        self._receiver = receiver
        self._skew_ms = int(max_clock_skew.total_seconds() * 1000)
        self._window = CounterWindow(window)
        self._answers: OrderedDict[str, _Answer] = OrderedDict()  # job id -> its answer
        self._remembered = remembered_answers
        self._lock = asyncio.Lock()
        self.stats = GuardStats()

    @property
    def window(self) -> CounterWindow:
        return self._window

    async def handle(self, frame: bytes) -> tuple[bytes | None, GuardOutcome]:
        """The RESULT frame to send back (None: send nothing) and what was decided."""
        async with self._lock:
            return await self._handle(frame)

    async def _handle(self, frame: bytes) -> tuple[bytes | None, GuardOutcome]:
        try:
            envelope = open_command(frame, self._keys)
            if envelope.vehicle_id != self._vehicle_id:
                raise EnvelopeRefused("wrong-vehicle")
        except EnvelopeRefused as refused:
            self.stats.refused[refused.reason] += 1
            return None, GuardOutcome(GuardAction.REFUSED, refused.reason)

        digest = envelope_digest(frame)
        known = self._answers.get(envelope.job_id)
        if known is not None and hmac.compare_digest(known.digest, digest):
            self.stats.resent += 1
            resent = known.outcome
            return known.frame, GuardOutcome(
                GuardAction.RESENT, resent.reason, resent.job_id, resent.verdict
            )
        try:
            self._judge(envelope, first_for_job=known is None)
        except EnvelopeRefused as refused:
            # Only the envelope that consumed its counter for a new job is remembered: the
            # answer to a refused duplicate never replaces the answer to the original.
            final = refused.reason in _FINAL_REFUSALS
            return self._refuse(envelope, digest, refused.reason, remember=final)
        return await self._act(envelope, digest)

    def _judge(self, envelope: CommandEnvelope, *, first_for_job: bool) -> None:
        """Counter, job and time checks (in that order); consumes the counter if fresh."""
        stale = self._window.refusal(envelope.counter)
        if stale is not None:
            raise EnvelopeRefused(stale)
        self._window.consume(envelope.counter)
        if not first_for_job:
            raise EnvelopeRefused("replayed")
        now_ms = epoch_ms(self._clock())
        if now_ms + self._skew_ms < envelope.issued_at_ms:
            raise EnvelopeRefused("not-yet-valid")
        if now_ms >= envelope.expires_at_ms:
            raise EnvelopeRefused("expired")

    async def _act(
        self, envelope: CommandEnvelope, digest: bytes
    ) -> tuple[bytes | None, GuardOutcome]:
        try:
            family = Permission(envelope.command)
        except ValueError:
            return self._refuse(envelope, digest, "unsupported", remember=True)
        outcome = await self._receiver.receive(
            VehicleCommand(envelope.job_id, family, envelope.parameters)
        )
        if outcome.command_id != envelope.job_id:
            # A receiver bug: it answered about another command. Send nothing rather than a
            # signed statement that may be false; the platform will see no answer (unknown).
            raise RuntimeError("the receiver answered for another command")
        verdict = ResultVerdict(outcome.verdict.value)
        self.stats.acted += 1
        if verdict is ResultVerdict.EXECUTED:
            self.stats.executed += 1
        return self._answer(
            envelope, digest, GuardAction.ACTED, verdict, outcome.reason, remember=True
        )

    def _refuse(
        self, envelope: CommandEnvelope, digest: bytes, reason: str, *, remember: bool
    ) -> tuple[bytes, GuardOutcome]:
        self.stats.refused[reason] += 1
        return self._answer(
            envelope,
            digest,
            GuardAction.REFUSED,
            ResultVerdict.REJECTED_BY_VEHICLE,
            reason,
            remember=remember,
        )

    def _answer(
        self,
        envelope: CommandEnvelope,
        digest: bytes,
        action: GuardAction,
        verdict: ResultVerdict,
        reason: str,
        *,
        remember: bool,
    ) -> tuple[bytes, GuardOutcome]:
        result = CommandResult(
            job_id=envelope.job_id,
            vehicle_id=self._vehicle_id,
            device_id=self._device_id,
            counter=envelope.counter,
            envelope_digest=digest,
            verdict=verdict,
            reason=reason,
            device_time_ms=epoch_ms(self._clock()),
        )
        frame = seal_result(result, self._device_key)
        decided = GuardOutcome(action, reason, envelope.job_id, verdict)
        if remember:
            self._answers[envelope.job_id] = _Answer(digest, frame, decided)
            while len(self._answers) > self._remembered:
                self._answers.popitem(last=False)
        return frame, decided
