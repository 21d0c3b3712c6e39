"""The WebSocket gateway against the real server: uvicorn on loopback, real device keys.

Devices enrol over HTTP with a one-time token, open sessions with the handshake, and are
refused, closed and quarantined by the running gateway. Each refusal is checked by its close
code (what the device sees) and its audit record (what an investigator sees). Runs on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import timedelta

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from sqlalchemy import select
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.surfaces import Surface
from fleetward.devices.admission import Admitted, DeviceAdmission, SessionLedger
from fleetward.devices.ca import DeviceCa
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import (
    CertificateStatus,
    Device,
    DeviceCertificate,
    DeviceIncident,
    DeviceStatus,
    IncidentKind,
    KeyAlgorithm,
)
from fleetward.gateway.device_client import (
    DeviceConnection,
    DeviceCredentials,
    DeviceHandshake,
    HandshakeRefused,
    SessionClosed,
    build_csr,
    generate_key,
)
from fleetward.gateway.handshake import CloseCode, Response
from fleetward.gateway.session import Transport
from fleetward.gateway.websocket import GatewayConfig
from fleetward.identity.acr import Acr
from fleetward.platform import Platform
from fleetward.settings import Settings
from fleetward.store.busy import StoreBusy
from support.command_push import CommandBeforeReply, signed_command
from support.factories import FACTORY
from support.gateway import CONFIG, FAST, SOFTWARE, Server, serving


@pytest.fixture
async def server(platform: Platform, free_port: int) -> AsyncIterator[Server]:
    async with serving(platform, free_port, FAST) as running:
        yield running


async def _closed_with(connection: DeviceConnection, within: float = 3.0) -> int | None:
    async with asyncio.timeout(within):
        return await connection.wait_closed()


# --------------------------------------------------------------------------- a valid session


async def test_valid_handshake_opens_a_session_whose_identity_comes_from_it(
    server: Server,
) -> None:
    credentials = await server.enrol(algorithm=KeyAlgorithm.P256)
    connection = await server.open(credentials)
    assert await connection.request(b"frame-1") == b"ack:frame-1"
    # A payload naming another vehicle changes nothing about whose session this is.
    assert (await connection.request(b'{"vehicle_id": "someone-else"}')).startswith(b"ack:")
    [(session, frame), (same, _)] = server.handler.seen
    assert frame == b"frame-1" and same is session
    world = server.world
    assert (session.device_id, session.vehicle_id, session.tenant_id) == (
        credentials.device_id,
        world.car.id,
        world.car.tenant_id,
    )
    assert session.certificate_serial == format(credentials.certificate.serial_number, "x")
    assert session.session_key == connection.session_key and len(session.session_key) == 32
    assert (session.transport, session.peer) == (Transport.WEBSOCKET, "127.0.0.1")
    assert (session.software_version, session.vehicle_config) == (SOFTWARE, CONFIG)
    assert session.session_id == connection.session_id
    assert len(server.gateway.registry.sessions(credentials.device_id)) == 1
    [opened] = await server.audit(EventName.DEVICE_SESSION_OPENED)
    assert opened.object_id == credentials.device_id and opened.details["peer"] == "127.0.0.1"
    await connection.close()
    for _ in range(60):  # the close is recorded after the socket closed
        if await server.audit(EventName.DEVICE_SESSION_CLOSED):
            break
        await asyncio.sleep(0.05)
    [closed] = await server.audit(EventName.DEVICE_SESSION_CLOSED)
    assert closed.details["close"] == "by-device"
    assert server.handler.ended == [connection.session_id]  # the pipeline forgets its keys
    assert server.handler.statuses == []  # an active device: nothing to report
    assert server.gateway.registry.sessions(credentials.device_id) == []
    assert (await server.device(credentials.device_id)).last_peer == "127.0.0.1"


async def test_a_command_pushed_while_a_frame_awaits_its_reply_is_kept_for_receive(
    server: Server,
) -> None:
    # The platform delivers a job whenever it has one, also between a frame and its reply.
    # request() returned the next message whatever it was: the COMMAND came back as the
    # frame's reply, and the reply later from receive() as if it were a command.
    credentials = await server.enrol()
    connection = await server.open(credentials)
    command = signed_command(credentials.vehicle_id, server.clock.now())
    gateway = server.gateway
    gateway.handler = CommandBeforeReply(gateway.handler, gateway.registry, command)
    assert await connection.request(b"frame-1") == b"ack:frame-1"
    assert await connection.request(b"frame-2") == b"ack:frame-2"
    # Both commands wait for receive, in the order they came.
    assert [await connection.receive(), await connection.receive()] == [command, command]


async def test_each_session_gets_a_fresh_key(server: Server) -> None:
    credentials = await server.enrol()
    first = await server.open(credentials)
    await first.close()
    await _closed_with(first)
    # The device reconnects after its link drops, from the same network.
    server.clock.advance(timedelta(seconds=31))
    second = await server.open(credentials)
    assert second.session_key != first.session_key
    assert await second.request(b"x") == b"ack:x"


# --------------------------------------------------------------------------- refused handshakes


Setup = Callable[[Server], Awaitable[DeviceCredentials]]


async def _foreign_ca(s: Server) -> DeviceCredentials:
    genuine = await s.enrol()
    # Another deployment's CA, certifying the same names: a perfect look-alike.
    foreign = DeviceCa.generate(s.clock)
    certificate = foreign.issue(
        genuine.key.public_key(),
        device_id=genuine.device_id,
        vehicle_id=genuine.vehicle_id,
        now=s.clock.now(),
    )
    return replace(genuine, certificate=certificate, ca_certificate=foreign.certificate)


async def _unknown_to_the_store(s: Server) -> DeviceCredentials:
    # Signed by the platform CA but never recorded: what a leaked CA key would mint.
    genuine = await s.enrol()
    key = generate_key()
    certificate = s.world.ca.issue(
        key.public_key(),
        device_id=genuine.device_id,
        vehicle_id=genuine.vehicle_id,
        now=s.clock.now(),
    )
    return replace(genuine, key=key, certificate=certificate)


async def _expired(s: Server) -> DeviceCredentials:
    credentials = await s.enrol()
    s.clock.advance(timedelta(days=366))
    return credentials


def _after(change: Callable[[DeviceLifecycle, Device], Awaitable[object]]) -> Setup:
    async def setup(s: Server) -> DeviceCredentials:
        credentials = await s.enrol()
        await s.change(change, credentials.device_id)
        return credentials

    return setup


async def _rotated_away(s: Server) -> DeviceCredentials:
    # The old certificate after its rotation completed: revoked, though the device is active.
    credentials = await s.enrol()
    key = generate_key()
    async with s.platform.services() as (uow, ctx):
        lifecycle = DeviceLifecycle(ctx)
        device = await lifecycle.get(credentials.device_id)
        csr = build_csr(key, device_id=device.id, vehicle_id=device.vehicle_id)
        issued = await lifecycle.rotate(device, csr, s.world.ca, actor=FACTORY)
        await uow.commit()
    rotated = credentials.with_certificate(key, issued.certificate_pem)
    connection = await s.open(rotated)
    await connection.close()
    return credentials


REFUSED: list[tuple[str, Setup, CloseCode, str]] = [
    # Chain: a certificate from any other CA, however well it imitates ours.
    ("foreign-ca", _foreign_ca, CloseCode.UNAUTHENTICATED, "unknown-ca"),
    # The store is the list of what we issued: a certificate we never recorded is refused.
    (
        "unknown-certificate",
        _unknown_to_the_store,
        CloseCode.UNAUTHENTICATED,
        "unknown-certificate",
    ),
    # Validity is judged by the server's clock.
    ("expired", _expired, CloseCode.UNAUTHENTICATED, "certificate-expired"),
    # Lifecycle: revoked, suspended, decommissioned devices never connect (a quarantined one
    # does: see test_a_quarantined_device_connects_and_is_reported).
    (
        "revoked",
        _after(lambda lc, d: lc.revoke(d, reason="lost", actor=FACTORY)),
        CloseCode.UNAUTHENTICATED,
        "device-revoked",
    ),
    (
        "suspended",
        _after(lambda lc, d: lc.suspend(d, reason="check", actor=FACTORY)),
        CloseCode.UNAUTHENTICATED,
        "device-suspended",
    ),
    (
        "decommissioned",
        _after(lambda lc, d: lc.decommission(d, reason="eol", actor=FACTORY)),
        CloseCode.UNAUTHENTICATED,
        "device-decommissioned",
    ),
    ("rotated-away", _rotated_away, CloseCode.UNAUTHENTICATED, "certificate-revoked"),
]


@pytest.mark.parametrize(("case", "setup", "code", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
async def test_refused_handshake_is_closed_and_audited(
    server: Server, case: str, setup: Setup, code: CloseCode, reason: str
) -> None:
    credentials = await setup(server)
    with pytest.raises(HandshakeRefused) as raised:
        await server.open(credentials)
    assert raised.value.code == code
    assert raised.value.reason == code.phrase  # the device learns the class, not the check
    failures = await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)
    assert [f.reason for f in failures] == [reason]
    assert failures[0].details == {"peer": "127.0.0.1", "close": code.phrase}
    assert server.handler.seen == []
    assert server.gateway.registry.sessions(credentials.device_id) == []


Answer = Callable[[Server, DeviceCredentials, bytes], Awaitable[bytes | str | None]]


async def _raw_handshake(s: Server, credentials: DeviceCredentials, answer: Answer) -> int | None:
    """Connect, receive the challenge, send whatever ``answer`` makes of it; the close code."""
    async with ws_connect(s.url, compression=None) as websocket:
        challenge = await websocket.recv()
        assert isinstance(challenge, bytes)
        message = await answer(s, credentials, challenge)
        if message is not None:
            await websocket.send(message)
        with pytest.raises(ConnectionClosed) as closed:
            await websocket.recv()
    received = closed.value.rcvd
    return received.code if received else None


async def test_compression_offered_by_a_client_is_declined(server: Server) -> None:
    # Frames travel exactly as they were authenticated, and an anonymous peer gets no inflate
    # buffers: the server never agrees to permessage-deflate (docs/vehicle-protocol.md 4.1).
    async with ws_connect(server.url, compression="deflate") as websocket:
        assert websocket.response is not None
        assert "Sec-WebSocket-Extensions" not in websocket.response.headers
        assert websocket.protocol.extensions == []
        assert isinstance(await websocket.recv(), bytes)  # the challenge, uncompressed


def _device(credentials: DeviceCredentials, server: Server) -> DeviceHandshake:
    return DeviceHandshake(
        credentials,
        server_id=server.gateway.server_id,
        software_version=SOFTWARE,
        vehicle_config=CONFIG,
    )


async def _bad_signature(s: Server, c: DeviceCredentials, challenge: bytes) -> bytes:
    response = Response.decode(_device(c, s).respond(challenge, s.clock.now()))
    forged = bytes([response.signature[0] ^ 1]) + response.signature[1:]
    return replace(response, signature=forged).encode()


async def _skewed(s: Server, c: DeviceCredentials, challenge: bytes) -> bytes:
    return _device(c, s).respond(challenge, s.clock.now() + timedelta(minutes=10))


async def _text(s: Server, c: DeviceCredentials, challenge: bytes) -> str:
    return '{"device_id": "' + c.device_id + '"}'


async def _unreadable_issuer(s: Server, c: DeviceCredentials, challenge: bytes) -> bytes:
    # The device's certificate with a byte of its issuer name that is not UTF-8: the library
    # loads it and fails only when the issuer is read. Needs no key at all.
    response = Response.decode(_device(c, s).respond(challenge, s.clock.now()))
    issuer = c.certificate.issuer.public_bytes()
    at = response.certificate.index(issuer) + issuer.index(b"Fleetward")
    broken = response.certificate[:at] + b"\xff" + response.certificate[at + 1 :]
    return replace(response, certificate=broken).encode()


async def _silence(s: Server, c: DeviceCredentials, challenge: bytes) -> None:
    return None  # say nothing: the handshake times out


RAW: list[tuple[str, Answer, CloseCode, str]] = [
    # Proof of possession: a certificate without its key's signature is worthless.
    ("bad-signature", _bad_signature, CloseCode.UNAUTHENTICATED, "signature"),
    # The server's clock decides; a device far off is told so it can fix its clock.
    ("clock-skew", _skewed, CloseCode.CLOCK_SKEW, "clock-skew"),
    # Identity never comes from a payload: a JSON hello naming a device is not a handshake.
    ("text-hello", _text, CloseCode.PROTOCOL, "not-binary"),
    # A certificate the library cannot read is refused and recorded, not an internal error.
    ("unreadable-issuer", _unreadable_issuer, CloseCode.UNAUTHENTICATED, "unknown-ca"),
    # An unauthenticated connection does not get to hold a socket open.
    ("silence", _silence, CloseCode.TIMEOUT, "timeout"),
]


@pytest.mark.parametrize(("case", "answer", "code", "reason"), RAW, ids=[r[0] for r in RAW])
async def test_refused_answer_is_closed_and_audited(
    server: Server, case: str, answer: Answer, code: CloseCode, reason: str
) -> None:
    credentials = await server.enrol()
    assert await _raw_handshake(server, credentials, answer) == code
    failures = await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)
    assert [f.reason for f in failures] == [reason]
    assert server.handler.seen == []


async def test_replayed_handshake_is_refused(server: Server) -> None:
    credentials = await server.enrol()
    recorded: list[bytes] = []

    async def genuine(s: Server, c: DeviceCredentials, challenge: bytes) -> bytes:
        recorded.append(_device(c, s).respond(challenge, s.clock.now()))
        return recorded[0]

    async with ws_connect(server.url, compression=None) as websocket:
        challenge = await websocket.recv()
        assert isinstance(challenge, bytes)
        await websocket.send(await genuine(server, credentials, challenge))
        assert isinstance(await websocket.recv(), bytes)  # WELCOME: the genuine session
    server.clock.advance(timedelta(seconds=31))

    async def replay(s: Server, c: DeviceCredentials, challenge: bytes) -> bytes:
        return recorded[0]  # an eavesdropper's copy of the genuine answer

    assert await _raw_handshake(server, credentials, replay) == CloseCode.UNAUTHENTICATED
    failures = await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)
    assert [f.reason for f in failures] == ["challenge-mismatch"]


# --------------------------------------------------------------------------- revocation


def _admin_token(server: Server) -> str:
    world = server.world
    return server.platform.identity.tokens.issue(
        subject=world.admin.id,
        client_id="cli_admin_console",
        tenant=world.operator.id,
        surface=Surface.ADMIN,
        scopes=["admin:manage_clients"],
        auth_time=server.clock.now(),
        acr=Acr.MFA.value,
        amr=["pwd", "otp"],
        token_family=None,
        subject_type="user",
    ).token


@pytest.mark.parametrize(
    ("operation", "code"),
    [("revoke", CloseCode.REVOKED), ("suspend", CloseCode.SUSPENDED)],
)
async def test_revoking_through_the_api_closes_the_live_session_at_once(
    server: Server, operation: str, code: CloseCode
) -> None:
    credentials = await server.enrol()
    connection = await server.open(credentials)
    assert await connection.request(b"before") == b"ack:before"
    async with httpx.AsyncClient(base_url=server.base) as http:
        response = await http.post(
            f"/admin/v1/devices/{credentials.device_id}/{operation}",
            json={"reason": "compromised"},
            headers={"authorization": f"Bearer {_admin_token(server)}"},
        )
    assert response.status_code == 200, response.text
    # Closed by the registry before the API answered: no poll interval involved.
    assert connection.close_code == code or await _closed_with(connection, 0.5) == code
    with pytest.raises(SessionClosed):
        await connection.request(b"after")
    assert [frame for _, frame in server.handler.seen] == [b"before"]


async def test_a_revocation_committed_during_the_handshake_refuses_it(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = await server.enrol()
    device_id = credentials.device_id
    check = DeviceAdmission.check

    async def check_then_revoke(admission: DeviceAdmission, **names: str) -> Admitted:
        admitted = await check(admission, **names)
        # An admin's revocation lands right after the admission read the device active: it
        # commits, and closes the device's sessions here, of which there is none yet.
        await server.change(lambda lc, d: lc.revoke(d, reason="lost", actor=FACTORY), device_id)
        await server.gateway.registry.apply(device_id, DeviceStatus.REVOKED, "lost")
        return admitted

    monkeypatch.setattr(DeviceAdmission, "check", check_then_revoke)
    with pytest.raises(HandshakeRefused) as refused:
        await server.open(credentials)
    # Refused by the session's own re-read of its credentials (4401), or, when the
    # registry's credential sweep runs between the claim and that re-read (a loaded
    # machine), closed by the sweep as revoked first (4001): never opened either way.
    assert refused.value.code in (CloseCode.UNAUTHENTICATED, CloseCode.REVOKED)
    assert server.gateway.registry.sessions(device_id) == []
    [failure] = await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)
    assert (failure.reason, failure.object_id) == ("device-revoked", device_id)
    assert await server.audit(EventName.DEVICE_SESSION_OPENED) == []
    assert server.handler.seen == []


# No credential sweep during these tests: it would close a claimed session first (4001).
_NO_SWEEP = replace(FAST, credential_poll=timedelta(minutes=5))


def _revoked_after_the_check(
    server: Server, monkeypatch: pytest.MonkeyPatch, device_id: str
) -> None:
    """An admin's revocation commits right after the admission read the device."""
    check = DeviceAdmission.check

    async def check_then_revoke(admission: DeviceAdmission, **names: str) -> Admitted:
        admitted = await check(admission, **names)
        await server.change(lambda lc, d: lc.revoke(d, reason="lost", actor=FACTORY), device_id)
        return admitted

    monkeypatch.setattr(DeviceAdmission, "check", check_then_revoke)


async def test_a_revocation_during_a_rotations_first_handshake_refuses_it(
    platform: Platform, free_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The same race on the first use of a rotated certificate, which is recorded in the
    # handshake's own transaction: its activation finds the certificate no longer pending.
    # That was an unexpected error (1011, "retry"), and the refusal was in no audit record.
    async with serving(platform, free_port, _NO_SWEEP) as server:
        credentials = await server.enrol()
        device_id = credentials.device_id
        key = generate_key()
        async with server.platform.services() as (uow, ctx):
            lifecycle = DeviceLifecycle(ctx)
            device = await lifecycle.get(device_id)
            csr = build_csr(key, device_id=device.id, vehicle_id=device.vehicle_id)
            issued = await lifecycle.rotate(device, csr, server.world.ca, actor=FACTORY)
            await uow.commit()
        rotated = credentials.with_certificate(key, issued.certificate_pem)
        _revoked_after_the_check(server, monkeypatch, device_id)
        with pytest.raises(HandshakeRefused) as refused:
            await server.open(rotated)
        assert refused.value.code == CloseCode.UNAUTHENTICATED
        assert server.gateway.registry.sessions(device_id) == []
        [failure] = await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)
        assert (failure.reason, failure.object_id) == ("certificate-changed", device_id)
        assert await server.audit(EventName.DEVICE_SESSION_OPENED) == []


async def test_a_revocation_during_a_clone_findings_handshake_refuses_it(
    platform: Platform, free_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The race again, on a handshake that is a clone finding: the quarantine, written in the
    # handshake's own transaction, finds the device no longer as it was read (revoked).
    async with serving(platform, free_port, _NO_SWEEP) as server:
        credentials = await server.enrol()
        device_id = credentials.device_id
        genuine = await server.open(credentials)
        _revoked_after_the_check(server, monkeypatch, device_id)
        with pytest.raises(HandshakeRefused) as refused:
            await server.open(credentials)  # concurrent with the genuine session: a finding
        assert refused.value.code == CloseCode.UNAUTHENTICATED
        [failure] = await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)
        assert (failure.reason, failure.object_id) == ("device-changed", device_id)
        assert await _incidents(server) == []  # rolled back with the handshake
        assert genuine.close_code is None


async def test_a_change_made_by_another_process_closes_the_session(server: Server) -> None:
    credentials = await server.enrol()
    connection = await server.open(credentials)
    # Committed straight to the store, as the CLI or another replica would.
    await server.change(
        lambda lc, d: lc.revoke(d, reason="lost", actor=FACTORY), credentials.device_id
    )
    assert await _closed_with(connection) == CloseCode.REVOKED


# --------------------------------------------------------------------------- cloned credentials


async def _incidents(server: Server) -> list[DeviceIncident]:
    async with server.platform.unit_of_work() as uow:
        return list(await uow.session.scalars(select(DeviceIncident)))


async def test_two_concurrent_sessions_quarantine_the_device(server: Server) -> None:
    credentials = await server.enrol()
    genuine = await server.open(credentials)
    clone = await server.open(credentials)  # the same identity, a second time, at once
    device = await server.device(credentials.device_id)
    assert device.status is DeviceStatus.QUARANTINED
    [incident] = await _incidents(server)
    assert incident.device_id == credentials.device_id
    assert incident.kind is IncidentKind.CONCURRENT_SESSION
    assert incident.details == {
        "session": clone.session_id,
        "other_sessions": [genuine.session_id],
    }
    [detected] = await server.audit(EventName.DEVICE_CLONE_DETECTED)
    assert detected.reason == "concurrent_session"
    [quarantined] = await server.audit(EventName.DEVICE_QUARANTINED)
    assert quarantined.reason == "clone-concurrent-session"
    # Neither copy is told: both sessions go on, and the pipeline sets their frames apart.
    assert server.handler.statuses == [
        (credentials.device_id, DeviceStatus.QUARANTINED, "clone-concurrent-session")
    ]
    assert await genuine.request(b"a") == b"ack:a" and await clone.request(b"b") == b"ack:b"
    assert genuine.close_code is None and clone.close_code is None
    # An operator decides: revoking ends every session of the identity at once.
    async with httpx.AsyncClient(base_url=server.base) as http:
        response = await http.post(
            f"/admin/v1/devices/{credentials.device_id}/revoke",
            json={"reason": "cloned"},
            headers={"authorization": f"Bearer {_admin_token(server)}"},
        )
    assert response.status_code == 200, response.text
    assert await _closed_with(genuine) == CloseCode.REVOKED
    assert await _closed_with(clone) == CloseCode.REVOKED


async def test_a_quarantined_device_connects_and_is_reported(server: Server) -> None:
    credentials = await server.enrol()
    await server.change(
        lambda lc, d: lc.quarantine(d, reason="telemetry", actor=FACTORY, details={}),
        credentials.device_id,
    )
    connection = await server.open(credentials)
    assert await connection.request(b"x") == b"ack:x"
    assert server.handler.statuses == [
        (credentials.device_id, DeviceStatus.QUARANTINED, "admitted")
    ]
    # Released by an operator: the session goes on and the pipeline is told at once.
    async with httpx.AsyncClient(base_url=server.base) as http:
        response = await http.post(
            f"/admin/v1/devices/{credentials.device_id}/resume",
            json={"reason": "false-positive"},
            headers={"authorization": f"Bearer {_admin_token(server)}"},
        )
    assert response.status_code == 200, response.text
    assert server.handler.statuses[-1] == (
        credentials.device_id,
        DeviceStatus.ACTIVE,
        "false-positive",
    )
    assert await connection.request(b"y") == b"ack:y"


async def test_a_release_made_elsewhere_while_disconnected_reaches_the_pipeline(
    server: Server,
) -> None:
    credentials = await server.enrol()
    device_id = credentials.device_id
    await server.change(
        lambda lc, d: lc.quarantine(d, reason="telemetry", actor=FACTORY, details={}), device_id
    )
    connection = await server.open(credentials)
    await connection.close()
    await _closed_with(connection)
    async with asyncio.timeout(3):
        while server.gateway.registry.sessions(device_id):  # noqa: ASYNC110 - the server's side
            await asyncio.sleep(0.01)
    # Resumed while the device had no session here, committed straight to the store (as the
    # CLI or another replica would): nothing in this process heard of it.
    await server.change(
        lambda lc, d: lc.resume(d, reason="false-positive", actor=FACTORY), device_id
    )
    server.clock.advance(timedelta(minutes=1))  # the device waited out the liveness window
    again = await server.open(credentials)
    # Its new session is admitted active: the pipeline must lift its quarantine, or the
    # device's data went on to the quarantine table (answered accepted) for good.
    assert server.handler.statuses == [
        (device_id, DeviceStatus.QUARANTINED, "admitted"),
        (device_id, DeviceStatus.ACTIVE, "admitted"),
    ]
    assert await again.request(b"x") == b"ack:x"


async def test_a_new_network_identity_right_after_the_last_quarantines(server: Server) -> None:
    credentials = await server.enrol()
    first = await server.open(credentials)
    await first.close()
    await _closed_with(first)
    server.clock.advance(timedelta(seconds=5))
    moved = await server.open(credentials, local_address=("127.0.0.2", 0))
    [incident] = await _incidents(server)
    assert (incident.kind, incident.peer, incident.previous_peer) == (
        IncidentKind.PEER_CHANGED,
        "127.0.0.2",
        "127.0.0.1",
    )
    assert (await server.device(credentials.device_id)).status is DeviceStatus.QUARANTINED
    assert await moved.request(b"x") == b"ack:x"


async def _open_forwarded(
    server: Server, credentials: DeviceCredentials, client: str
) -> ClientConnection:
    """A session opened through a reverse proxy on loopback that names ``client``."""
    websocket = await ws_connect(
        server.url, compression=None, additional_headers={"X-Forwarded-For": client}
    )
    device = _device(credentials, server)
    challenge = await websocket.recv()
    assert isinstance(challenge, bytes)
    await websocket.send(device.respond(challenge, server.clock.now()))
    welcome = await websocket.recv()
    assert isinstance(welcome, bytes)
    device.finish(welcome)
    return websocket


async def test_behind_a_trusted_proxy_the_peer_is_the_client_it_names(
    platform: Platform, free_port: int
) -> None:
    # Threat: in production a TLS terminator sits in front of the gateway, so every device's
    # TCP peer is the terminator. Taken as the session's peer, the network-change clone rule
    # compared the terminator with itself and never fired: a copy of the key connecting from
    # another network right after the genuine device's session went unnoticed.
    proxied = replace(
        platform, settings=platform.settings.model_copy(update={"trusted_proxies": ["127.0.0.1"]})
    )
    async with serving(proxied, free_port, FAST) as server:
        credentials = await server.enrol()
        first = await _open_forwarded(server, credentials, "198.51.100.7")
        await first.close()
        async with asyncio.timeout(3):
            while server.gateway.registry.sessions(credentials.device_id):  # noqa: ASYNC110
                await asyncio.sleep(0.01)
        server.clock.advance(timedelta(seconds=5))
        moved = await _open_forwarded(server, credentials, "203.0.113.9")
        try:
            [incident] = await _incidents(server)
            assert (incident.kind, incident.peer, incident.previous_peer) == (
                IncidentKind.PEER_CHANGED,
                "203.0.113.9",
                "198.51.100.7",
            )
            device = await server.device(credentials.device_id)
            assert device.status is DeviceStatus.QUARANTINED
        finally:
            await moved.close()


async def test_a_car_back_after_losing_its_link_gets_its_session_at_once(
    platform: Platform, free_port: int
) -> None:
    # A car whose link dropped without a close reconnects (from another network, after the
    # liveness window): its old connection, still open on the server's side, is superseded at
    # once and is no clone evidence, since it never speaks again. It stays open under watch
    # until its idle deadline (2 s here; a handshake within FAST's 1 s timeout comes first),
    # then is closed as superseded.
    async with serving(platform, free_port, replace(FAST, idle_timeout=timedelta(seconds=2))) as s:
        credentials = await s.enrol()
        lost = await s.open(credentials)
        s.clock.advance(timedelta(seconds=31))  # silent for longer than the liveness window
        back = await s.open(credentials, local_address=("127.0.0.2", 0))
        assert await back.request(b"x") == b"ack:x"
        back_id = credentials.device_id
        registered = s.gateway.registry.sessions(back_id)
        assert [x.session.session_id for x in registered] == [back.session_id]
        assert await _closed_with(lost) == CloseCode.SUPERSEDED
        assert (await s.device(back_id)).status is DeviceStatus.ACTIVE
        assert await s.audit(EventName.DEVICE_CLONE_DETECTED) == []
        assert await _incidents(s) == []
        for _ in range(60):  # the close is recorded after the socket closed
            closes = await s.audit(EventName.DEVICE_SESSION_CLOSED)
            if any(c.details["session"] == lost.session_id for c in closes):
                break
            await asyncio.sleep(0.05)
        [closed] = [c for c in closes if c.details["session"] == lost.session_id]
        assert closed.details["close"] == CloseCode.SUPERSEDED.phrase


async def test_a_copy_taking_over_a_parked_cars_quiet_session_is_found_when_the_car_speaks(
    server: Server,
) -> None:
    # Threat: a copy of the device key. The genuine car, parked between reports, holds a live
    # session quiet for longer than the liveness window (30 s) but within its idle timeout
    # (120 s). The copy's handshake superseded it: the car was cut off (4004) and nothing was
    # recorded. Now the car's connection stays open under watch until its idle deadline, and
    # its next message shows it was alive: a concurrent-session finding, as if it had spoken
    # before the copy's handshake.
    credentials = await server.enrol()
    device_id = credentials.device_id
    car = await server.open(credentials)
    assert await car.request(b"report-1") == b"ack:report-1"
    server.clock.advance(timedelta(seconds=31))  # parked: quiet past the liveness window
    copy = await server.open(credentials, local_address=("127.0.0.2", 0))
    assert await copy.request(b"x") == b"ack:x"  # it gets the session, as a car back would
    assert await _incidents(server) == []
    assert car.close_code is None  # not told anything yet
    await car.send(b"report-2")
    assert await _closed_with(car) == CloseCode.SUPERSEDED
    [incident] = await _incidents(server)
    assert (incident.kind, incident.peer, incident.previous_peer) == (
        IncidentKind.CONCURRENT_SESSION,
        "127.0.0.1",
        "127.0.0.2",
    )
    assert incident.details == {
        "session": car.session_id,
        "other_sessions": [copy.session_id],
        "finding": "superseded-session-heard",
    }
    [detected] = await server.audit(EventName.DEVICE_CLONE_DETECTED)
    assert (detected.object_id, detected.reason) == (device_id, "concurrent_session")
    assert (await server.device(device_id)).status is DeviceStatus.QUARANTINED
    # The message that gave the car away is never judged; the copy's session goes on, its
    # frames set apart by the pipeline, until an operator decides.
    assert [frame for _, frame in server.handler.seen] == [b"report-1", b"x"]
    assert server.handler.statuses == [
        (device_id, DeviceStatus.QUARANTINED, "clone-concurrent-session")
    ]
    assert await copy.request(b"y") == b"ack:y"


async def test_a_handshake_failing_after_its_claim_still_closes_what_it_superseded(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    credentials = await server.enrol()
    stale = await server.open(credentials)
    server.clock.advance(timedelta(seconds=31))  # silent for longer than the liveness window

    def busy(_ledger: SessionLedger, _entry: object) -> asyncio.Future[None]:
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(StoreBusy())
        return failed

    # The new handshake's claim takes the silent session out of the registry, then the
    # store cannot record the new one.
    monkeypatch.setattr(SessionLedger, "record", busy)
    with pytest.raises(HandshakeRefused) as refused:
        await server.open(credentials)
    assert refused.value.code == CloseCode.TRY_AGAIN_LATER
    # Not left open outside the registry, where no revocation or sweep would reach it.
    assert await _closed_with(stale) == CloseCode.SUPERSEDED
    assert server.gateway.registry.sessions(credentials.device_id) == []


async def test_rotation_hands_the_session_over_and_revokes_the_old_certificate(
    server: Server,
) -> None:
    credentials = await server.enrol()
    old = await server.open(credentials)
    key = generate_key(KeyAlgorithm.P256)
    async with server.platform.services() as (uow, ctx):
        lifecycle = DeviceLifecycle(ctx)
        device = await lifecycle.get(credentials.device_id)
        csr = build_csr(key, device_id=device.id, vehicle_id=device.vehicle_id)
        issued = await lifecycle.rotate(device, csr, server.world.ca, actor=FACTORY)
        await uow.commit()
    rotated = credentials.with_certificate(key, issued.certificate_pem)
    new = await server.open(rotated)  # while the old session is still live: not a clone
    assert await _closed_with(old) == CloseCode.ROTATED
    assert await new.request(b"x") == b"ack:x"
    async with server.platform.unit_of_work() as uow:
        statuses = {
            c.serial: c.status
            for c in await uow.session.scalars(
                select(DeviceCertificate).where(
                    DeviceCertificate.device_id == credentials.device_id
                )
            )
        }
    old_serial = format(credentials.certificate.serial_number, "x")
    assert statuses == {
        old_serial: CertificateStatus.REVOKED,
        issued.serial: CertificateStatus.ACTIVE,
    }
    assert await server.audit(EventName.DEVICE_ROTATION_COMPLETED)
    assert rotated.certificate.public_bytes(serialization.Encoding.DER) != (
        credentials.certificate_der
    )


# --------------------------------------------------------------------------- refusal floods


async def _garbage_handshake(server: Server, local_host: str = "127.0.0.1") -> int | None:
    """An anonymous peer: takes the challenge, answers with bytes that prove nothing."""
    async with ws_connect(server.url, compression=None, local_addr=(local_host, 0)) as websocket:
        assert isinstance(await websocket.recv(), bytes)
        await websocket.send(b"\x02\x01garbage")
        with pytest.raises(ConnectionClosed) as closed:
            await websocket.recv()
    received = closed.value.rcvd
    return received.code if received else None


async def test_a_flood_of_anonymous_refusals_is_recorded_within_a_budget_and_counted(
    server: Server,
) -> None:
    # Threat: a peer that never proves any device key opens connection after connection with
    # garbage; each refusal was an audit write, without limit: anyone on the internet drove
    # the store's writes. Now a network's refusals are recorded up to a small budget per
    # window, and the rest are counted into one event an investigator can find.
    flood = 40
    for _ in range(flood):
        assert await _garbage_handshake(server) == CloseCode.PROTOCOL
    recorded = await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)
    assert 0 < len(recorded) < flood
    assert {(r.reason, r.details["peer"]) for r in recorded} == {("malformed", "127.0.0.1")}
    # Another network's refusal is not swallowed by the flooder's budget.
    assert await _garbage_handshake(server, "127.0.0.2") == CloseCode.PROTOCOL
    assert [r.details["peer"] for r in await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)][
        -1
    ] == "127.0.0.2"
    assert await server.audit(EventName.DEVICE_HANDSHAKES_UNRECORDED) == []
    # Once the window is over, the next refusal (from anywhere) writes the flood's count.
    server.clock.advance(server.gateway.config.refusal_window)
    assert await _garbage_handshake(server, "127.0.0.2") == CloseCode.PROTOCOL
    [summary] = await server.audit(EventName.DEVICE_HANDSHAKES_UNRECORDED)
    assert (summary.object_type, summary.object_id) == ("network", "127.0.0.1")
    assert summary.details["recorded"] == len(recorded)
    assert summary.details["unrecorded"] == flood - len(recorded)
    assert server.gateway.refusals.unrecorded == flood - len(recorded)
    # The flooder's network starts a new window: its next refusal is recorded again.
    assert await _garbage_handshake(server) == CloseCode.PROTOCOL
    assert [r.details["peer"] for r in await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)][
        -1
    ] == "127.0.0.1"


async def test_a_flood_that_stops_is_summarised_without_another_refusal(server: Server) -> None:
    # The summary of a window's unrecorded refusals was written only at the next refusal: a
    # flood that stopped (the usual end of one) was never summarised, and the refusals past
    # the budget were in no record at all. The app's timer now writes it once the window ends.
    flood = server.gateway.config.refusals_per_network + 5
    for _ in range(flood):
        assert await _garbage_handshake(server) == CloseCode.PROTOCOL
    recorded = len(await server.audit(EventName.DEVICE_HANDSHAKE_FAILED))
    await asyncio.sleep(0.3)  # several flushes: the window is not over, nothing to write
    assert await server.audit(EventName.DEVICE_HANDSHAKES_UNRECORDED) == []
    server.clock.advance(server.gateway.config.refusal_window)
    summaries: list[AuditRecord] = []
    for _ in range(100):  # the timer runs every 50 ms here; wait for its pass, boundedly
        summaries = await server.audit(EventName.DEVICE_HANDSHAKES_UNRECORDED)
        if summaries:
            break
        await asyncio.sleep(0.05)
    [summary] = summaries
    assert (summary.object_type, summary.object_id) == ("network", "127.0.0.1")
    assert (summary.details["recorded"], summary.details["unrecorded"]) == (
        recorded,
        flood - recorded,
    )
    assert len(await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)) == recorded


def test_the_gateway_limits_are_settings(platform: Platform) -> None:
    settings = platform.settings.model_copy(
        update={
            "gateway_max_sessions_per_device": 3,
            "gateway_refusals_per_network": 7,
            "gateway_refusal_window_seconds": 120,
            "gateway_refusal_networks": 99,
        }
    )
    config = GatewayConfig.from_settings(settings)
    assert (
        config.max_sessions_per_device,
        config.refusals_per_network,
        config.refusal_window,
        config.refusal_networks,
    ) == (3, 7, timedelta(minutes=2), 99)
    with pytest.raises(ValueError, match="gateway_refusals_per_network"):
        Settings(gateway_refusals_per_network=0)


def test_the_session_opening_budget_is_settings(platform: Platform) -> None:
    defaults = GatewayConfig.from_settings(platform.settings)
    assert (defaults.handshake_burst, defaults.handshake_refill) == (10, timedelta(minutes=1))
    settings = platform.settings.model_copy(
        update={
            "gateway_handshake_burst": 4,
            "gateway_handshake_refill_seconds": 30,
            "gateway_handshake_devices": 1000,
        }
    )
    config = GatewayConfig.from_settings(settings)
    assert (config.handshake_burst, config.handshake_refill, config.handshake_devices) == (
        4,
        timedelta(seconds=30),
        1000,
    )
    with pytest.raises(ValueError, match="gateway_handshake_burst"):
        Settings(gateway_handshake_burst=0)


async def test_one_identity_cannot_hold_more_than_a_few_sessions(server: Server) -> None:
    # Threat: a stolen device key opens session after session. The clone finding quarantines
    # the device but keeps its sessions open (the copy is not told), so nothing bounded how
    # many one identity held: each a socket, a task and a registry entry that every sweep and
    # command walks. Past a small cap the extra session is refused, told only "try again".
    credentials = await server.enrol()
    first = await server.open(credentials)
    second = await server.open(credentials)  # concurrent: the clone finding, still open
    assert (await server.device(credentials.device_id)).status is DeviceStatus.QUARANTINED
    with pytest.raises(HandshakeRefused) as refused:
        await server.open(credentials)
    assert refused.value.code == CloseCode.TRY_AGAIN_LATER
    live = server.gateway.registry.sessions(credentials.device_id)
    assert {s.session.session_id for s in live} == {first.session_id, second.session_id}
    failures = await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)
    assert [(f.reason, f.object_id) for f in failures] == [("session-limit", credentials.device_id)]
    assert first.close_code is None and second.close_code is None
    assert await first.request(b"a") == b"ack:a"
    # Sessions gone silent do not count: a device reconnecting after losing them gets in,
    # and they are superseded as before (kept under watch until their idle deadline).
    server.clock.advance(timedelta(seconds=31))
    fresh = await server.open(credentials)
    assert await fresh.request(b"x") == b"ack:x"
    live = server.gateway.registry.sessions(credentials.device_id)
    assert [s.session.session_id for s in live] == [fresh.session_id]


# ------------------------------------------------------------- a peer that stops reading


async def _not_reading(server: Server, credentials: DeviceCredentials) -> ClientConnection:
    """A valid session whose device then reads nothing: a small receive buffer, a client queue
    of one message (the library stops reading the socket past it), no pings of its own."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    host, port = server.base.removeprefix("http://").split(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    websocket = await ws_connect(
        server.url, sock=sock, compression=None, max_queue=1, ping_interval=None
    )
    device = _device(credentials, server)
    challenge = await websocket.recv()
    assert isinstance(challenge, bytes)
    await websocket.send(device.respond(challenge, server.clock.now()))
    welcome = await websocket.recv()
    assert isinstance(welcome, bytes)
    device.finish(welcome)
    return websocket


async def test_a_device_that_stops_reading_is_closed_after_the_send_timeout(
    platform: Platform, free_port: int
) -> None:
    # Threat: a TCU (or a copy of its key) that stops reading its socket. Every frame the
    # gateway writes then waits for the buffers to drain, for ever: the session's replies and
    # commands, its close (so a revocation or the credential watcher's sweep, which closes
    # sessions for every device, waits with it). Each write is bounded: past the send timeout
    # the session is closed (4007 send-timeout) and released, and the others go on.
    config = replace(FAST, send_timeout=timedelta(milliseconds=500))
    async with serving(platform, free_port, config) as server:
        stalled = await server.enrol()
        other = await server.enrol(server.world.other_car.id)
        healthy = await server.open(other)
        websocket = await _not_reading(server, stalled)
        flooding = asyncio.create_task(_send_unread(websocket))
        try:
            (live,) = server.gateway.registry.sessions(stalled.device_id)
            async with asyncio.timeout(10):
                while server.gateway.registry.sessions(stalled.device_id):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert live.closed_with is CloseCode.SEND_TIMEOUT
            assert await live.send(b"x") is False  # nothing more is written to it
            # The watcher still reaches every other device: a suspension elsewhere closes it.
            await server.change(
                lambda lc, d: lc.suspend(d, reason="test", actor=FACTORY), other.device_id
            )
            assert await _closed_with(healthy) == CloseCode.SUSPENDED
            closed = await server.audit(EventName.DEVICE_SESSION_CLOSED)
            by_session = {c.details.get("session"): c.details.get("close") for c in closed}
            assert by_session.get(live.session.session_id) == "send-timeout"
        finally:
            flooding.cancel()
            websocket.transport.abort()


async def _send_unread(websocket: ClientConnection) -> None:
    """Frames whose echoes (about 60 KiB each) the device never reads."""
    with contextlib.suppress(ConnectionClosed):
        for _ in range(200):
            await websocket.send(bytes(60_000))


# --------------------------------------------------------------------------- session churn


async def _cycle(server: Server, credentials: DeviceCredentials) -> None:
    """One session opened, used and closed cleanly, its end seen by the gateway."""
    connection = await server.open(credentials)
    assert await connection.request(b"x") == b"ack:x"
    await connection.close()
    for _ in range(200):
        if not server.gateway.registry.sessions(credentials.device_id):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the session did not end")


async def _opened(server: Server, device_id: str) -> int:
    return sum(
        r.object_id == device_id for r in await server.audit(EventName.DEVICE_SESSION_OPENED)
    )


async def test_a_device_opening_sessions_in_a_loop_is_refused_past_its_budget(
    server: Server,
) -> None:
    # Threat: a stolen key (or a TCU in a loop) opens and closes sessions without end: each
    # cycle was two store writes with their audit records, and superseded the genuine car's
    # session; nothing bounded it. Now past a burst of openings a device's handshakes are
    # refused with 4429 before the store is touched, the breach is recorded once, and the
    # device gets in again as its budget refills.
    config = server.gateway.config
    credentials = await server.enrol()
    for _ in range(config.handshake_burst):
        await _cycle(server, credentials)
    seen_before = (await server.device(credentials.device_id)).last_seen_at
    for _ in range(3):
        with pytest.raises(HandshakeRefused) as refused:
            await server.open(credentials)
        assert refused.value.code == CloseCode.TOO_MANY_HANDSHAKES
        assert refused.value.reason == CloseCode.TOO_MANY_HANDSHAKES.phrase
    # Nothing of a session was written: no opening, no last-seen, no session registered.
    assert await _opened(server, credentials.device_id) == config.handshake_burst
    assert (await server.device(credentials.device_id)).last_seen_at == seen_before
    assert server.gateway.registry.sessions(credentials.device_id) == []
    # The refusals go through the refusal budget like any other; the breach is one event.
    failures = await server.audit(EventName.DEVICE_HANDSHAKE_FAILED)
    assert [(f.reason, f.object_id) for f in failures] == [
        ("session-churn", credentials.device_id)
    ] * 3
    [breach] = await server.audit(EventName.DEVICE_SESSION_CHURN)
    assert (breach.object_type, breach.object_id) == ("device", credentials.device_id)
    assert breach.details["transport"] == Transport.WEBSOCKET.value
    assert breach.details["burst"] == config.handshake_burst
    assert 0 < breach.details["retry_after_seconds"] <= config.handshake_refill.total_seconds()
    # Another device is not affected by this one's loop.
    other = await server.enrol(server.world.other_car.id)
    await _cycle(server, other)
    # Once the budget refills, the device opens a session again (one: it is still looping).
    server.clock.advance(config.handshake_refill)
    await _cycle(server, credentials)
    with pytest.raises(HandshakeRefused) as refused:
        await server.open(credentials)
    assert refused.value.code == CloseCode.TOO_MANY_HANDSHAKES
    assert await _opened(server, credentials.device_id) == config.handshake_burst + 1
    # A new breach (after an opening) is recorded again, once.
    assert len(await server.audit(EventName.DEVICE_SESSION_CHURN)) == 2


async def test_a_genuine_car_reconnecting_after_drops_is_never_refused(server: Server) -> None:
    # The limit must not catch a TCU that follows the protocol: a storm of quick reconnects
    # after a network drop, then a session every few minutes (tunnels, ignition cycles).
    credentials = await server.enrol()
    for _ in range(5):
        await _cycle(server, credentials)
    for _ in range(12):
        server.clock.advance(timedelta(minutes=2))
        await _cycle(server, credentials)
    server.clock.advance(timedelta(minutes=1))
    for _ in range(5):
        await _cycle(server, credentials)
    assert await server.audit(EventName.DEVICE_HANDSHAKE_FAILED) == []
    assert await server.audit(EventName.DEVICE_SESSION_CHURN) == []


async def test_a_handshake_refused_for_another_reason_does_not_spend_the_budget(
    server: Server,
) -> None:
    # Only sessions that open count: a device told to retry (the store busy, its sessions at
    # the cap) is not then locked out for having retried.
    credentials = await server.enrol()
    first = await server.open(credentials)
    await server.open(credentials)  # the concurrent-session finding: still open
    for _ in range(server.gateway.config.handshake_burst + 2):
        with pytest.raises(HandshakeRefused) as refused:
            await server.open(credentials)
        assert refused.value.code == CloseCode.TRY_AGAIN_LATER
    await first.close()
    server.clock.advance(timedelta(seconds=31))  # the other session is presumed dead
    await _cycle(server, credentials)
