"""The live-session registry and the clone rules, without a network or a store.

The registry decides what counts as "the same device, twice, at once"; the clone rules decide
when that (or a change of network) is a clone. Both are pure enough to test exhaustively here;
the integration tests prove them against the real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from fleetward.core.clock import FrozenClock
from fleetward.devices.admission import Credentials
from fleetward.devices.clones import CloneRules, OtherSession
from fleetward.devices.models import DeviceStatus, IncidentKind
from fleetward.gateway.handshake import CloseCode
from fleetward.gateway.registry import (
    MAX_FAILED_CHECKS,
    LiveSession,
    SessionRegistry,
)
from fleetward.gateway.session import DeviceSession, Transport

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=30)


class FakeCheck:
    """The store as the watcher sees it: every device active unless told otherwise."""

    def __init__(self) -> None:
        self.statuses: dict[str, DeviceStatus | None] = {}
        self.withdrawn: set[str] = set()
        self.failures = 0
        self.calls = 0

    async def current(self, live: Sequence[tuple[str, str]]) -> Credentials:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store unreachable")
        statuses = {
            device: status
            for device, _ in live
            if (status := self.statuses.get(device, DeviceStatus.ACTIVE)) is not None
        }
        return Credentials(statuses, frozenset(self.withdrawn))


class FakeObserver:
    def __init__(self) -> None:
        self.changes: list[tuple[str, DeviceStatus]] = []

    def end_session(self, session_id: str) -> None:
        return None

    def device_status_changed(self, device_id: str, status: DeviceStatus, reason: str) -> None:
        self.changes.append((device_id, status))


class Closed:
    def __init__(self) -> None:
        self.codes: list[CloseCode] = []

    async def __call__(self, code: CloseCode) -> None:
        self.codes.append(code)


def _live(
    clock: FrozenClock, session_id: str, *, device: str = "dev_a", serial: str = "s1"
) -> tuple[LiveSession, Closed]:
    closed = Closed()
    session = DeviceSession(
        session_id=session_id,
        device_id=device,
        vehicle_id="veh_a",
        tenant_id="ten_a",
        certificate_serial=serial,
        session_key=bytes(32),
        transport=Transport.WEBSOCKET,
        peer="10.0.0.1",
        software_version="1",
        vehicle_config="c",
        established_at=clock.now(),
    )
    return LiveSession(session, clock.now(), closed), closed


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(T0)


@pytest.fixture
def check() -> FakeCheck:
    return FakeCheck()


@pytest.fixture
def observer() -> FakeObserver:
    return FakeObserver()


@pytest.fixture
def registry(clock: FrozenClock, check: FakeCheck, observer: FakeObserver) -> SessionRegistry:
    return SessionRegistry(
        clock, check, observer, liveness_window=WINDOW, poll_interval=timedelta(milliseconds=20)
    )


ACTIVE = DeviceStatus.ACTIVE


async def _two_more_sweeps(check: FakeCheck) -> None:
    """Until the watcher has read the store twice more (one whole sweep after this point)."""
    calls = check.calls
    async with asyncio.timeout(2):
        while check.calls < calls + 2:  # noqa: ASYNC110 - polling the fake's effect
            await asyncio.sleep(0.01)


async def test_a_second_live_session_of_a_device_is_reported(
    registry: SessionRegistry, clock: FrozenClock
) -> None:
    first, _ = _live(clock, "ses_1")
    second, _ = _live(clock, "ses_2")
    other_device, _ = _live(clock, "ses_3", device="dev_b")
    assert registry.claim(first, status=ACTIVE).live == ()
    assert registry.claim(other_device, status=ACTIVE).live == ()  # another device: no clash
    clock.advance(WINDOW - timedelta(seconds=1))
    claim = registry.claim(second, status=ACTIVE)
    assert (claim.live, claim.silent) == ((first,), ())
    # Both stay: the clone rules judge, quarantine keeps the sessions, the pipeline sets apart.
    assert registry.sessions("dev_a") == [first, second]
    await registry.close_device("dev_a", CloseCode.REVOKED)
    await registry.close_device("dev_b", CloseCode.REVOKED)
    await registry.idle()


async def test_a_silent_session_is_superseded(
    registry: SessionRegistry, clock: FrozenClock
) -> None:
    first, _ = _live(clock, "ses_1")
    registry.claim(first, status=ACTIVE)
    first.touch(clock.now() + timedelta(seconds=5))  # heard from, then silent
    clock.advance(WINDOW + timedelta(seconds=5))
    second, _ = _live(clock, "ses_2")
    claim = registry.claim(second, status=ACTIVE)
    assert (claim.silent, claim.live) == ((first,), ())
    assert registry.sessions("dev_a") == [second]
    registry.release(first)  # the superseded session ending later removes nothing
    assert registry.sessions("dev_a") == [second]
    registry.release(second)
    await registry.idle()


async def test_a_superseded_session_under_watch_is_closed_with_its_device(
    registry: SessionRegistry, clock: FrozenClock
) -> None:
    # A silent session superseded is kept open under watch (its TCU may be a parked car that
    # speaks again): out of the registry's count and commands, but a revocation must still
    # reach it, or a revoked device's connection would stay open until its idle deadline.
    first, first_closed = _live(clock, "ses_1")
    registry.claim(first, status=ACTIVE)
    clock.advance(WINDOW + timedelta(seconds=1))
    second, second_closed = _live(clock, "ses_2")
    claim = registry.claim(second, status=ACTIVE)
    registry.watch(claim.silent[0], second)
    assert first.superseded_by == second.other() and first.idle_code is CloseCode.SUPERSEDED
    assert second.idle_code is CloseCode.IDLE
    assert registry.sessions("dev_a") == [second]
    assert await registry.close_device("dev_a", CloseCode.REVOKED) == 2
    assert first_closed.codes == [CloseCode.REVOKED] and second_closed.codes == [CloseCode.REVOKED]
    # Once ended (released), a watched session is forgotten.
    third, third_closed = _live(clock, "ses_3")
    registry.claim(third, status=ACTIVE)
    clock.advance(WINDOW + timedelta(seconds=1))
    fourth, _ = _live(clock, "ses_4")
    registry.watch(registry.claim(fourth, status=ACTIVE).silent[0], fourth)
    registry.release(third)
    assert await registry.close_device("dev_a", CloseCode.REVOKED) == 1
    assert third_closed.codes == []
    await registry.idle()


async def test_rotation_hands_over_instead_of_conflicting(
    registry: SessionRegistry, clock: FrozenClock
) -> None:
    old, _ = _live(clock, "ses_1", serial="old")
    new, _ = _live(clock, "ses_2", serial="new")
    registry.claim(old, status=ACTIVE)
    claim = registry.claim(new, status=ACTIVE, handover_serials=frozenset({"old"}))
    assert (claim.handed_over, claim.live) == ((old,), ())
    assert registry.sessions("dev_a") == [new]
    registry.release(new)
    await registry.idle()


async def test_close_device_closes_every_session_once(
    registry: SessionRegistry, clock: FrozenClock
) -> None:
    live, closed = _live(clock, "ses_1")
    registry.claim(live, status=ACTIVE)
    assert await registry.close_device("dev_a", CloseCode.SUSPENDED) == 1
    assert await registry.close_device("dev_a", CloseCode.REVOKED) == 0
    await live.close(CloseCode.REVOKED)
    assert closed.codes == [CloseCode.SUSPENDED]
    assert len(registry) == 0
    await registry.idle()


WATCHED: list[tuple[str, DeviceStatus | None, bool, CloseCode | None]] = [
    # Changes made by another process reach the sessions within a poll interval.
    ("revoked", DeviceStatus.REVOKED, False, CloseCode.REVOKED),
    ("decommissioned", DeviceStatus.DECOMMISSIONED, False, CloseCode.REVOKED),
    ("suspended", DeviceStatus.SUSPENDED, False, CloseCode.SUSPENDED),
    ("device-gone", None, False, CloseCode.REVOKED),
    ("certificate-revoked", ACTIVE, True, CloseCode.REVOKED),
    # Quarantine keeps the session (the pipeline sets its frames apart) and is reported.
    ("quarantined", DeviceStatus.QUARANTINED, False, None),
]


@pytest.mark.parametrize(
    ("case", "status", "withdrawn", "code"), WATCHED, ids=[w[0] for w in WATCHED]
)
async def test_watcher_applies_changes_made_elsewhere(
    registry: SessionRegistry,
    clock: FrozenClock,
    check: FakeCheck,
    observer: FakeObserver,
    case: str,
    status: DeviceStatus | None,
    withdrawn: bool,
    code: CloseCode | None,
) -> None:
    kept, kept_closed = _live(clock, "ses_1", device="dev_keep", serial="s-keep")
    changed, closed = _live(clock, "ses_2", device="dev_changed", serial="s-changed")
    registry.claim(kept, status=ACTIVE)
    registry.claim(changed, status=ACTIVE)
    check.statuses["dev_changed"] = status
    if withdrawn:
        check.withdrawn.add("s-changed")
    await _two_more_sweeps(check)
    assert closed.codes == ([code] if code else [])
    assert registry.sessions("dev_changed") == ([] if code else [changed])
    expected = [("dev_changed", DeviceStatus.QUARANTINED)] if case == "quarantined" else []
    assert observer.changes == expected
    assert kept_closed.codes == [] and registry.sessions("dev_keep") == [kept]
    await registry.close_device("dev_keep", CloseCode.REVOKED)
    await registry.close_device("dev_changed", CloseCode.REVOKED)
    await registry.idle()


async def test_apply_closes_or_informs(
    registry: SessionRegistry, clock: FrozenClock, observer: FakeObserver
) -> None:
    live, closed = _live(clock, "ses_1")
    registry.claim(live, status=DeviceStatus.QUARANTINED)
    # The first session of an already quarantined device is reported as such.
    assert observer.changes == [("dev_a", DeviceStatus.QUARANTINED)]
    await registry.apply("dev_a", ACTIVE, "false-positive")  # an operator's release
    assert observer.changes[-1] == ("dev_a", ACTIVE) and closed.codes == []
    await registry.apply("dev_a", DeviceStatus.SUSPENDED, "check")
    assert closed.codes == [CloseCode.SUSPENDED] and registry.sessions("dev_a") == []
    await registry.idle()


async def test_a_release_reaches_the_observer_without_a_live_session(
    registry: SessionRegistry, clock: FrozenClock, observer: FakeObserver
) -> None:
    live, _closed = _live(clock, "ses_1")
    registry.claim(live, status=ACTIVE)
    registry.status_changed("dev_a", DeviceStatus.QUARANTINED, "telemetry-repeated-rejections")
    registry.release(live)  # the session ended; the pipeline keeps the device set apart
    # An operator's release committed while the device has no session here: without it the
    # pipeline kept the device's frames apart for good (its next session is admitted active,
    # which the registry takes for no change), and its data never reached telemetry again.
    await registry.apply("dev_a", ACTIVE, "false-positive")
    assert observer.changes[-1] == ("dev_a", ACTIVE)
    await registry.idle()


class SlowCheck(FakeCheck):
    """A credential read that answers what the store said when it read, but returns only
    once the test lets it: something may happen in this process meanwhile."""

    def __init__(self) -> None:
        super().__init__()
        self.read = asyncio.Event()
        self.answer = asyncio.Event()

    async def current(self, live: Sequence[tuple[str, str]]) -> Credentials:
        credentials = await super().current(live)
        self.read.set()
        await self.answer.wait()
        return credentials


QUARANTINED = DeviceStatus.QUARANTINED


async def test_a_sweep_read_before_a_quarantine_does_not_release_it(
    clock: FrozenClock, observer: FakeObserver
) -> None:
    check = SlowCheck()
    registry = SessionRegistry(
        clock, check, observer, liveness_window=WINDOW, poll_interval=timedelta(milliseconds=20)
    )
    live, closed = _live(clock, "ses_1")
    registry.claim(live, status=ACTIVE)
    async with asyncio.timeout(2):
        await check.read.wait()  # the sweep has read "active"...
    # ...and, before it answers, a clone finding in this process committed the quarantine.
    check.statuses["dev_a"] = QUARANTINED
    registry.status_changed("dev_a", QUARANTINED, "clone-concurrent-session")
    check.answer.set()
    await _two_more_sweeps(check)
    # The stale "active" never released the device, not even until the next sweep.
    assert observer.changes == [("dev_a", QUARANTINED)]
    assert registry.status_of("dev_a") is QUARANTINED and closed.codes == []
    await registry.close_device("dev_a", CloseCode.REVOKED)
    await registry.idle()


async def test_an_admission_read_before_a_quarantine_does_not_release_it(
    registry: SessionRegistry, clock: FrozenClock, observer: FakeObserver
) -> None:
    first, _ = _live(clock, "ses_1")
    second, _ = _live(clock, "ses_2")
    registry.claim(first, status=ACTIVE)
    # A concurrent handshake's clone finding committed the quarantine...
    registry.status_changed("dev_a", QUARANTINED, "clone-concurrent-session")
    # ...after this handshake's admission had read the device as active.
    registry.claim(second, status=ACTIVE)
    assert observer.changes == [("dev_a", QUARANTINED)]
    assert registry.status_of("dev_a") is QUARANTINED
    await registry.close_device("dev_a", CloseCode.REVOKED)
    await registry.idle()


async def test_a_release_made_elsewhere_reaches_the_observer_at_the_next_session(
    registry: SessionRegistry, clock: FrozenClock, observer: FakeObserver
) -> None:
    first, _ = _live(clock, "ses_1")
    registry.claim(first, status=QUARANTINED)  # the pipeline sets the device apart
    registry.release(first)  # the session ended; the pipeline's quarantine outlives it
    # Resumed by the CLI or another replica while the device had no session here: nothing
    # here heard of it. Its next session, admitted active, must lift the pipeline's
    # quarantine, or every frame of it went on to the quarantine table for good.
    second, _ = _live(clock, "ses_2")
    registry.claim(second, status=ACTIVE)
    assert observer.changes == [("dev_a", QUARANTINED), ("dev_a", ACTIVE)]
    assert registry.status_of("dev_a") is ACTIVE
    # Told once: the next session of the active device is no news.
    registry.release(second)
    third, _ = _live(clock, "ses_3")
    registry.claim(third, status=ACTIVE)
    assert observer.changes == [("dev_a", QUARANTINED), ("dev_a", ACTIVE)]
    registry.release(third)
    await registry.idle()


async def test_a_device_set_apart_before_start_is_released_by_an_active_admission(
    registry: SessionRegistry, clock: FrozenClock, observer: FakeObserver
) -> None:
    # The pipeline is seeded at start with the devices the store had quarantined; one
    # resumed since (while it had no session here) is admitted active: the pipeline is told.
    registry.set_apart("dev_a")
    live, _ = _live(clock, "ses_1")
    registry.claim(live, status=ACTIVE)
    assert observer.changes == [("dev_a", ACTIVE)]
    registry.release(live)
    await registry.idle()


async def test_watcher_fails_closed_only_after_repeated_failures(
    registry: SessionRegistry, clock: FrozenClock, check: FakeCheck
) -> None:
    live, closed = _live(clock, "ses_1")
    check.failures = MAX_FAILED_CHECKS - 1
    registry.claim(live, status=ACTIVE)
    async with asyncio.timeout(2):
        while check.calls <= MAX_FAILED_CHECKS:  # noqa: ASYNC110 - polling the fake's effect
            await asyncio.sleep(0.01)
    assert closed.codes == []  # a brief store hiccup does not drop the fleet
    check.failures = MAX_FAILED_CHECKS
    async with asyncio.timeout(2):
        while not closed.codes:  # noqa: ASYNC110 - polling the fake's effect
            await asyncio.sleep(0.01)
    assert closed.codes == [CloseCode.INTERNAL]
    await registry.idle()


def _other(peer: str, age: timedelta) -> OtherSession:
    return OtherSession("ses_other", peer, T0 - age)


CLONE_CASES: list[tuple[str, dict[str, object], IncidentKind | None]] = [
    # A first session, or a device heard from long ago: nothing to compare.
    ("first-session", {"last_peer": None, "last_seen_at": None}, None),
    # The same identity live elsewhere, on any network: two devices hold one key.
    (
        "concurrent-same-peer",
        {"live_sessions": [_other("10.0.0.1", timedelta(0))]},
        IncidentKind.CONCURRENT_SESSION,
    ),
    (
        "concurrent-other-peer",
        {"live_sessions": [_other("10.9.9.9", timedelta(0))]},
        IncidentKind.CONCURRENT_SESSION,
    ),
    # Another network within the window: the old one was heard from moments ago.
    (
        "peer-changed-quickly",
        {"last_peer": "10.9.9.9", "last_seen_at": T0 - timedelta(seconds=5)},
        IncidentKind.PEER_CHANGED,
    ),
    # A reconnect from the same network, right away, is what a genuine TCU does.
    (
        "same-peer-quickly",
        {"last_peer": "10.0.0.1", "last_seen_at": T0 - timedelta(seconds=1)},
        None,
    ),
    # Another network after the window: roaming, documented as allowed.
    ("peer-changed-later", {"last_peer": "10.9.9.9", "last_seen_at": T0 - WINDOW}, None),
]


@pytest.mark.parametrize(("case", "facts", "kind"), CLONE_CASES, ids=[c[0] for c in CLONE_CASES])
def test_clone_rules(case: str, facts: dict[str, object], kind: IncidentKind | None) -> None:
    arguments: dict[str, object] = {
        "peer": "10.0.0.1",
        "now": T0,
        "live_sessions": [],
        "last_peer": "10.0.0.1",
        "last_seen_at": T0 - timedelta(hours=1),
    }
    arguments.update(facts)
    suspicion = CloneRules(WINDOW).assess(**arguments)  # type: ignore[arg-type]
    assert (suspicion.kind if suspicion else None) is kind


async def test_a_send_that_does_not_drain_closes_the_session_and_seals_nothing_for_it(
    clock: FrozenClock, registry: SessionRegistry
) -> None:
    # A peer that stops reading: the transport's write never finishes. While it waits the
    # session is not commandable (a job sealed for it would be marked delivered and sit
    # behind it); past the send timeout the session is closed and nothing more is written.
    live, closed = _live(clock, "ses_1")
    written: list[bytes] = []
    drained = asyncio.Event()

    async def stalled(message: bytes) -> None:
        await drained.wait()  # never set: the peer never reads
        written.append(message)

    live.sender = stalled
    live.send_timeout = 0.2
    registry.claim(live, status=ACTIVE)
    assert registry.commandable("veh_a") is live
    first = asyncio.create_task(live.send(b"reply"))
    second = asyncio.create_task(live.send(b"command"))  # queued behind it
    await asyncio.sleep(0)
    assert live.sending and registry.commandable("veh_a") is None
    assert await first is False and await second is False
    assert closed.codes == [CloseCode.SEND_TIMEOUT] and live.closed_with is CloseCode.SEND_TIMEOUT
    assert written == [] and not live.sending
    assert registry.commandable("veh_a") is None  # closed: the vehicle's jobs stay queued
    registry.release(live)
