"""The live sessions of this gateway process, so that a credential change reaches them at once.

Lifecycle changes made in this process are applied directly (:meth:`SessionRegistry.apply`):
suspension and revocation close the device's sessions; a quarantine, or its release, keeps
them and tells the :class:`SessionObserver` (the pipeline sets the device's frames apart).
Changes made elsewhere (the CLI, another replica) are caught by a watcher that re-checks every
live session's credential against the store each ``poll_interval`` while any session is live;
it stops when the last session ends.

All methods are for one event loop: :meth:`SessionRegistry.claim` and
:meth:`SessionRegistry.release` are synchronous, so looking for another session of a device
and registering a new one cannot interleave with a concurrent handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final, Protocol

from fleetward.core.clock import Clock
from fleetward.devices.admission import Credentials
from fleetward.devices.clones import OtherSession
from fleetward.devices.models import DeviceStatus
from fleetward.gateway.handler import SessionObserver
from fleetward.gateway.handshake import CloseCode
from fleetward.gateway.session import DeviceSession
from fleetward.observability.logging import get_logger

logger = get_logger(__name__)

# Consecutive failed credential checks after which every live session is closed.
MAX_FAILED_CHECKS: Final = 5

_CLOSE_FOR_STATUS: Final = {
    DeviceStatus.SUSPENDED: CloseCode.SUSPENDED,
    DeviceStatus.REVOKED: CloseCode.REVOKED,
    DeviceStatus.DECOMMISSIONED: CloseCode.REVOKED,
}


def close_code_for(status: DeviceStatus | None) -> CloseCode | None:
    """How a session ends when its device moves to ``status``; None: it goes on (active, or
    quarantined, whose frames the pipeline sets apart). A device gone from the store ends."""
    if status is None:
        return CloseCode.REVOKED
    return _CLOSE_FOR_STATUS.get(status)


class CredentialCheck(Protocol):
    """Reads the current credentials of live sessions. Safe for concurrent use."""

    async def current(self, live: Sequence[tuple[str, str]]) -> Credentials:
        """``live``: (device id, certificate serial) of each live session."""
        ...


@dataclass(eq=False)
class LiveSession:
    """One established session. ``closer`` ends the transport; it is called at most once.
    ``sender`` (set by a transport that carries commands down) sends one binary message;
    :meth:`send` serialises it with the session's replies.

    ``send_timeout`` (seconds, set by the transport; None: unbounded) bounds each
    :meth:`send`, its wait behind the session's other sends included. A send that takes
    longer means the device does not read what it is sent (a WebSocket peer that stopped
    reading fills the server's buffers, and a write then waits for them to drain, for ever):
    the session is closed (``SEND_TIMEOUT``) and the send reports False.

    ``superseded_by`` is set when a newer session of the device superseded this silent one
    and the transport keeps it open under watch until its idle deadline: a message on it
    before then means its TCU was alive, a copy of the key took it over (the transport hands
    it to :meth:`Gateway.superseded_heard`, never to the pipeline)."""

    session: DeviceSession
    last_activity: datetime
    closer: Callable[[CloseCode], Awaitable[None]] = field(repr=False)
    closed_with: CloseCode | None = None
    sender: Callable[[bytes], Awaitable[None]] | None = field(default=None, repr=False)
    # Command results this session sent that changed no job (refused, or nothing to
    # change): each one cost an audited write; past a small budget the session ends.
    refused_results: int = 0
    send_timeout: float | None = None
    superseded_by: OtherSession | None = None
    _sending: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    # Sends begun and not finished. A healthy WebSocket write finishes without yielding to
    # the event loop, so another task that sees one pending sees a session whose writes wait.
    _pending: int = field(default=0, repr=False)

    def touch(self, now: datetime) -> None:
        self.last_activity = now

    @property
    def sending(self) -> bool:
        """A send is under way (on a WebSocket: waiting for the peer to drain its buffers)."""
        return self._pending > 0

    async def send(self, message: bytes) -> bool:
        """Send ``message`` down the session; False when it is closed, cannot send, or the
        send did not finish within ``send_timeout`` (the session is then closed)."""
        if self.sender is None or self.closed_with is not None:
            return False
        self._pending += 1
        try:
            async with asyncio.timeout(self.send_timeout):
                async with self._sending:
                    if self.closed_with is not None:
                        return False
                    await self.sender(message)
        except TimeoutError:
            logger.warning(
                "gateway.send_timeout",
                session_id=self.session.session_id,
                timeout_s=self.send_timeout,
            )
            await self.close(CloseCode.SEND_TIMEOUT)
            return False
        finally:
            self._pending -= 1
        return True

    @property
    def idle_code(self) -> CloseCode:
        """How the session ends when nothing arrived within the idle timeout: a superseded
        one was not heard from again (its TCU was gone), an open one idled."""
        return CloseCode.IDLE if self.superseded_by is None else CloseCode.SUPERSEDED

    def other(self) -> OtherSession:
        return OtherSession(self.session.session_id, self.session.peer, self.last_activity)

    async def close(self, code: CloseCode) -> None:
        if self.closed_with is not None:
            return
        self.closed_with = code
        await self.closer(code)


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of :meth:`SessionRegistry.claim` (the new session is registered).

    ``live``: other sessions of the device heard from within the liveness window, still
    registered (evidence for the clone rules). ``silent``: sessions presumed dead, and
    ``handed_over``: sessions of a certificate the new one's rotation replaces; both were
    removed from the registry and the caller closes them.
    """

    live: tuple[LiveSession, ...] = ()
    silent: tuple[LiveSession, ...] = ()
    handed_over: tuple[LiveSession, ...] = ()


class SessionLimitReached(Exception):
    """The device already holds as many live sessions as allowed; nothing was changed."""


class SessionRegistry:
    def __init__(
        self,
        clock: Clock,
        check: CredentialCheck,
        observer: SessionObserver,
        *,
        liveness_window: timedelta,
        poll_interval: timedelta,
        max_sessions: int = 2,
    ) -> None:
        if max_sessions < 2:
            # A second live session is the concurrent-session clone finding: refusing it would
            # leave a copy of the key undetected. The cap bounds what comes after the finding.
            raise ValueError("a device must be allowed at least two live sessions")
        self._max_sessions = max_sessions
        self._clock = clock
        self._check = check
        self._observer = observer
        self._window = liveness_window
        self._poll = poll_interval.total_seconds()
        self._by_device: dict[str, dict[str, LiveSession]] = {}
        # vehicle id -> device id of its sessions (a vehicle has one live device identity).
        self._device_of: dict[str, str] = {}
        # The status the observer was last told about, per device with live sessions.
        self._known: dict[str, DeviceStatus] = {}
        # Status changes learned so far (a running count), and the count at each device's
        # latest: a store read begun before a device's latest change cannot overrule it.
        self._changes = 0
        self._changed_at: dict[str, int] = {}
        # Devices the observer was last told are QUARANTINED (or holds apart since its start),
        # kept after their sessions end: the pipeline's quarantine outlives them, so a device
        # released elsewhere (the CLI, another replica) meanwhile is released by the active
        # admission of its next session here. Only devices ever quarantined: small.
        self._set_apart: set[str] = set()
        # Sessions superseded while silent and kept open under watch (session id -> session):
        # never commandable nor counted, but closed with their device (close_device).
        self._watched: dict[str, LiveSession] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._failed_checks = 0

    def __len__(self) -> int:
        return sum(len(sessions) for sessions in self._by_device.values())

    def sessions(self, device_id: str) -> list[LiveSession]:
        return list(self._by_device.get(device_id, {}).values())

    def commandable(self, vehicle_id: str) -> LiveSession | None:
        """The session a command for ``vehicle_id`` may go down: open, able to send, with no
        send waiting, of a device last known ACTIVE (never a quarantined one: its credentials
        may be a clone's), the one heard from most recently. None: the vehicle is not
        reachable here."""
        device_id = self._device_of.get(vehicle_id)
        if device_id is None or self._known.get(device_id, DeviceStatus.ACTIVE) is not (
            DeviceStatus.ACTIVE
        ):
            return None
        candidates = [
            s
            for s in self._by_device.get(device_id, {}).values()
            # Not one whose writes wait (a peer that stopped reading): a job sealed for it
            # would be marked delivered and sit behind them until the send timeout.
            if s.closed_with is None and s.sender is not None and not s.sending
        ]
        return max(candidates, key=lambda s: s.last_activity, default=None)

    def vehicles(self) -> set[str]:
        """Vehicles with a live session here."""
        return set(self._device_of)

    def all_sessions(self) -> list[LiveSession]:
        """Every session registered here."""
        return [s for sessions in self._by_device.values() for s in sessions.values()]

    def claim(
        self,
        new: LiveSession,
        *,
        status: DeviceStatus,
        handover_serials: frozenset[str] = frozenset(),
        live_elsewhere: int = 0,
    ) -> Claim:
        """Register ``new`` (of a device admitted with ``status``) and sort the device's
        other sessions into live, silent and handed over.

        Raises :class:`SessionLimitReached`, registering and releasing nothing, when the
        device's live sessions (silent and handed-over ones do not count: they end here),
        with the ``live_elsewhere`` that other replicas hold (``gateway.directory``),
        already number ``max_sessions``. A clone finding keeps the sessions open, so without
        this one stolen key could hold any number of them."""
        now = self._clock.now()
        device_id = new.session.device_id
        existing = self.sessions(device_id)
        handed_over = tuple(s for s in existing if s.session.certificate_serial in handover_serials)
        rest = [s for s in existing if s not in handed_over]
        silent = tuple(s for s in rest if now - s.last_activity >= self._window)
        live = tuple(s for s in rest if s not in silent)
        if len(live) + live_elsewhere >= self._max_sessions:
            raise SessionLimitReached()
        for old in handed_over + silent:
            self.release(old)
        self._by_device.setdefault(device_id, {})[new.session.session_id] = new
        self._device_of[new.session.vehicle_id] = device_id
        if status is DeviceStatus.ACTIVE and self._known.get(device_id) is (
            DeviceStatus.QUARANTINED
        ):
            # The admission read may predate a quarantine learned here since (a concurrent
            # handshake's clone finding): it must not release it. An operator's release
            # arrives through apply() or the watcher.
            status = DeviceStatus.QUARANTINED
        self.status_changed(device_id, status, "admitted")
        self._ensure_watcher()
        return Claim(live, silent, handed_over)

    def watch(self, old: LiveSession, by: LiveSession) -> None:
        """``old``, taken out by a claim as silent, was superseded by ``by`` and stays open
        under watch (see :attr:`LiveSession.superseded_by`) until it ends (:meth:`release`)."""
        old.superseded_by = by.other()
        if old.closed_with is None:
            self._watched[old.session.session_id] = old

    def release(self, live: LiveSession) -> None:
        """Forget ``live`` (idempotent)."""
        if self._watched.get(live.session.session_id) is live:
            del self._watched[live.session.session_id]
        device_id = live.session.device_id
        sessions = self._by_device.get(device_id)
        if sessions is None or sessions.get(live.session.session_id) is not live:
            return
        del sessions[live.session.session_id]
        if not sessions:
            del self._by_device[device_id]
            self._known.pop(device_id, None)
            self._changed_at.pop(device_id, None)
            if self._device_of.get(live.session.vehicle_id) == device_id:
                del self._device_of[live.session.vehicle_id]
        if not self._by_device:
            self._wake.set()

    def status_of(self, device_id: str) -> DeviceStatus | None:
        """The status last known for a device with live sessions (None: none here)."""
        return self._known.get(device_id)

    def set_apart(self, device_id: str) -> None:
        """The observer holds ``device_id`` apart already (seeded from the store at start):
        its next session here, if admitted active, releases it."""
        self._set_apart.add(device_id)

    def status_changed(self, device_id: str, status: DeviceStatus, reason: str) -> None:
        """Tell the observer when a device with live sessions changed between active and
        quarantined (a device first seen is taken to have been as the observer was last
        told: quarantined if it was set apart, else active)."""
        if device_id not in self._by_device:
            return
        last_told = (
            DeviceStatus.QUARANTINED if device_id in self._set_apart else DeviceStatus.ACTIVE
        )
        before = self._known.get(device_id, last_told)
        self._known[device_id] = status
        if status is before:
            return
        self._changes += 1
        self._changed_at[device_id] = self._changes
        self._tell(device_id, status, reason)

    def _tell(self, device_id: str, status: DeviceStatus, reason: str) -> None:
        try:
            self._observer.device_status_changed(device_id, status, reason)
        except Exception as exc:  # the observer's failure must not take the gateway down
            logger.error("gateway.observer_failed", error=type(exc).__name__)
            return  # not remembered as told: the device's next first session tells it again
        if status is DeviceStatus.QUARANTINED:
            self._set_apart.add(device_id)
        else:
            self._set_apart.discard(device_id)

    async def apply(self, device_id: str, status: DeviceStatus, reason: str) -> None:
        """A lifecycle change committed in this process: close or inform the sessions."""
        code = close_code_for(status)
        if code is None:
            if device_id in self._by_device:
                self.status_changed(device_id, status, reason)
            else:
                # No session here, but the pipeline's quarantine outlives sessions: a release
                # committed now must reach it, or the device's next session (admitted active,
                # which is no change to the registry) would stay set apart for good.
                self._tell(device_id, status, reason)
        else:
            await self.close_device(device_id, code)

    async def close_device(self, device_id: str, code: CloseCode) -> int:
        """Close every session of ``device_id``, those under watch too; returns how many."""
        sessions = self.sessions(device_id)
        watched = [w for w in self._watched.values() if w.session.device_id == device_id]
        for live in sessions + watched:
            self.release(live)
        for live in sessions + watched:
            await live.close(code)
        return len(sessions) + len(watched)

    async def idle(self) -> None:
        """Wait until the watcher has stopped (no session is live)."""
        if self._watcher is not None:
            self._wake.set()
            await self._watcher

    def _ensure_watcher(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._wake.clear()
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(), name="gateway-credential-watcher"
            )

    async def _watch(self) -> None:
        while self._by_device:
            # Woken early when the last session ends; otherwise a sweep every poll interval.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._poll)
            self._wake.clear()
            if not self._by_device:
                return
            await self._sweep()

    async def _sweep(self) -> None:
        current = [live for sessions in self._by_device.values() for live in sessions.values()]
        read_at = self._changes
        try:
            credentials = await self._check.current(
                [(s.session.device_id, s.session.certificate_serial) for s in current]
            )
        except Exception as exc:  # any failure of the check counts against the sessions
            self._failed_checks += 1
            logger.warning(
                "gateway.credential_check_failed",
                error=type(exc).__name__,
                consecutive=self._failed_checks,
            )
            if self._failed_checks >= MAX_FAILED_CHECKS:
                # Fail closed, after a grace that rides out a brief store hiccup: sessions
                # whose credentials cannot be re-checked do not stay open indefinitely.
                for live in current:
                    self.release(live)
                    await live.close(CloseCode.INTERNAL)
            return
        self._failed_checks = 0
        for live in current:
            device_id = live.session.device_id
            status = credentials.statuses.get(device_id)
            code = close_code_for(status)
            if live.session.certificate_serial in credentials.withdrawn_serials:
                code = CloseCode.REVOKED
            if code is not None:
                self.release(live)
                await live.close(code)
            elif status is not None and self._changed_at.get(device_id, 0) <= read_at:
                # Only when nothing changed here since the read began: a quarantine committed
                # meanwhile (a clone finding) is newer than the "active" read before it, and
                # releasing it would let a suspected clone's frames and answers through until
                # the next sweep. The next sweep reads again.
                self.status_changed(device_id, status, "changed-elsewhere")
