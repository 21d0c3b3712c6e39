"""The WebSocket transport: ``/gateway/v1/ws``, the embedded default served by ``fleetward serve``.

Per connection: send CHALLENGE, read RESPONSE within the handshake timeout, verify it
(:class:`ServerHandshake`), spend one of the device's session openings (``gateway.churn``:
4429 past its budget, before any store write), admit the device against the store, take a
place in the session registry, judge the clone rules (a finding quarantines the device:
recorded, flagged, the pipeline told; the sessions go on), record the session, send WELCOME;
then hand each binary frame to the :class:`FrameHandler` and send its reply. A session the
new one superseded as silent stays open under watch until its idle deadline: a message on it
first is a clone finding (:meth:`Gateway.superseded_heard`, docs/vehicle-protocol.md 4.8).
Identity comes only from this handshake: nothing a frame says can change who the session
belongs to.

Every refusal closes with a :class:`CloseCode` and is audited with its precise reason. No
exception escapes to the server (whose log would carry its text): an unexpected one closes the
connection with 1011 and is logged by type only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Final

from cryptography import x509
from fastapi import APIRouter, FastAPI, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from fleetward.catalog.entry import (
    AUTHENTICATED,
    CallerType,
    CatalogEntry,
    DataClass,
    Impact,
    catalogued,
)
from fleetward.core.context import current_request
from fleetward.core.errors import JsonValue
from fleetward.core.ids import new_id
from fleetward.devices.admission import (
    AdmissionRefused,
    Admitted,
    DeviceAdmission,
    SessionClosed,
    SessionLedger,
    SessionOpened,
    StoreCredentialCheck,
    record_churn,
    record_refusal,
    record_unrecorded,
)
from fleetward.devices.ca import load_device_ca
from fleetward.devices.clones import (
    DEFAULT_LIVENESS_WINDOW,
    CloneResponse,
    CloneRules,
    OtherSession,
    Suspicion,
)
from fleetward.devices.errors import TransitionRefused
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import DeviceStatus
from fleetward.gateway.churn import HandshakeRate
from fleetward.gateway.command_port import CommandPort, NoCommands
from fleetward.gateway.directory import LocalDirectory, SessionDirectory
from fleetward.gateway.frames import RESULT_FIRST_BYTE
from fleetward.gateway.handler import (
    FrameHandler,
    NoObserver,
    SessionObserver,
    UnavailableHandler,
)
from fleetward.gateway.handshake import CloseCode, HandshakeFailure, ProvenDevice, ServerHandshake
from fleetward.gateway.refusals import RefusalBudget, Unrecorded
from fleetward.gateway.registry import (
    Claim,
    LiveSession,
    SessionLimitReached,
    SessionRegistry,
)
from fleetward.gateway.session import DeviceSession, Transport
from fleetward.identity.login.limits import client_network
from fleetward.observability.logging import get_logger
from fleetward.platform import Platform
from fleetward.services import ServiceContext
from fleetward.settings import Settings
from fleetward.store.busy import is_store_busy

logger = get_logger(__name__)

GATEWAY_SURFACE: Final = "gateway"
WEBSOCKET_PATH: Final = "/gateway/v1/ws"
# A shared session directory's answer is waited for this long on a handshake (then the clone
# rules judge with this replica's sessions only).
DIRECTORY_TIMEOUT_S: Final = 0.5
# Ended sessions kept for a leave the directory did not answer (beyond: their entries expire).
_UNLEFT_MAX: Final = 10_000


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    handshake_timeout: timedelta = timedelta(seconds=10)
    # How far the device's clock may be from the server's at the handshake.
    clock_skew: timedelta = timedelta(minutes=2)
    # A session heard from within this window is live (see devices.clones).
    liveness_window: timedelta = DEFAULT_LIVENESS_WINDOW
    # A session that sends nothing for this long is closed (4006).
    idle_timeout: timedelta = timedelta(seconds=120)
    max_frame_bytes: int = 64 * 1024
    # The longest one message to a device may take to write (CHALLENGE, WELCOME, replies,
    # commands, the close frame), its wait behind the session's other sends included. A peer
    # that stops reading fills the server's buffers, and then a write waits for them to drain
    # for ever: past this the session is closed with 4007 (send-timeout).
    send_timeout: timedelta = timedelta(seconds=10)
    # Live sessions one device identity may hold: one, two while a reconnect overlaps. A
    # handshake beyond is refused with 1013 (try again later); silent sessions do not count.
    max_sessions_per_device: int = 2
    # How often live sessions are re-checked against the store (changes by other processes).
    credential_poll: timedelta = timedelta(seconds=2)
    # Refused handshakes recorded one by one per source network (IPv4 address, IPv6 /64) and
    # window; the rest are counted into one event per network and window (gateway.refusals).
    refusals_per_network: int = 10
    refusal_window: timedelta = timedelta(minutes=1)
    # Networks tracked at once; refusals from more are counted, never recorded one by one.
    refusal_networks: int = 4096
    # How often windows that are over are summarised when no new refusal does it.
    refusal_flush: timedelta = timedelta(seconds=10)
    # Sessions one device may open: a burst, then one per refill; past it a handshake is
    # refused with 4429 before any store write (gateway.churn). Devices tracked at once.
    handshake_burst: int = 10
    handshake_refill: timedelta = timedelta(seconds=60)
    handshake_devices: int = 200_000

    @classmethod
    def from_settings(cls, settings: Settings) -> GatewayConfig:
        """The limits an operator sets (``gateway_*`` settings); the rest are defaults."""
        return cls(
            max_sessions_per_device=settings.gateway_max_sessions_per_device,
            send_timeout=timedelta(seconds=settings.gateway_send_timeout_seconds),
            refusals_per_network=settings.gateway_refusals_per_network,
            refusal_window=timedelta(seconds=settings.gateway_refusal_window_seconds),
            refusal_networks=settings.gateway_refusal_networks,
            handshake_burst=settings.gateway_handshake_burst,
            handshake_refill=timedelta(seconds=settings.gateway_handshake_refill_seconds),
            handshake_devices=settings.gateway_handshake_devices,
        )


@dataclass(eq=False)
class Gateway:
    """The process-wide gateway state: one per app, on ``app.state.gateway``."""

    platform: Platform
    handler: FrameHandler
    observer: SessionObserver
    config: GatewayConfig
    registry: SessionRegistry = field(init=False)
    ledger: SessionLedger = field(init=False)
    # Which refused handshakes are recorded one by one (per source network, bounded).
    refusals: RefusalBudget = field(init=False)
    # How often each device may open a session (per device, bounded).
    handshakes: HandshakeRate = field(init=False)
    # The command service, once the composition root wires it in.
    commands: CommandPort = field(default_factory=NoCommands, init=False)
    # Other replicas' sessions, for the clone rules and the session cap (gateway/directory.py).
    directory: SessionDirectory = field(default_factory=LocalDirectory, init=False)
    # Sessions whose join the directory did not answer: joined by the next refresh (a refresh
    # rewrites only entries that are there, so that it never writes back one that has left).
    _unjoined: dict[str, LiveSession] = field(default_factory=dict, init=False)
    # Sessions that ended while the directory did not answer: left again by the next refresh
    # (their entries would look live elsewhere until the liveness window passed).
    _unleft: dict[str, LiveSession] = field(default_factory=dict, init=False)
    _ca_certificate: x509.Certificate | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Session openings and closings are recorded in batches (see SessionLedger): one
        # short write transaction for many handshakes instead of one each.
        self.ledger = SessionLedger(self.platform.services)
        self.registry = SessionRegistry(
            self.platform.clock,
            StoreCredentialCheck(self.platform.sessions, self.platform.clock),
            self.observer,
            liveness_window=self.config.liveness_window,
            poll_interval=self.config.credential_poll,
            max_sessions=self.config.max_sessions_per_device,
        )
        self.refusals = RefusalBudget(
            per_network=self.config.refusals_per_network,
            window=self.config.refusal_window,
            networks=self.config.refusal_networks,
        )
        self.handshakes = HandshakeRate(
            burst=self.config.handshake_burst,
            refill=self.config.handshake_refill,
            devices=self.config.handshake_devices,
        )

    @property
    def server_id(self) -> str:
        """What devices expect the server to call itself (signed into every handshake)."""
        return self.platform.settings.base_url

    def ca_certificate(self) -> x509.Certificate:
        if self._ca_certificate is None:
            platform = self.platform
            self._ca_certificate = load_device_ca(
                platform.settings, platform.identity.data_key, platform.clock
            ).certificate
        return self._ca_certificate

    async def serve(self, websocket: WebSocket) -> None:
        peer = _peer(websocket)
        await websocket.accept()
        try:
            live, welcome = await self._handshake(websocket, peer)
        except HandshakeFailure as failure:
            await self._refuse(websocket, peer, failure)
            return
        except Exception as exc:
            logger.error("gateway.handshake_error", error=type(exc).__name__)
            await self._close(websocket, CloseCode.INTERNAL)
            return
        try:
            live.sender = _sender(websocket)
            live.send_timeout = self.config.send_timeout.total_seconds()
            # The WELCOME goes as any other message (bounded); the session is registered,
            # so a failure here is closed and recorded like any session's.
            if not await live.send(welcome):
                return
            self.commands.session_ready(live)
            await self._run(websocket, live)
        except Exception as exc:
            logger.error("gateway.session_error", error=type(exc).__name__)
            await live.close(CloseCode.INTERNAL)
        finally:
            self.registry.release(live)
            try:
                self.observer.end_session(live.session.session_id)
            except Exception as exc:  # the observer's failure must not skip the record
                logger.error("gateway.observer_failed", error=type(exc).__name__)
            await self.record_close(live)

    # ------------------------------------------------------------------ handshake

    async def _handshake(self, websocket: WebSocket, peer: str) -> tuple[LiveSession, bytes]:
        """The admitted session and its WELCOME, for the caller to send."""
        config = self.config
        handshake = ServerHandshake(
            self.server_id, self.ca_certificate(), self.platform.clock, config.clock_skew
        )
        try:
            async with asyncio.timeout(config.send_timeout.total_seconds()):
                await websocket.send_bytes(handshake.challenge_message)
        except TimeoutError:
            raise HandshakeFailure("send-timeout", CloseCode.SEND_TIMEOUT) from None
        try:
            async with asyncio.timeout(config.handshake_timeout.total_seconds()):
                message = await websocket.receive()
        except TimeoutError:
            raise HandshakeFailure("timeout", CloseCode.TIMEOUT) from None
        if message["type"] == "websocket.disconnect":
            raise HandshakeFailure("disconnected", CloseCode.PROTOCOL)
        data = message.get("bytes")
        if not isinstance(data, bytes):
            raise HandshakeFailure("not-binary", CloseCode.PROTOCOL)
        proven = handshake.verify(data)
        live = await self.admit(
            proven, peer=peer, transport=Transport.WEBSOCKET, closer=self._closer(websocket)
        )
        welcome = handshake.welcome(
            proven, live.session.session_id, config.idle_timeout, config.max_frame_bytes
        )
        return live, welcome

    async def admit(
        self,
        proven: ProvenDevice,
        *,
        peer: str,
        transport: Transport,
        closer: Callable[[CloseCode], Awaitable[None]],
    ) -> LiveSession:
        """Admit a proven device against the store, register its session, judge the clone
        rules and record the opening (shared by every transport; raises HandshakeFailure).

        First, before the store is read or written, the device's opening budget
        (``gateway.churn``): past it the handshake is refused with 4429, and the first such
        refusal since the device's last opening is recorded as ``device:session:churn``. A
        handshake refused after that check gives its opening back: only sessions count."""
        verdict = self.handshakes.take(proven.device_id, self.platform.clock.now())
        if not verdict.allowed:
            if verdict.first:
                await self._record_churn(proven.device_id, peer, transport, verdict.retry_after)
            raise HandshakeFailure("session-churn", CloseCode.TOO_MANY_HANDSHAKES, proven.device_id)
        try:
            return await self._admit_guarded(proven, peer=peer, transport=transport, closer=closer)
        except BaseException:
            self.handshakes.give_back(proven.device_id)
            raise

    async def _record_churn(
        self, device_id: str, peer: str, transport: Transport, retry_after: timedelta
    ) -> None:
        """The breach of a device's opening budget, once per breach: a device in a loop (a
        stolen key, a TCU bug) for operations to see, whatever the refusal budget records."""
        config = self.config
        try:
            async with self.platform.unit_of_work() as uow:
                record_churn(
                    self.platform.audit,
                    uow.session,
                    device_id=device_id,
                    peer=peer,
                    transport=transport.value,
                    burst=config.handshake_burst,
                    refill_seconds=config.handshake_refill.total_seconds(),
                    retry_after_seconds=retry_after.total_seconds(),
                )
                await uow.commit()
        except Exception as exc:  # the refusal stands even if its record cannot be written
            logger.error("gateway.churn_not_recorded", error=type(exc).__name__)

    async def _admit_guarded(
        self,
        proven: ProvenDevice,
        *,
        peer: str,
        transport: Transport,
        closer: Callable[[CloseCode], Awaitable[None]],
    ) -> LiveSession:
        try:
            return await self._admit(proven, peer=peer, transport=transport, closer=closer)
        except HandshakeFailure:
            raise
        except Exception as exc:
            if not is_store_busy(exc):
                raise
            # The store could not take the handshake's bookkeeping now (after the ledger's
            # bounded retries): nothing was recorded, the device may try again shortly.
            raise HandshakeFailure(
                "store-busy", CloseCode.TRY_AGAIN_LATER, proven.device_id
            ) from None

    async def _admit(
        self,
        proven: ProvenDevice,
        *,
        peer: str,
        transport: Transport,
        closer: Callable[[CloseCode], Awaitable[None]],
    ) -> LiveSession:
        rules = CloneRules(self.config.liveness_window)
        ledgered: asyncio.Future[None] | None = None
        async with self.platform.services() as (uow, ctx):
            try:
                admitted = await DeviceAdmission(ctx).check(
                    device_id=proven.device_id,
                    vehicle_id=proven.vehicle_id,
                    fingerprint=proven.certificate_fingerprint,
                )
            except AdmissionRefused as refused:
                raise HandshakeFailure(
                    refused.reason, CloseCode.UNAUTHENTICATED, proven.device_id
                ) from None
            now = ctx.clock.now()
            session = DeviceSession(
                session_id=new_id("ses"),
                device_id=proven.device_id,
                vehicle_id=proven.vehicle_id,
                tenant_id=admitted.tenant_id,
                certificate_serial=proven.certificate_serial,
                session_key=proven.keys.session_key,
                transport=transport,
                peer=peer,
                software_version=proven.software_version,
                vehicle_config=proven.vehicle_config,
                established_at=now,
                public_key_der=proven.public_key_der,
            )
            live = LiveSession(session, now, closer)
            # A pending certificate is the device's new one: sessions of the certificates it
            # replaces are handed over, not counted as a second device.
            handover = (
                await DeviceAdmission(ctx).replaced_serials(admitted)
                if admitted.first_use_of_rotation
                else frozenset()
            )
            device = admitted.device
            elsewhere = await self._elsewhere(live, rules, handover)
            try:
                claim = self.registry.claim(
                    live,
                    status=device.status,
                    handover_serials=handover,
                    live_elsewhere=len(elsewhere),
                )
            except SessionLimitReached:
                await self._leave(live)
                # Told only to try again later, as when the store is busy: a copy of the key
                # must not learn that another session (the genuine device's) is live.
                raise HandshakeFailure(
                    "session-limit", CloseCode.TRY_AGAIN_LATER, proven.device_id
                ) from None
            suspicion = rules.assess(
                peer=peer,
                now=now,
                live_sessions=[s.other() for s in claim.live] + list(elsewhere),
                last_peer=device.last_peer,
                last_seen_at=device.last_seen_at,
            )
            details: dict[str, JsonValue] = {
                "superseded": [s.session.session_id for s in claim.silent],
                "handed_over": [s.session.session_id for s in claim.handed_over],
            }
            try:
                if suspicion is None and not admitted.first_use_of_rotation:
                    # The common case writes nothing but its record: batched with other
                    # handshakes' (the read-only transaction here ends without a write).
                    ledgered = self.ledger.record(
                        SessionOpened(
                            device_id=device.id,
                            certificate_id=admitted.certificate.id,
                            serial=admitted.certificate.serial,
                            vehicle_id=device.vehicle_id,
                            tenant_id=admitted.tenant_id,
                            status=device.status,
                            session_id=session.session_id,
                            peer=peer,
                            software_version=proven.software_version,
                            at=now,
                            details=details,
                        )
                    )
                else:
                    try:
                        await self._record_in_handshake(
                            ctx, admitted, suspicion, session, proven, peer, details
                        )
                    except TransitionRefused as refused:
                        # The device or the rotated certificate changed since the admission
                        # read them (revoked, ended): a refusal like any withdrawn
                        # credential's, audited, never an unexpected error.
                        raise HandshakeFailure(
                            refused.reason or "device-changed",
                            CloseCode.UNAUTHENTICATED,
                            proven.device_id,
                        ) from None
                    await uow.commit()
            except BaseException:
                await self._abandon(live, claim)
                raise
        if ledgered is not None:
            try:
                # Recorded (with its audit event) before the session may proceed.
                await ledgered
            except AdmissionRefused as refused:
                # Its credentials were withdrawn between the admission's read and the
                # session's registration (see SessionLedger): it never opens.
                await self._abandon(live, claim)
                raise HandshakeFailure(
                    refused.reason, CloseCode.UNAUTHENTICATED, proven.device_id
                ) from None
            except BaseException:
                await self._abandon(live, claim)
                raise
        if suspicion is not None:
            self.registry.status_changed(device.id, DeviceStatus.QUARANTINED, suspicion.reason)
        await self._supersede(claim, live)
        return live

    async def _supersede(self, claim: Claim, new: LiveSession) -> None:
        """The admitted ``new`` session takes the place of the claim's others: those of a
        rotated-away certificate are closed (4005); the silent ones stay open under watch
        until their idle deadline (``LiveSession.superseded_by``), then are closed (4004),
        unless heard from first (:meth:`superseded_heard`). A car whose link dropped never
        speaks on its old connection again; a live one that was only quiet does."""
        for old in claim.silent:
            self.registry.watch(old, new)
        for old in claim.handed_over:
            await old.close(CloseCode.ROTATED)

    async def superseded_heard(self, live: LiveSession) -> None:
        """A message arrived on ``live`` after a newer session superseded it as silent: its
        TCU was alive, so another holder of the key opened the newer one. Recorded through the
        clone response (incident, ``device:clone:detected``, quarantine where the clone
        policy quarantines: an active device), then ``live`` is closed (4004); the message is
        never judged. Every transport calls this; a record that cannot be written is logged
        and the session is closed all the same."""
        superseded_by = live.superseded_by
        if superseded_by is None:
            raise ValueError("only a superseded session is heard from again")
        session = live.session
        suspicion = CloneRules.superseded_heard(superseded_by)
        try:
            async with self.platform.services() as (uow, ctx):
                device = await DeviceLifecycle(ctx).get(session.device_id)
                await CloneResponse(ctx).quarantine(
                    device,
                    suspicion,
                    peer=session.peer,
                    certificate_serial=session.certificate_serial,
                    session_id=session.session_id,
                    tenant_id=session.tenant_id,
                )
                status = device.status
                await uow.commit()
        except Exception as exc:
            logger.error("gateway.clone_not_recorded", error=type(exc).__name__)
        else:
            if status is DeviceStatus.QUARANTINED:
                # The sessions that go on (the newer one) have their frames set apart.
                self.registry.status_changed(session.device_id, status, suspicion.reason)
        finally:
            await live.close(CloseCode.SUPERSEDED)

    @staticmethod
    async def _record_in_handshake(
        ctx: ServiceContext,
        admitted: Admitted,
        suspicion: Suspicion | None,
        session: DeviceSession,
        proven: ProvenDevice,
        peer: str,
        details: dict[str, JsonValue],
    ) -> None:
        """What the handshake's own transaction writes when the ledger's batch cannot: a
        clone finding (incident, quarantine) and the first use of a rotated certificate.
        Raises TransitionRefused when the device or certificate moved since it was read."""
        device = admitted.device
        if suspicion is not None:
            # Recorded and flagged; the sessions go on with their frames set apart.
            await CloneResponse(ctx).quarantine(
                device,
                suspicion,
                peer=peer,
                certificate_serial=proven.certificate_serial,
                session_id=session.session_id,
                tenant_id=admitted.tenant_id,
            )
        await DeviceAdmission(ctx).opened(
            admitted,
            session_id=session.session_id,
            peer=peer,
            software_version=proven.software_version,
            details=details,
        )

    def _closer(self, websocket: WebSocket) -> Callable[[CloseCode], Awaitable[None]]:
        async def close(code: CloseCode) -> None:
            await self._close(websocket, code)

        return close

    async def _close(self, websocket: WebSocket, code: CloseCode) -> None:
        await _close(websocket, code, self.config.send_timeout.total_seconds())

    async def _abandon(self, live: LiveSession, claim: Claim) -> None:
        """A handshake that failed after its claim: forget its session, and still close the
        sessions the claim took out of the registry. Left open they would be reachable by
        no revocation, suspension or sweep."""
        self.registry.release(live)
        await self._leave(live)
        await _close_replaced(claim)

    async def _elsewhere(
        self, live: LiveSession, rules: CloneRules, handover: frozenset[str]
    ) -> tuple[OtherSession, ...]:
        """The device's live sessions on other replicas, ``live`` now among them for theirs
        (``gateway.directory``); none when alone. A session of a certificate this one's
        rotation replaces is the device handing over, not a second device. A directory that
        cannot answer in time leaves the rules to this replica's own sessions, logged."""
        if not self.directory.shared:
            return ()
        try:
            async with asyncio.timeout(DIRECTORY_TIMEOUT_S):
                remote = await self.directory.join(live)
        except Exception as exc:
            logger.warning("gateway.directory_unavailable", stage="join", error=type(exc).__name__)
            self._unjoined[live.session.session_id] = live
            return ()
        now = live.last_activity
        return tuple(
            r.other
            for r in remote
            if rules.live(r.other, now) and r.certificate_serial not in handover
        )

    async def _leave(self, live: LiveSession) -> None:
        if not self.directory.shared:
            return
        self._unjoined.pop(live.session.session_id, None)
        try:
            async with asyncio.timeout(DIRECTORY_TIMEOUT_S):
                await self.directory.leave(live)
        except Exception as exc:  # left again at the next refresh (gateway/directory.py)
            logger.warning("gateway.directory_unavailable", stage="leave", error=type(exc).__name__)
            if len(self._unleft) < _UNLEFT_MAX:  # bounded through a long outage
                self._unleft[live.session.session_id] = live

    async def run_directory_refresh(self) -> None:
        """Write this replica's sessions' last activity to a shared directory every third of
        the liveness window, until cancelled (nothing to write alone)."""
        while True:
            await asyncio.sleep(self.config.liveness_window.total_seconds() / 3)
            try:
                await self.refresh_directory()
            except Exception as exc:
                logger.warning(
                    "gateway.directory_unavailable", stage="refresh", error=type(exc).__name__
                )

    async def refresh_directory(self) -> None:
        """One refresh: leave for the sessions whose end the directory did not answer, join
        for those whose handshake it did not answer, then rewrite the last activity of every
        session still in it (raises when it cannot)."""
        if not self.directory.shared:
            return
        expired = self.platform.clock.now() - 2 * self.config.liveness_window
        for session_id, live in list(self._unleft.items()):
            if live.last_activity > expired:  # older entries have expired or been pruned
                await self.directory.leave(live)
            self._unleft.pop(session_id, None)
        sessions = self.registry.all_sessions()
        registered = {live.session.session_id for live in sessions}
        for session_id, live in list(self._unjoined.items()):
            if session_id not in registered:
                self._unjoined.pop(session_id, None)
                continue
            await self.directory.join(live)
            if self._unjoined.pop(session_id, None) is None:
                # It ended while joining: its leave may have run first, so leave again.
                await self.directory.leave(live)
        await self.directory.refresh(sessions)

    async def _refuse(self, websocket: WebSocket, peer: str, failure: HandshakeFailure) -> None:
        # Anyone can make a handshake fail, without any key: past its network's budget a
        # refusal is counted, not written (the close code is the same either way).
        await self.record_refusal(failure, peer=peer, source=client_network(peer))
        await self._close(websocket, failure.close)

    async def record_refusal(self, failure: HandshakeFailure, *, peer: str, source: str) -> None:
        """Record a refused handshake within ``source``'s budget (a WebSocket peer's network,
        an MQTT device's broker identity), or count it past the budget; also summarises the
        windows that are over. Every transport's refusals go through here: a refusal costs
        the one who causes it little, and each record is an audit write."""
        record, ended = self.refusals.admit(source, self.platform.clock.now())
        await self._record_refusals(failure if record else None, peer, ended)

    async def flush_refusals(self) -> None:
        """Summarise the refusal windows that are over (the next refusal would, but a flood
        that stops has no next refusal). Run on a timer by the app (``refusal_flush``)."""
        ended = self.refusals.ended(self.platform.clock.now())
        await self._record_refusals(None, "", ended)

    async def run_refusal_flush(self) -> None:
        """:meth:`flush_refusals` every ``refusal_flush``, until cancelled."""
        while True:
            await asyncio.sleep(self.config.refusal_flush.total_seconds())
            await self.flush_refusals()

    async def _record_refusals(
        self, failure: HandshakeFailure | None, peer: str, ended: list[Unrecorded]
    ) -> None:
        if failure is None and not ended:
            return
        try:
            async with self.platform.unit_of_work() as uow:
                if failure is not None:
                    record_refusal(
                        self.platform.audit,
                        uow.session,
                        reason=failure.reason,
                        device_id=failure.device_id,
                        peer=peer,
                        close=failure.close.phrase,
                    )
                for window in ended:
                    record_unrecorded(
                        self.platform.audit,
                        uow.session,
                        network=window.network,
                        started=window.started,
                        recorded=window.recorded,
                        unrecorded=window.unrecorded,
                        window_seconds=self.config.refusal_window.total_seconds(),
                    )
                await uow.commit()
        except Exception as exc:  # the refusal stands even if its record cannot be written
            logger.error("gateway.refusal_not_recorded", error=type(exc).__name__)

    # ------------------------------------------------------------------ session

    async def _run(self, websocket: WebSocket, live: LiveSession) -> None:
        config = self.config
        clock = self.platform.clock
        while live.closed_with is None:
            try:
                async with asyncio.timeout(config.idle_timeout.total_seconds()):
                    message = await websocket.receive()
            except TimeoutError:
                await live.close(live.idle_code)
                return
            if message["type"] == "websocket.disconnect" or live.closed_with is not None:
                if live.superseded_by is not None:
                    await live.close(CloseCode.SUPERSEDED)  # recorded as what ended it
                return
            if live.superseded_by is not None:
                await self.superseded_heard(live)
                return
            frame = message.get("bytes")
            if not isinstance(frame, bytes):
                await live.close(CloseCode.PROTOCOL)
                return
            if len(frame) > config.max_frame_bytes:
                await live.close(CloseCode.TOO_LARGE)
                return
            live.touch(clock.now())
            if frame[:1] == _RESULT_PREFIX:
                # A signed command result: the command service's, never the pipeline's.
                await self.commands.on_result(live, frame)
                continue
            reply = await self.handler.handle(live.session, frame)
            if live.closed_with is not None:
                return  # closed (revoked, quarantined) while the frame was handled
            try:
                # False when it could not be written in time: the session is then closed.
                await live.send(reply)
            except WebSocketDisconnect:
                return

    async def record_close(self, live: LiveSession) -> None:
        session = live.session
        await self._leave(live)
        try:
            await self.ledger.record(
                SessionClosed(
                    device_id=session.device_id,
                    tenant_id=session.tenant_id,
                    session_id=session.session_id,
                    last_activity=live.last_activity,
                    code=live.closed_with.phrase if live.closed_with else "by-device",
                    at=self.platform.clock.now(),
                )
            )
        except Exception as exc:
            logger.error("gateway.close_not_recorded", error=type(exc).__name__)


_RESULT_PREFIX: Final = bytes([RESULT_FIRST_BYTE])


def _peer(websocket: WebSocket) -> str:
    """The device's network address: the one the request-identity middleware resolved through
    the configured trusted proxies. Behind a TLS terminator the TCP peer is the terminator for
    every device, and the network-change clone rule would compare it with itself."""
    context = current_request()
    if context is not None and context.source_ip is not None:
        return context.source_ip
    return websocket.client.host if websocket.client else "unknown"


async def _close_replaced(claim: Claim) -> None:
    for old in claim.silent:
        await old.close(CloseCode.SUPERSEDED)
    for old in claim.handed_over:
        await old.close(CloseCode.ROTATED)


def _sender(websocket: WebSocket) -> Callable[[bytes], Awaitable[None]]:
    async def send(message: bytes) -> None:
        await websocket.send_bytes(message)

    return send


async def _close(websocket: WebSocket, code: CloseCode, within: float) -> None:
    """Send the close frame, waiting at most ``within`` seconds: it queues behind whatever the peer
    has not read, and a peer that stopped reading would hold every caller of a session's
    close (a revocation, the credential watcher's sweep, a superseding handshake) for ever."""
    if websocket.application_state is WebSocketState.DISCONNECTED:
        return
    try:
        async with asyncio.timeout(within):
            await websocket.close(code=int(code), reason=code.phrase)
    except TimeoutError:
        # The handler returns and the server drops the connection; the peer, which reads
        # nothing, would not have seen the frame anyway.
        logger.warning("gateway.close_timeout", code=int(code))
    except (RuntimeError, WebSocketDisconnect, OSError):
        # The peer went away first; there is nothing left to close.
        logger.debug("gateway.close_after_disconnect", code=int(code))


# --------------------------------------------------------------------------- wiring

router = APIRouter(prefix="/gateway/v1", tags=[GATEWAY_SURFACE])


@router.websocket("/ws", name="gateway:websocket")
@catalogued(
    CatalogEntry(
        surface=GATEWAY_SURFACE,
        owner="gateway-team",
        purpose=(
            "vehicle session: the device proves possession of its platform-issued key "
            "(challenge-response, no token), then sends telemetry frames"
        ),
        callers=frozenset({CallerType.VEHICLE}),
        permission=AUTHENTICATED,
        data_class=DataClass.VEHICLE_STATE,
        objects=("device", "vehicle"),
        impact=frozenset({Impact.SAFETY, Impact.PRIVACY}),
        expected_rate_per_minute=2,
        tags=("gateway",),
    )
)
async def device_socket(websocket: WebSocket) -> None:
    gateway = getattr(websocket.app.state, "gateway", None)
    if not isinstance(gateway, Gateway):
        # Served without a gateway installed: refuse rather than guess (fail closed).
        await websocket.close(code=int(CloseCode.INTERNAL))
        return
    await gateway.serve(websocket)


def install(
    app: FastAPI,
    platform: Platform,
    *,
    handler: FrameHandler | None = None,
    observer: SessionObserver | None = None,
    config: GatewayConfig | None = None,
) -> Gateway:
    """Add the WebSocket route and the gateway state to ``app``; returns the gateway.

    ``handler`` and ``observer`` are the telemetry pipeline once it is wired in; without one,
    every frame is answered ``unavailable`` and nothing is kept."""
    gateway = Gateway(
        platform,
        handler or UnavailableHandler(),
        observer or NoObserver(),
        config or GatewayConfig.from_settings(platform.settings),
    )
    app.state.gateway = gateway
    app.include_router(router)
    return gateway


def gateway_of(app: FastAPI) -> Gateway | None:
    found = getattr(app.state, "gateway", None)
    return found if isinstance(found, Gateway) else None
