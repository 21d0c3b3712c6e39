"""A transport for driver tests: the server's own frame stages in pipeline order (size -> tag ->
freshness -> schema -> quota), behind in-memory sessions. Quotas run on a monotonic clock the
test holds still, so a quota refusal is decided by counts, never by speed."""

from __future__ import annotations

import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fleetward.core.clock import FrozenClock
from fleetward.core.ids import new_id
from fleetward.devices.ca import DeviceCa
from fleetward.gateway.device_client import DeviceCredentials, SessionClosed, generate_key
from fleetward.gateway.session import DeviceSession, Transport
from fleetward.sim.transport import SimLink, TransportKind
from fleetward.telemetry.envelope import SessionMacs
from fleetward.telemetry.errors import Rejected, Status
from fleetward.telemetry.freshness import FreshnessGuard
from fleetward.telemetry.limits import SizeLimit
from fleetward.telemetry.quotas import InProcessQuotas, Rate
from fleetward.telemetry.signals import validate_payload

NOW = datetime(2026, 11, 26, 9, tzinfo=UTC)
NOW_MS = int(NOW.timestamp() * 1000)
VEHICLE_ID = "veh_" + "c" * 26
DEVICE_ID = "dev_" + "b" * 26


def credentials() -> DeviceCredentials:
    key = generate_key()
    certificate = DeviceCa.generate(FrozenClock(NOW)).issue(
        key.public_key(), device_id=DEVICE_ID, vehicle_id=VEHICLE_ID, now=NOW
    )
    return DeviceCredentials(DEVICE_ID, VEHICLE_ID, key, certificate)


def clock() -> datetime:
    return NOW


@dataclass
class Stored:
    session_id: str
    sequence: int
    store_and_forward: bool
    payload: bytes


@dataclass
class FakeGateway:
    device_rate: Rate = field(default_factory=lambda: Rate(per_second=20, burst=200))
    concurrent_sessions: bool = True
    kind: TransportKind = TransportKind.WEBSOCKET
    opened: list[str] = field(default_factory=list)  # session ids, in order
    closed: list[str] = field(default_factory=list)
    stored: list[Stored] = field(default_factory=list)

    def __post_init__(self) -> None:
        # Held still: no token comes back while a test runs.
        self.quotas = InProcessQuotas(device=self.device_rate, monotonic=lambda: 0.0)
        self.freshness = FreshnessGuard(on_drift=lambda _report: None)

    def describe(self) -> str:
        return "fake"

    def live(self) -> list[str]:
        return [session for session in self.opened if session not in self.closed]

    async def open(
        self,
        credentials: DeviceCredentials,
        *,
        software_version: str,
        vehicle_config: str,
        now: Callable[[], datetime],
    ) -> SimLink:
        session = DeviceSession(
            session_id=new_id("ses"),
            device_id=credentials.device_id,
            vehicle_id=credentials.vehicle_id,
            tenant_id="ten_" + "d" * 26,
            certificate_serial="01",
            session_key=secrets.token_bytes(32),
            transport=Transport.WEBSOCKET,
            peer="127.0.0.1",
            software_version=software_version,
            vehicle_config=vehicle_config,
            established_at=now(),
        )
        self.opened.append(session.session_id)
        return FakeLink(self, session)

    def judge(self, session: DeviceSession, macs: SessionMacs, frame: bytes) -> bytes:
        counter = sequence = 0
        try:
            verified = macs.open(SizeLimit().check(frame))
            counter, sequence = verified.counter, verified.sequence
            self.freshness.check(session, verified, NOW_MS)
            validate_payload(verified.payload, session)
            verdict = self.quotas.admit(session)
            if not verdict.admitted:
                raise Rejected(
                    Status.QUOTA_EXCEEDED, "quota", retry_after_ms=verdict.retry_after_ms
                )
        except Rejected as rejection:
            return macs.reply(
                rejection.status,
                counter=counter,
                sequence=sequence,
                server_time_ms=NOW_MS,
                retry_after_ms=rejection.retry_after_ms,
            )
        self.stored.append(
            Stored(session.session_id, sequence, verified.store_and_forward, verified.payload)
        )
        return macs.reply(
            Status.ACCEPTED, counter=counter, sequence=sequence, server_time_ms=NOW_MS
        )


class FakeLink:
    def __init__(self, gateway: FakeGateway, session: DeviceSession) -> None:
        self._gateway = gateway
        self._session = session
        self._macs = SessionMacs(session.session_key)
        self._replies: deque[bytes] = deque()

    @property
    def session_key(self) -> bytes:
        return self._session.session_key

    async def send(self, frame: bytes) -> None:
        if self._session.session_id in self._gateway.closed:
            raise SessionClosed(None, "closed")
        self._replies.append(self._gateway.judge(self._session, self._macs, frame))

    async def receive(self) -> bytes:
        if not self._replies:
            raise SessionClosed(None, "nothing sent")
        return self._replies.popleft()

    async def close(self) -> None:
        self._gateway.closed.append(self._session.session_id)
