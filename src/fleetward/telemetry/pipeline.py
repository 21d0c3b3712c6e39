"""The ingest pipeline: every frame from a device session passes the stages in order and gets
exactly one reply, an ack only after its durable write.

    size -> envelope (tag) -> freshness (counter, header fields, time) -> duplicates
         -> schema -> quotas
         -> persist (batched) -> ack

Identity comes only from the :class:`DeviceSession`; the payload can name no one else and
carry no command (this package imports nothing that could start one).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from fleetward.core.clock import Clock
from fleetward.gateway.session import DeviceSession
from fleetward.observability.logging import get_logger
from fleetward.store.base import ID_LENGTH
from fleetward.telemetry import models
from fleetward.telemetry.envelope import MacCache, SessionMacs, VerifiedFrame
from fleetward.telemetry.errors import Rejected, Status
from fleetward.telemetry.freshness import (
    DEFAULT_SKEW,
    DEFAULT_STORE_FORWARD_MAX_AGE,
    DriftReport,
    FreshnessGuard,
)
from fleetward.telemetry.leasing import LEASE_SCOPE, Leasing
from fleetward.telemetry.limits import DEFAULT_MAX_FRAME_BYTES, SizeLimit
from fleetward.telemetry.metrics import MetricsSnapshot, TelemetryMetrics
from fleetward.telemetry.ordering import DEFAULT_REMEMBERED, Seen, SequenceTracker
from fleetward.telemetry.persist import (
    DEFAULT_MAX_PENDING,
    DEFAULT_MAX_ROWS,
    DEFAULT_MAX_WAIT,
    BatchWriter,
    StoreUnavailable,
    Target,
)
from fleetward.telemetry.quarantine import (
    DEFAULT_THRESHOLD,
    DEFAULT_WINDOW,
    DeviceStatusPort,
    Quarantined,
    QuarantinePolicy,
    QuarantineSink,
    StoreQuarantineSink,
)
from fleetward.telemetry.quotas import (
    DEFAULT_DEVICE_RATE,
    DEFAULT_FLEET_RATE,
    InProcessQuotas,
    Monotonic,
    QuotaGate,
    QuotaVerdict,
    Rate,
)
from fleetward.telemetry.shared_scores import SharedScores
from fleetward.telemetry.signals import SIGNAL_PATHS, checked_signals, validate_payload

_log = get_logger("fleetward.telemetry")

TELEMETRY_TARGET = Target(models.TelemetryMessage.__table__, key=("device_id", "sequence"))  # type: ignore[arg-type]
STORE_RETRY_AFTER_MS = 1000
# Closed session ids remembered so that a transport bug (a frame after close) cannot restart
# a session's counters; beyond this many, the oldest are forgotten.
CLOSED_SESSIONS_REMEMBERED = 100_000
# Sessions whose keys and counters are held. Beyond this, the least recently active session
# is ended (its next frame is refused and the transport closes it; the device reconnects):
# memory stays bounded even if a transport never reports closed sessions, and a session's
# counters are never dropped while it can still send.
DEFAULT_MAX_LIVE_SESSIONS = 100_000


@dataclass(frozen=True, slots=True)
class TelemetryConfig:
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    clock_skew: timedelta = DEFAULT_SKEW
    store_forward_max_age: timedelta = DEFAULT_STORE_FORWARD_MAX_AGE
    device_rate: Rate = DEFAULT_DEVICE_RATE
    fleet_rate: Rate = DEFAULT_FLEET_RATE
    batch_max_rows: int = DEFAULT_MAX_ROWS
    batch_max_wait: float = DEFAULT_MAX_WAIT
    batch_max_pending: int = DEFAULT_MAX_PENDING
    remembered_sequences: int = DEFAULT_REMEMBERED
    quarantine_threshold: int = DEFAULT_THRESHOLD
    quarantine_window: timedelta = DEFAULT_WINDOW
    max_live_sessions: int = DEFAULT_MAX_LIVE_SESSIONS


@dataclass(frozen=True, slots=True)
class Stages:
    """Everything the pipeline is made of; tests swap single stages."""

    size: SizeLimit
    freshness: FreshnessGuard
    ordering: SequenceTracker
    quotas: QuotaGate
    writer: BatchWriter
    quarantine: QuarantinePolicy
    quarantine_sink: QuarantineSink
    metrics: TelemetryMetrics


class TelemetryPipeline:
    """One per gateway process. ``handle`` may be called concurrently for any sessions from
    the event loop that ran :meth:`start`; frames of one session are judged in call order."""

    def __init__(
        self, stages: Stages, clock: Clock, *, max_live_sessions: int = DEFAULT_MAX_LIVE_SESSIONS
    ) -> None:
        if max_live_sessions < 1:
            raise ValueError("max_live_sessions must be positive")
        self._max_live = max_live_sessions
        self._stages = stages
        self._size = stages.size
        self._freshness = stages.freshness
        self._ordering = stages.ordering
        self._quotas = stages.quotas
        # A shared gate (replicas) may ask the frame to wait for its lease (leasing.py).
        self._leasing = stages.quotas if isinstance(stages.quotas, Leasing) else None
        self._writer = stages.writer
        self._quarantine = stages.quarantine
        self._metrics = stages.metrics
        self._clock = clock
        self._macs = MacCache()
        self._closed: OrderedDict[str, None] = OrderedDict()

    @classmethod
    def build(
        cls,
        engine: AsyncEngine,
        clock: Clock,
        device_status: DeviceStatusPort,
        *,
        config: TelemetryConfig | None = None,
        quotas: QuotaGate | None = None,
        already_quarantined: Iterable[str] = (),
        monotonic: Monotonic = time.monotonic,
        shared_scores: SharedScores | None = None,
    ) -> TelemetryPipeline:
        """``shared_scores`` (replicas, owned: closed by :meth:`stop`): quarantine scores
        added up across replicas, on the wall ``clock`` they share. ``quotas``: the gate (a
        :class:`~fleetward.telemetry.leasing.Leasing` one is owned too); by default
        in-process buckets at the config's rates."""
        config = config or TelemetryConfig()
        metrics = TelemetryMetrics(SIGNAL_PATHS, monotonic=monotonic)
        writer = BatchWriter(
            engine,
            max_rows=config.batch_max_rows,
            max_wait=config.batch_max_wait,
            max_pending=config.batch_max_pending,
        )
        stages = Stages(
            size=SizeLimit(config.max_frame_bytes),
            freshness=FreshnessGuard(
                skew=config.clock_skew,
                store_forward_max_age=config.store_forward_max_age,
                on_drift=_drift_reporter(metrics, monotonic),
            ),
            ordering=SequenceTracker(remembered=config.remembered_sequences),
            quotas=quotas
            or InProcessQuotas(
                device=config.device_rate, fleet=config.fleet_rate, monotonic=monotonic
            ),
            writer=writer,
            quarantine=QuarantinePolicy(
                device_status,
                threshold=config.quarantine_threshold,
                window=config.quarantine_window,
                already_quarantined=already_quarantined,
                monotonic=monotonic,
                keep_rate=config.device_rate,
                shared=shared_scores,
                wall_ms=lambda: int(clock.now().timestamp() * 1000),
            ),
            quarantine_sink=StoreQuarantineSink(writer),
            metrics=metrics,
        )
        return cls(stages, clock, max_live_sessions=config.max_live_sessions)

    @property
    def stages(self) -> Stages:
        return self._stages

    async def start(self) -> None:
        await self._writer.start()

    async def stop(self) -> None:
        """Write what was accepted so far (acks still pending are released), then stop."""
        await self._writer.stop()
        await self._quarantine.close()
        if self._leasing is not None:
            await self._leasing.close()

    def end_session(self, session_id: str) -> None:
        """The transport closed the session: drop its keys and counters for good."""
        self._macs.forget(session_id)
        self._freshness.forget(session_id)
        self._closed[session_id] = None
        if len(self._closed) > CLOSED_SESSIONS_REMEMBERED:
            self._closed.popitem(last=False)

    def metrics(self) -> MetricsSnapshot:
        return self._metrics.snapshot()

    async def handle(self, session: DeviceSession, frame: bytes) -> bytes:
        """Judge one frame and return the reply frame to send back on the session.

        Raises ValueError only for a session the handshake should never have produced (a
        key that is not 32 bytes, provenance that does not fit, an id reused or closed): the
        transport then closes the session.
        """
        macs = self._macs.lookup(session)
        if macs is None:
            macs = self._session_macs(session)
        now = self._clock.now()
        now_ms = int(now.timestamp() * 1000)
        verified: VerifiedFrame | None = None
        try:
            verified = macs.open(self._size.check(frame))
            self._freshness.check(session, verified, now_ms)
            reason = self._quarantine.reason(session.device_id)
            if reason is not None:
                status = await self._keep_apart(session, verified, now, reason)
            else:
                status = await self._accept(session, verified, now)
        except Rejected as rejection:
            self._metrics.refused(rejection.status, session.device_id)
            await self._quarantine.record(session.device_id, rejection.status)
            # Fields of a frame whose tag did not verify, or whose header is malformed, are
            # never echoed.
            echoed = verified if rejection.status is not Status.MALFORMED_FRAME else None
            return macs.reply(
                rejection.status,
                counter=echoed.counter if echoed else 0,
                sequence=echoed.sequence if echoed else 0,
                server_time_ms=now_ms,
                retry_after_ms=rejection.retry_after_ms,
            )
        return macs.reply(
            status, counter=verified.counter, sequence=verified.sequence, server_time_ms=now_ms
        )

    async def _duplicate(self, device_id: str, sequence: int) -> bool:
        """Whether ``sequence`` of the device was already stored (waiting for a first copy
        still being written: answered when it is, never before)."""
        seen, pending = self._ordering.classify(device_id, sequence)
        if seen is Seen.STORED:
            return True
        if pending is not None:
            await asyncio.wait([pending])
            if pending.cancelled() or pending.exception() is not None:
                raise Rejected(
                    Status.STORE_UNAVAILABLE,
                    "first copy not committed",
                    retry_after_ms=STORE_RETRY_AFTER_MS,
                )
            return True
        return False

    def _admit(self, session: DeviceSession) -> bool:
        """Spend one frame of the device's (and the fleet's) quota, or refuse the frame;
        False: a shared gate has no lease for it yet (then await :meth:`_admit_leased`)."""
        admission = self._quotas.admit(session)
        if admission.admitted:
            return True
        if admission.scope == LEASE_SCOPE and self._leasing is not None:
            return False
        raise _quota_refusal(admission)

    async def _admit_leased(self, session: DeviceSession) -> None:
        """Wait for the lease the shared gate lacked, then ask once more (off the hot path:
        a frame waits only when its device or fleet has no usable lease in this process)."""
        if self._leasing is not None:
            await self._leasing.lease(session)
        admission = self._quotas.admit(session)
        if not admission.admitted:
            raise _quota_refusal(admission)

    async def _accept(self, session: DeviceSession, frame: VerifiedFrame, now: datetime) -> Status:
        device_id, sequence = session.device_id, frame.sequence
        if await self._duplicate(device_id, sequence):
            return Status.DUPLICATE
        signals, values = checked_signals(frame.payload, session)
        if not self._admit(session):
            await self._admit_leased(session)
        write = self._writer.submit(
            TELEMETRY_TARGET,
            {
                "device_id": device_id,
                "sequence": sequence,
                "vehicle_id": session.vehicle_id,
                "tenant_id": session.tenant_id,
                "session_id": session.session_id,
                "certificate_serial": session.certificate_serial,
                "software_version": session.software_version,
                "vehicle_config": session.vehicle_config,
                "received_at": now,
                "device_time": datetime.fromtimestamp(frame.device_time_ms / 1000, UTC),
                "store_and_forward": frame.store_and_forward,
                "late": self._ordering.admit(device_id, sequence),
                "signals": signals,
            },
        )
        self._ordering.track(device_id, sequence, write)
        stored = False
        try:
            await write
            stored = True
        except StoreUnavailable:
            raise Rejected(
                Status.STORE_UNAVAILABLE, "batch not committed", retry_after_ms=STORE_RETRY_AFTER_MS
            ) from None
        finally:
            # Also when this task is cancelled: copies waiting on the write then see it fail.
            self._ordering.settle(device_id, sequence, stored=stored)
        self._metrics.accepted(values)
        return Status.ACCEPTED

    async def _keep_apart(
        self, session: DeviceSession, frame: VerifiedFrame, now: datetime, reason: str
    ) -> Status:
        await self._quarantine.report(session.device_id)
        # Answered as it would be unquarantined: a stored sequence is a duplicate (an
        # ``accepted`` here would tell the device it is being set apart).
        if await self._duplicate(session.device_id, frame.sequence):
            return Status.DUPLICATE
        try:
            validate_payload(frame.payload, session)
            verdict = Status.ACCEPTED
        except Rejected as rejection:
            verdict = rejection.status
        if verdict is Status.ACCEPTED:
            if not self._admit(session):
                await self._admit_leased(session)
        elif not self._quarantine.keeps_refused(session.device_id):
            # Answered as it would be unquarantined (a refusal spends no quota); not kept.
            raise Rejected(verdict, "quarantined device, beyond what is kept")
        try:
            await self._stages.quarantine_sink.put(
                Quarantined(
                    device_id=session.device_id,
                    vehicle_id=session.vehicle_id,
                    tenant_id=session.tenant_id,
                    session_id=session.session_id,
                    certificate_serial=session.certificate_serial,
                    software_version=session.software_version,
                    vehicle_config=session.vehicle_config,
                    received_at=now,
                    device_time=datetime.fromtimestamp(frame.device_time_ms / 1000, UTC),
                    sequence=frame.sequence,
                    store_and_forward=frame.store_and_forward,
                    verdict=verdict,
                    quarantine_reason=reason,
                    payload=frame.payload,
                )
            )
        except StoreUnavailable:
            if verdict is not Status.ACCEPTED:
                # Its refusal stands, as it would unquarantined (no store is involved there):
                # a retryable answer would tell the TCU it is set apart.
                raise Rejected(verdict, "quarantined device, not kept (store)") from None
            raise Rejected(
                Status.STORE_UNAVAILABLE,
                "quarantine write failed",
                retry_after_ms=STORE_RETRY_AFTER_MS,
            ) from None
        if verdict is not Status.ACCEPTED:
            raise Rejected(verdict, "quarantined device, kept apart")
        # Kept (durably): its retransmissions are duplicates, as for a stored message.
        self._ordering.admit(session.device_id, frame.sequence)
        self._ordering.settle(session.device_id, frame.sequence, stored=True)
        return verdict

    def _session_macs(self, session: DeviceSession) -> SessionMacs:
        if session.session_id in self._closed:
            raise ValueError("frame for a closed session")
        if session.session_id not in self._macs:
            _check_provenance(session)
            if len(self._macs) >= self._max_live:
                self.end_session(self._macs.oldest())
        return self._macs.get(session)


def _quota_refusal(admission: QuotaVerdict) -> Rejected:
    return Rejected(
        Status.QUOTA_EXCEEDED, f"{admission.scope} quota", retry_after_ms=admission.retry_after_ms
    )


def _check_provenance(session: DeviceSession) -> None:
    """Refuse a session whose provenance cannot be stored: one such row would otherwise fail
    the batches it joins."""
    bounded = (
        (session.device_id, ID_LENGTH),
        (session.vehicle_id, ID_LENGTH),
        (session.tenant_id, ID_LENGTH),
        (session.session_id, ID_LENGTH),
        (session.certificate_serial, models.SERIAL_LENGTH),
        (session.software_version, models.SOFTWARE_VERSION_LENGTH),
        (session.vehicle_config, models.VEHICLE_CONFIG_LENGTH),
    )
    if any(not isinstance(value, str) or not 0 < len(value) <= limit for value, limit in bounded):
        raise ValueError("session provenance does not fit the telemetry tables")


DRIFT_LOG_INTERVAL_S = 60.0


def _drift_reporter(
    metrics: TelemetryMetrics, monotonic: Monotonic
) -> Callable[[DriftReport], None]:
    """Every drift is counted; each device's drift is logged at most once a minute, so that a
    device sending a flood of drifted frames cannot flood the log."""
    last_logged: dict[str, float] = {}

    def report(drift: DriftReport) -> None:
        metrics.drift(drift)
        now = monotonic()
        if now - last_logged.get(drift.device_id, -DRIFT_LOG_INTERVAL_S) < DRIFT_LOG_INTERVAL_S:
            return
        last_logged[drift.device_id] = now
        _log.warning(
            "device clock drift beyond skew",
            device_id=drift.device_id,
            drift_ms=drift.drift_ms,
            store_and_forward=drift.store_and_forward,
        )

    return report
