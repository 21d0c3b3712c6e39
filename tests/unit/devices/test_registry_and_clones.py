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
from fleetward.devices.admission import Withdrawal
from fleetward.devices.clones import CloneRules, OtherSession
from fleetward.devices.models import DeviceStatus, IncidentKind
from fleetward.gateway.handshake import CloseCode
from fleetward.gateway.registry import (
    MAX_FAILED_CHECKS,
    LiveSession,
    SessionRegistry,
    close_code_for,
)
from fleetward.gateway.session import DeviceSession, Transport

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
WINDOW = timedelta(seconds=30)


class FakeCheck:
    def __init__(self) -> None:
        self.withdraw: dict[str, DeviceStatus | None] = {}
        self.failures = 0
        self.calls = 0

    async def withdrawn(self, live: Sequence[tuple[str, str, str]]) -> list[Withdrawal]:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise ConnectionError("store unreachable")
        return [Withdrawal(sid, self.withdraw[sid]) for sid, _, _ in live if sid in self.withdraw]


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
def registry(clock: FrozenClock, check: FakeCheck) -> SessionRegistry:
    return SessionRegistry(
        clock, check, liveness_window=WINDOW, poll_interval=timedelta(milliseconds=20)
    )


async def test_a_second_live_session_of_a_device_is_not_registered(
    registry: SessionRegistry, clock: FrozenClock
) -> None:
    first, _ = _live(clock, "ses_1")
    second, _ = _live(clock, "ses_2")
    other_device, _ = _live(clock, "ses_3", device="dev_b")
    assert registry.claim(first).registered
    assert registry.claim(other_device).registered  # another device is no conflict
    clock.advance(WINDOW - timedelta(seconds=1))
    claim = registry.claim(second)
    assert (claim.registered, claim.live) == (False, (first,))
    assert registry.sessions("dev_a") == [first]
    await registry.close_device("dev_a", CloseCode.REVOKED)
    await registry.close_device("dev_b", CloseCode.REVOKED)
    await registry.idle()


async def test_a_silent_session_is_superseded(
    registry: SessionRegistry, clock: FrozenClock
) -> None:
    first, _ = _live(clock, "ses_1")
    registry.claim(first)
    first.touch(clock.now() + timedelta(seconds=5))  # heard from, then silent
    clock.advance(WINDOW + timedelta(seconds=5))
    second, _ = _live(clock, "ses_2")
    claim = registry.claim(second)
    assert (claim.registered, claim.silent, claim.live) == (True, (first,), ())
    assert registry.sessions("dev_a") == [second]
    registry.release(first)  # the superseded session ending later removes nothing
    assert registry.sessions("dev_a") == [second]
    registry.release(second)
    await registry.idle()


async def test_rotation_hands_over_instead_of_conflicting(
    registry: SessionRegistry, clock: FrozenClock
) -> None:
    old, _ = _live(clock, "ses_1", serial="old")
    new, _ = _live(clock, "ses_2", serial="new")
    registry.claim(old)
    claim = registry.claim(new, handover_serials=frozenset({"old"}))
    assert (claim.registered, claim.handed_over) == (True, (old,))
    registry.release(new)
    await registry.idle()


async def test_close_device_closes_every_session_once(
    registry: SessionRegistry, clock: FrozenClock
) -> None:
    live, closed = _live(clock, "ses_1")
    registry.claim(live)
    assert await registry.close_device("dev_a", CloseCode.SUSPENDED) == 1
    assert await registry.close_device("dev_a", CloseCode.REVOKED) == 0
    await live.close(CloseCode.REVOKED)
    assert closed.codes == [CloseCode.SUSPENDED]
    assert len(registry) == 0
    await registry.idle()


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (DeviceStatus.REVOKED, CloseCode.REVOKED),
        (DeviceStatus.DECOMMISSIONED, CloseCode.REVOKED),
        (DeviceStatus.SUSPENDED, CloseCode.SUSPENDED),
        (DeviceStatus.QUARANTINED, CloseCode.QUARANTINED),
        (None, CloseCode.REVOKED),  # the certificate was revoked or expired
    ],
)
async def test_watcher_closes_sessions_whose_credential_was_withdrawn(
    registry: SessionRegistry,
    clock: FrozenClock,
    check: FakeCheck,
    status: DeviceStatus | None,
    code: CloseCode,
) -> None:
    kept, kept_closed = _live(clock, "ses_1", device="dev_keep")
    withdrawn, closed = _live(clock, "ses_2", device="dev_gone")
    registry.claim(kept)
    registry.claim(withdrawn)
    check.withdraw["ses_2"] = status
    async with asyncio.timeout(2):
        while not closed.codes:  # noqa: ASYNC110 - polling the fake's effect
            await asyncio.sleep(0.01)
    assert closed.codes == [code] and close_code_for(status) == code
    assert kept_closed.codes == [] and registry.sessions("dev_keep") == [kept]
    registry.release(kept)
    await registry.idle()


async def test_watcher_fails_closed_only_after_repeated_failures(
    registry: SessionRegistry, clock: FrozenClock, check: FakeCheck
) -> None:
    live, closed = _live(clock, "ses_1")
    check.failures = MAX_FAILED_CHECKS - 1
    registry.claim(live)
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
