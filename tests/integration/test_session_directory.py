"""Replicas share where a device's sessions are (gateway/directory.py, over the real Redis):
a copy of a device's key that connects to another replica than the genuine device is the
concurrent-session clone finding, the session cap counts every replica's sessions, and what
ended, went silent or hands over to a rotated certificate elsewhere is no evidence.

Redis is required (FLEETWARD_REQUIRE_SERVICES in CI)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from redis.asyncio import Redis
from sqlalchemy import select

from conftest import T0, require_service
from fleetward.app import build_app
from fleetward.audit.events import EventName
from fleetward.devices.clones import DEFAULT_LIVENESS_WINDOW
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import DeviceIncident, DeviceStatus, IncidentKind, KeyAlgorithm
from fleetward.gateway.device_client import (
    DeviceConnection,
    DeviceCredentials,
    HandshakeRefused,
    build_csr,
    connect,
    generate_key,
    websocket_url,
)
from fleetward.gateway.directory import LocalDirectory
from fleetward.gateway.handshake import CloseCode
from fleetward.gateway.redis_directory import RedisSessionDirectory
from fleetward.gateway.registry import LiveSession
from fleetward.gateway.session import DeviceSession, Transport
from fleetward.gateway.websocket import Gateway, gateway_of, install
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.store.engine import create_engine
from support.factories import FACTORY
from support.gateway import CONFIG, FAST, SOFTWARE, RecordingHandler, Server, serving
from support.serve import served

REDIS_URL = os.environ.get("FLEETWARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: other tests' directories never meet its entries."""
    require_service("Redis", REDIS_URL)
    return f"fw:test:devsess:{secrets.token_hex(6)}:"


def _directory(prefix: str, url: str = REDIS_URL) -> RedisSessionDirectory:
    return RedisSessionDirectory(
        Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=0.5),
        liveness_window=DEFAULT_LIVENESS_WINDOW,
        prefix=prefix,
    )


@dataclass
class Replicas:
    a: Server
    b: Gateway
    b_base: str

    async def open_on_b(self, credentials: DeviceCredentials) -> DeviceConnection:
        connection = await connect(
            websocket_url(self.b_base),
            credentials,
            server_id=self.b.server_id,
            software_version=SOFTWARE,
            vehicle_config=CONFIG,
            now=self.a.clock.now,
        )
        self.a.sessions.append(connection)  # closed with A's at the end
        return connection


@pytest.fixture
async def replicas(platform: Platform, free_port: int, prefix: str) -> AsyncIterator[Replicas]:
    """Replica A (the suite's served gateway) and replica B: the same store, settings and
    clock, a process state of its own; one Redis directory between them."""
    async with serving(platform, free_port, FAST) as a:
        url = platform.engine.url.render_as_string(hide_password=False)
        other = Platform.build(platform.settings, clock=platform.clock, engine=create_engine(url))
        app = build_app(platform.settings, platform=other)
        handler = RecordingHandler()
        b = install(app, other, handler=handler, observer=handler, config=FAST)
        a.gateway.directory = _directory(prefix)
        b.directory = _directory(prefix)
        try:
            async with served(app) as b_base:
                yield Replicas(a, b, b_base)
            await b.registry.idle()
        finally:
            await a.gateway.directory.close()


async def _incidents(server: Server) -> list[DeviceIncident]:
    async with server.platform.unit_of_work() as uow:
        return list(await uow.session.scalars(select(DeviceIncident)))


async def _entries(prefix: str, device_id: str) -> set[str]:
    redis = Redis.from_url(REDIS_URL)
    try:
        return {f.decode() for f in await redis.hkeys(f"{prefix}{device_id}")}
    finally:
        await redis.aclose()


async def _until(condition: Callable[[], Awaitable[bool]], tries: int = 150) -> None:
    for _ in range(tries):
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition did not hold in time")


# ------------------------------------------------------------------- through the gateways


async def test_a_copy_on_another_replica_quarantines_the_device(replicas: Replicas) -> None:
    # Threat: the copy of a stolen key connects while the genuine car is online, through a
    # load balancer that sends it to another replica. Each replica alone sees one session.
    a = replicas.a
    credentials = await a.enrol()
    genuine = await a.open(credentials)
    clone = await replicas.open_on_b(credentials)
    device = await a.device(credentials.device_id)
    assert device.status is DeviceStatus.QUARANTINED
    [incident] = await _incidents(a)
    assert incident.kind is IncidentKind.CONCURRENT_SESSION
    assert incident.details == {"session": clone.session_id, "other_sessions": [genuine.session_id]}
    # Neither copy is told, as on one replica: both sessions go on.
    assert await genuine.request(b"a") == b"ack:a" and await clone.request(b"b") == b"ack:b"
    assert genuine.close_code is None and clone.close_code is None


async def test_without_the_directory_the_copy_goes_unseen(
    replicas: Replicas,
) -> None:
    # The same two connections with each replica alone: what the directory is for.
    replicas.a.gateway.directory = LocalDirectory()
    replicas.b.directory = LocalDirectory()
    a = replicas.a
    credentials = await a.enrol()
    await a.open(credentials)
    await replicas.open_on_b(credentials)
    assert (await a.device(credentials.device_id)).status is DeviceStatus.ACTIVE
    assert await _incidents(a) == []


async def test_the_session_cap_counts_every_replicas_sessions(
    replicas: Replicas, prefix: str
) -> None:
    a = replicas.a
    credentials = await a.enrol()
    first = await a.open(credentials)
    second = await replicas.open_on_b(credentials)  # the clone finding; both stay open
    with pytest.raises(HandshakeRefused) as refused:
        await a.open(credentials)  # one here, one on B: the cap of two is reached
    assert refused.value.code == CloseCode.TRY_AGAIN_LATER
    # The refused session left the directory with its refusal.
    assert await _entries(prefix, credentials.device_id) == {first.session_id, second.session_id}


async def test_a_session_that_ended_elsewhere_is_no_evidence(
    replicas: Replicas, prefix: str
) -> None:
    a = replicas.a
    credentials = await a.enrol()
    before = await a.open(credentials)
    await before.close()

    async def left() -> bool:
        return await _entries(prefix, credentials.device_id) == set()

    await _until(left)
    after = await replicas.open_on_b(credentials)  # the car reconnects through B
    assert await after.request(b"x") == b"ack:x"
    assert (await a.device(credentials.device_id)).status is DeviceStatus.ACTIVE


async def test_a_silent_session_elsewhere_is_presumed_dead(replicas: Replicas) -> None:
    a = replicas.a
    credentials = await a.enrol()
    await a.open(credentials)
    a.clock.advance(timedelta(seconds=31))  # past the liveness window: its link is lost
    again = await replicas.open_on_b(credentials)
    assert await again.request(b"x") == b"ack:x"
    assert (await a.device(credentials.device_id)).status is DeviceStatus.ACTIVE
    assert await _incidents(a) == []


async def test_a_rotation_handing_over_to_another_replica_is_no_clone(
    replicas: Replicas,
) -> None:
    a = replicas.a
    credentials = await a.enrol()
    await a.open(credentials)
    key = generate_key(KeyAlgorithm.P256)
    async with a.platform.services() as (uow, ctx):
        lifecycle = DeviceLifecycle(ctx)
        device = await lifecycle.get(credentials.device_id)
        csr = build_csr(key, device_id=device.id, vehicle_id=device.vehicle_id)
        issued = await lifecycle.rotate(device, csr, a.world.ca, actor=FACTORY)
        await uow.commit()
    rotated = credentials.with_certificate(key, issued.certificate_pem)
    new = await replicas.open_on_b(rotated)  # the old session still live on A
    assert await new.request(b"x") == b"ack:x"
    assert (await a.device(credentials.device_id)).status is DeviceStatus.ACTIVE
    assert await _incidents(a) == []


async def test_a_directory_that_cannot_answer_leaves_the_rules_to_the_replica(
    replicas: Replicas, prefix: str
) -> None:
    # Redis gone: the device is still admitted (detection degraded, logged), and this
    # replica's own sessions are still judged.
    replicas.b.directory = _directory(prefix, url="redis://127.0.0.1:1/0")
    credentials = await replicas.a.enrol()
    first = await replicas.open_on_b(credentials)
    assert await first.request(b"x") == b"ack:x"
    assert (await replicas.a.device(credentials.device_id)).status is DeviceStatus.ACTIVE
    await replicas.open_on_b(credentials)
    assert (await replicas.a.device(credentials.device_id)).status is DeviceStatus.QUARANTINED
    await replicas.b.directory.close()


def test_replicas_with_redis_share_a_directory(settings: Settings, prefix: str) -> None:
    alone = gateway_of(build_app(settings))
    assert alone is not None and not alone.directory.shared
    shared = Settings.model_validate({**settings.model_dump(), "redis_url": REDIS_URL})
    gateway = gateway_of(build_app(shared))
    assert gateway is not None and isinstance(gateway.directory, RedisSessionDirectory)


# ------------------------------------------------------------------- the directory itself


def _live(
    device_id: str,
    session_id: str,
    *,
    peer: str = "10.0.0.1",
    serial: str = "a1",
    at: datetime = T0,
) -> LiveSession:
    session = DeviceSession(
        session_id=session_id,
        device_id=device_id,
        vehicle_id="veh_x",
        tenant_id="ten_x",
        certificate_serial=serial,
        session_key=b"k" * 32,
        transport=Transport.WEBSOCKET,
        peer=peer,
        software_version=SOFTWARE,
        vehicle_config=CONFIG,
        established_at=at,
    )

    async def closer(_code: CloseCode) -> None:
        return None

    return LiveSession(session, at, closer)


@pytest.fixture
async def pair(prefix: str) -> AsyncIterator[tuple[RedisSessionDirectory, RedisSessionDirectory]]:
    one, two = _directory(prefix), _directory(prefix)
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


async def test_a_join_sees_the_other_replicas_sessions_not_its_own(
    pair: tuple[RedisSessionDirectory, RedisSessionDirectory],
) -> None:
    one, two = pair
    assert await one.join(_live("dev_1", "ses_a", peer="10.0.0.1", serial="a1")) == ()
    assert await one.join(_live("dev_1", "ses_b")) == ()  # ses_a is one's own: in its registry
    later = T0 + timedelta(seconds=3)
    [a, b] = sorted(
        await two.join(_live("dev_1", "ses_c", peer="10.9.9.9", serial="c3", at=later)),
        key=lambda r: r.other.session_id,
    )
    assert (a.other.session_id, a.other.peer, a.other.last_activity) == ("ses_a", "10.0.0.1", T0)
    assert (a.certificate_serial, b.other.session_id) == ("a1", "ses_b")
    # Another device's sessions are not this one's.
    assert await two.join(_live("dev_2", "ses_d")) == ()
    [c] = await one.join(_live("dev_1", "ses_e"))
    assert (c.other.session_id, c.other.last_activity, c.certificate_serial) == (
        "ses_c",
        later,
        "c3",
    )


async def test_two_joins_at_once_on_two_replicas_see_each_other_at_least_once(
    pair: tuple[RedisSessionDirectory, RedisSessionDirectory],
) -> None:
    one, two = pair
    for round_ in range(50):
        device = f"dev_race_{round_}"
        seen_by_one, seen_by_two = await asyncio.gather(
            one.join(_live(device, "ses_1")), two.join(_live(device, "ses_2"))
        )
        assert seen_by_one or seen_by_two, round_


async def test_leave_refresh_and_pruning(
    pair: tuple[RedisSessionDirectory, RedisSessionDirectory], prefix: str
) -> None:
    one, two = pair
    first = _live("dev_1", "ses_a")
    await one.join(first)
    await one.leave(first)
    await one.leave(first)  # idempotent
    assert await two.join(_live("dev_1", "ses_b")) == ()
    # A refresh writes what the session last did.
    kept = _live("dev_1", "ses_c")
    await one.join(kept)
    kept.touch(T0 + timedelta(seconds=20))
    await one.refresh([kept])
    [seen] = await two.join(_live("dev_1", "ses_d", at=T0 + timedelta(seconds=21)))
    assert seen.other.last_activity == T0 + timedelta(seconds=20)
    # Two windows after its last write an entry is gone from a hash still written to
    # (whoever wrote it): ses_b (T0) and ses_c (T0 + 20 s) at a join at T0 + 81 s.
    await two.join(_live("dev_1", "ses_e", at=T0 + timedelta(seconds=81)))
    assert await _entries(prefix, "dev_1") == {"ses_d", "ses_e"}


async def test_what_is_not_an_entry_is_no_session_and_is_pruned(
    pair: tuple[RedisSessionDirectory, RedisSessionDirectory], prefix: str
) -> None:
    one, _two = pair
    redis = Redis.from_url(REDIS_URL)
    key = f"{prefix}dev_1"
    junk = {
        "ses_short": "0123456789abcdef 12",
        "ses_letters": "0123456789abcdef soon a1 10.0.0.1",
        "ses_origin": "ORIGIN-NOT-HEX!! 1 a1 10.0.0.1",
        "ses space": "0123456789abcdef 1 a1 10.0.0.1",
        "ses_bytes": b"\xff\xfe",
    }
    try:
        await redis.hset(key, mapping=junk)  # type: ignore[arg-type]
        assert await one.join(_live("dev_1", "ses_mine")) == ()
        assert one.malformed == len(junk)
        assert await _entries(prefix, "dev_1") == {"ses_mine"}
    finally:
        await redis.aclose()


async def test_a_peer_with_whitespace_is_written_without_it(
    pair: tuple[RedisSessionDirectory, RedisSessionDirectory],
) -> None:
    one, two = pair
    await one.join(_live("dev_1", "ses_a", peer="broker client\t7"))
    [seen] = await two.join(_live("dev_1", "ses_b"))
    assert seen.other.peer == "brokerclient7"
    assert two.malformed == 0


def test_an_origin_must_be_sixteen_hex_digits() -> None:
    with pytest.raises(ValueError, match="origin"):
        RedisSessionDirectory(
            Redis.from_url(REDIS_URL), liveness_window=timedelta(seconds=30), origin="x y"
        )


async def test_a_refresh_writes_every_session_whatever_their_number(
    pair: tuple[RedisSessionDirectory, RedisSessionDirectory],
) -> None:
    # Written in several pipelines (a small batch each, to keep the event loop free).
    one, two = pair
    sessions = [_live(f"dev_{i}", f"ses_{i}") for i in range(250)]
    for live in sessions:
        await one.join(live)  # a refresh rewrites the entries that are there
    later = T0 + timedelta(seconds=9)
    for live in sessions:
        live.touch(later)
    await one.refresh(sessions)
    for i in (0, 99, 100, 249):
        [seen] = await two.join(_live(f"dev_{i}", f"ses_other_{i}", at=later))
        assert (seen.other.session_id, seen.other.last_activity) == (f"ses_{i}", later)


async def test_a_refresh_that_overlaps_a_close_does_not_bring_the_session_back(
    replicas: Replicas, prefix: str
) -> None:
    # A refresh takes B's sessions, then writes them (in batches, awaiting Redis): a session
    # that ends in between has left already. Written back, it looked live for the window and
    # the car reconnecting through A was quarantined as its own clone.
    a, b = replicas.a, replicas.b
    credentials = await a.enrol()
    before = await replicas.open_on_b(credentials)
    await b.refresh_directory()  # B has refreshed before: its entries are in Redis
    taken = b.registry.all_sessions()  # the refresh's view, before the close
    await before.close()

    async def left() -> bool:
        return await _entries(prefix, credentials.device_id) == set()

    await _until(left)
    await b.directory.refresh(taken)  # the refresh's writes, after the leave
    assert await _entries(prefix, credentials.device_id) == set()
    after = await a.open(credentials)
    assert await after.request(b"x") == b"ack:x"
    assert (await a.device(credentials.device_id)).status is DeviceStatus.ACTIVE
    assert await _incidents(a) == []


async def test_a_session_the_directory_missed_joins_at_the_next_refresh(
    replicas: Replicas, prefix: str
) -> None:
    # Admitted while Redis did not answer: once it does, the session is in the directory,
    # and a copy of the key on A is the concurrent-session finding.
    a, b = replicas.a, replicas.b
    b.directory = _directory(prefix, url="redis://127.0.0.1:1/0")
    credentials = await a.enrol()
    genuine = await replicas.open_on_b(credentials)
    await b.directory.close()
    b.directory = _directory(prefix)
    try:
        await b.refresh_directory()
        assert await _entries(prefix, credentials.device_id) == {genuine.session_id}
        await a.open(credentials)
        assert (await a.device(credentials.device_id)).status is DeviceStatus.QUARANTINED
    finally:
        await b.directory.close()


async def test_entries_redis_lost_are_written_again_by_the_next_refresh(
    replicas: Replicas, prefix: str
) -> None:
    # Redis restarted empty (or was out of reach until the entries expired): a refresh
    # that rewrote only the entries still there would leave B's sessions out of the
    # directory until they reconnect, and a copy of the key on A would go unseen.
    a, b = replicas.a, replicas.b
    credentials = await a.enrol()
    genuine = await replicas.open_on_b(credentials)
    await b.refresh_directory()
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{prefix}*")]
        await redis.delete(*keys)  # as a restarted Redis holds nothing
    finally:
        await redis.aclose()
    await b.refresh_directory()
    assert await _entries(prefix, credentials.device_id) == {genuine.session_id}
    await a.open(credentials)
    assert (await a.device(credentials.device_id)).status is DeviceStatus.QUARANTINED


async def test_a_leave_redis_did_not_answer_is_made_at_the_next_refresh(
    replicas: Replicas, prefix: str
) -> None:
    # The session ended while Redis did not answer: its entry, refreshed a moment before,
    # looked live for the rest of the window, and the car reconnecting through A after its
    # clean close was quarantined as its own clone. The next refresh removes it.
    a, b = replicas.a, replicas.b
    credentials = await a.enrol()
    before = await replicas.open_on_b(credentials)
    reachable = b.directory
    b.directory = _directory(prefix, url="redis://127.0.0.1:1/0")
    await before.close()

    async def recorded() -> bool:  # the close is recorded after its leave was tried
        return bool(await a.audit(EventName.DEVICE_SESSION_CLOSED))

    await _until(recorded)
    await b.directory.close()
    b.directory = reachable
    assert await _entries(prefix, credentials.device_id) == {before.session_id}
    await b.refresh_directory()
    assert await _entries(prefix, credentials.device_id) == set()
    after = await a.open(credentials)
    assert await after.request(b"x") == b"ack:x"
    assert (await a.device(credentials.device_id)).status is DeviceStatus.ACTIVE
    assert await _incidents(a) == []
