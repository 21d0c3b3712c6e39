"""The MQTT transport against a real Mosquitto, configured as the gateway renders it, and the
real app (uvicorn, the telemetry pipeline, the store). Runs on SQLite and PostgreSQL.

What the broker refuses is shown at the TLS handshake (the alert it sends) and by the gateway
never receiving a message; what the pipeline refuses is shown by its reply and the store.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from fleetward.app import build_app
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.core.clock import FrozenClock
from fleetward.core.surfaces import Surface
from fleetward.devices.ca import DeviceCa
from fleetward.devices.crl import CrlSigner, crl_pem
from fleetward.devices.lifecycle import DeviceLifecycle
from fleetward.devices.models import Device, DeviceIncident, DeviceStatus, IncidentKind
from fleetward.devices.provisioning import Provisioning
from fleetward.gateway.device_client import (
    DeviceCredentials,
    HandshakeRefused,
    build_csr,
    generate_key,
)
from fleetward.gateway.handshake import CloseCode
from fleetward.gateway.mqtt import control
from fleetward.gateway.mqtt.broker import device_acl, service_acl
from fleetward.gateway.mqtt.config import DEFAULT_CLIENT_ID
from fleetward.gateway.mqtt.consumer import MqttGateway
from fleetward.gateway.mqtt.crl_publisher import CrlPublisher
from fleetward.gateway.mqtt.device import (
    DeviceTls,
    MqttDeviceConnection,
    connect,
    write_credentials,
)
from fleetward.gateway.mqtt.runtime import MqttTransport
from fleetward.gateway.mqtt.topics import Channel, device_topic
from fleetward.gateway.session import Transport
from fleetward.gateway.websocket import Gateway, gateway_of
from fleetward.identity.acr import Acr
from fleetward.platform import Platform
from fleetward.telemetry.envelope import open_reply, seal
from fleetward.telemetry.errors import Status
from fleetward.telemetry.models import TelemetryMessage
from fleetward.vehicles.models import Vehicle
from support.command_push import CommandBeforeReply, signed_command
from support.factories import FACTORY
from support.mosquitto import HOST, Broker, puback_reason, start_broker, tls_probe
from support.serve import served
from unit.devices.kit import DeviceWorld, build_device_world


@pytest.fixture
def clock() -> FrozenClock:
    """Today, not the suite's fixed instant: Mosquitto checks the CRL's validity against the
    machine's real clock (OpenSSL), so the CRL the test signs must be current."""
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


SOFTWARE = "tcu-4.2.0"
CONFIG = "cfg-eu-2026a"
SPEED = json.dumps({"signals": {"Vehicle.Speed": 42.0}}).encode()
WAIT_S = 10.0  # a bound on waiting for an event, never an expectation about speed


@dataclass
class Rig:
    platform: Platform
    clock: FrozenClock
    world: DeviceWorld
    gateway: Gateway
    mqtt: MqttGateway
    broker: Broker
    crl: CrlPublisher
    base: str
    directory: Path
    stack: AsyncExitStack

    async def enrol(self, vehicle: Vehicle | None = None) -> tuple[DeviceCredentials, DeviceTls]:
        """A device for ``vehicle`` (default: the world's car), enrolled through a token."""
        async with self.platform.services() as (uow, ctx):
            provisioning = Provisioning(ctx)
            target = await ctx.session.get(Vehicle, (vehicle or self.world.car).id)
            assert target is not None
            grant = await provisioning.create_enrolment(target, actor=FACTORY)
            key = generate_key()
            csr = build_csr(key, device_id=grant.device_id, vehicle_id=grant.vehicle_id)
            issued = await provisioning.enrol(grant.token, csr, self.world.ca)
            await uow.commit()
        credentials = DeviceCredentials.from_pem(
            key,
            issued.certificate_pem,
            issued.ca_certificate_pem,
            device_id=issued.device_id,
            vehicle_id=issued.vehicle_id,
        )
        return credentials, write_credentials(
            credentials, self.directory / "devices", self.broker.broker_ca
        )

    async def connect(self, device_id: str, tls: DeviceTls) -> MqttDeviceConnection:
        return await self.stack.enter_async_context(
            connect(HOST, self.broker.layout.device_port, device_id, tls)
        )

    async def session(self, credentials: DeviceCredentials, tls: DeviceTls) -> MqttDeviceConnection:
        connection = await self.connect(credentials.device_id, tls)
        await connection.open_session(
            credentials,
            server_id=self.gateway.server_id,
            software_version=SOFTWARE,
            vehicle_config=CONFIG,
            now=self.clock.now,
        )
        return connection

    def frame(self, device: MqttDeviceConnection, counter: int, payload: bytes = SPEED) -> bytes:
        now_ms = int(self.clock.now().timestamp() * 1000)
        return seal(
            device.session_key, payload, counter=counter, sequence=counter, device_time_ms=now_ms
        )

    async def rows(self) -> list[TelemetryMessage]:
        async with self.platform.unit_of_work() as uow:
            return list(await uow.session.scalars(select(TelemetryMessage)))

    async def audit(self, name: EventName) -> list[AuditRecord]:
        async with self.platform.unit_of_work() as uow:
            query = select(AuditRecord).where(AuditRecord.name == name.value)
            return list(await uow.session.scalars(query.order_by(AuditRecord.seq)))

    async def received(self, device_id: str, channel: Channel, count: int) -> None:
        """Wait until the gateway has taken ``count`` messages of ``channel`` from the broker."""
        async with asyncio.timeout(WAIT_S):
            while self.mqtt.received[(device_id, channel)] < count:  # noqa: ASYNC110 - a counter
                await asyncio.sleep(0.01)


@asynccontextmanager
async def rig(platform: Platform, port: int, directory: Path) -> AsyncIterator[Rig]:
    clock = platform.clock
    assert isinstance(clock, FrozenClock)
    async with platform.services() as (uow, ctx):
        world = await build_device_world(platform, ctx)
        await uow.commit()
    # The broker starts with an empty CRL signed by the platform CA; the gateway's publisher
    # rewrites it from the store.
    signer = CrlSigner.load(platform.settings, platform.identity.data_key)
    app = build_app(platform.settings, platform=platform)
    gateway = gateway_of(app)
    assert gateway is not None
    async with AsyncExitStack() as stack:
        broker = await stack.enter_async_context(
            start_broker(
                directory / "broker",
                device_ca=world.ca.certificate,
                crl_pem=crl_pem(signer.sign([], now=clock.now())),
                clock=clock,
            )
        )
        async with served(app, port, HOST) as base:
            transport = MqttTransport(
                gateway,
                broker.gateway_config(
                    crl_file=broker.layout.device_crl, broker_pid_file=broker.layout.pid_file
                ),
            )
            mqtt, crl = transport.consumer, transport.crl
            assert crl is not None
            await transport.start()
            try:
                async with asyncio.timeout(WAIT_S):
                    await mqtt.connected.wait()
                async with AsyncExitStack() as devices:
                    yield Rig(
                        platform,
                        clock,
                        world,
                        gateway,
                        mqtt,
                        broker,
                        crl,
                        base,
                        directory,
                        devices,
                    )
            finally:
                await transport.stop()
        await gateway.registry.idle()


@pytest.fixture
async def mqtt_rig(platform: Platform, free_port: int, tmp_path: Path) -> AsyncIterator[Rig]:
    async with rig(platform, free_port, tmp_path) as running:
        yield running


def _context(certificate: Path | None, key: Path | None, broker_ca: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(broker_ca))
    if certificate is not None and key is not None:
        context.load_cert_chain(str(certificate), str(key))
    return context


# --------------------------------------------------------------------------- a valid session


async def test_telemetry_over_mqtt_reaches_the_store_through_the_pipeline(mqtt_rig: Rig) -> None:
    credentials, tls = await mqtt_rig.enrol()
    device = await mqtt_rig.session(credentials, tls)
    reply = open_reply(device.session_key, await device.request(mqtt_rig.frame(device, 1)))
    assert (reply.status, reply.sequence) == (Status.ACCEPTED, 1)  # acked after the write
    [row] = await mqtt_rig.rows()
    world = mqtt_rig.world
    assert (row.device_id, row.vehicle_id, row.tenant_id, row.sequence) == (
        credentials.device_id,
        world.car.id,
        world.car.tenant_id,
        1,
    )
    assert row.session_id == device.session_id and row.software_version == SOFTWARE
    assert row.certificate_serial == format(credentials.certificate.serial_number, "x")
    # One registry for both transports: the session is known where revocations land.
    [live] = mqtt_rig.gateway.registry.sessions(credentials.device_id)
    assert (live.session.transport, live.session.peer) == (Transport.MQTT, mqtt_rig.mqtt.peer)
    [opened] = await mqtt_rig.audit(EventName.DEVICE_SESSION_OPENED)
    assert opened.object_id == credentials.device_id


# --------------------------------------------------------------------------- the broker's TLS


Credential = Callable[[Rig], Awaitable[tuple[Path | None, Path | None, int]]]


async def _no_certificate(r: Rig) -> tuple[Path | None, Path | None, int]:
    return None, None, r.broker.layout.device_port


async def _foreign_ca(r: Rig) -> tuple[Path | None, Path | None, int]:
    credentials, _ = await r.enrol()
    # Another deployment's CA certifying the same names: a perfect look-alike.
    foreign = DeviceCa.generate(r.clock)
    certificate = foreign.issue(
        credentials.key.public_key(),
        device_id=credentials.device_id,
        vehicle_id=credentials.vehicle_id,
        now=r.clock.now(),
    )
    other = write_credentials(
        DeviceCredentials(
            credentials.device_id, credentials.vehicle_id, credentials.key, certificate
        ),
        r.directory / "foreign",
        r.broker.broker_ca,
    )
    return other.certificate, other.key, r.broker.layout.device_port


async def _gateway_identity_on_device_listener(r: Rig) -> tuple[Path | None, Path | None, int]:
    # The service identity is not trusted where devices connect (its CA is not the device CA).
    config = r.broker.gateway_config()
    return config.certificate, config.key, r.broker.layout.device_port


async def _device_on_service_listener(r: Rig) -> tuple[Path | None, Path | None, int]:
    # A device certificate never reaches the gateway's rights.
    _, tls = await r.enrol()
    return tls.certificate, tls.key, r.broker.layout.service_port


REFUSED_BY_BROKER: list[tuple[str, Credential, str]] = [
    ("no-certificate", _no_certificate, "SSLV3_ALERT_HANDSHAKE_FAILURE"),
    ("foreign-ca", _foreign_ca, "TLSV1_ALERT_UNKNOWN_CA"),
    ("service-identity-as-device", _gateway_identity_on_device_listener, "TLSV1_ALERT_UNKNOWN_CA"),
    ("device-on-service-listener", _device_on_service_listener, "TLSV1_ALERT_UNKNOWN_CA"),
]


@pytest.mark.parametrize(
    ("case", "credential", "alert"), REFUSED_BY_BROKER, ids=[r[0] for r in REFUSED_BY_BROKER]
)
async def test_the_broker_refuses_at_the_tls_handshake(
    mqtt_rig: Rig, case: str, credential: Credential, alert: str
) -> None:
    certificate, key, port = await credential(mqtt_rig)
    context = _context(certificate, key, mqtt_rig.broker.broker_ca)
    assert await tls_probe(port, context) == alert


async def test_a_revoked_certificate_is_refused_by_the_broker_after_the_crl_reload(
    mqtt_rig: Rig,
) -> None:
    credentials, tls = await mqtt_rig.enrol()
    context = _context(tls.certificate, tls.key, tls.broker_ca)
    port = mqtt_rig.broker.layout.device_port
    assert await tls_probe(port, context) == "connack"  # the same certificate, before
    async with mqtt_rig.platform.services() as (uow, ctx):
        lifecycle = DeviceLifecycle(ctx)
        device = await lifecycle.get(credentials.device_id)
        await lifecycle.revoke(device, reason="lost", actor=FACTORY)
        await uow.commit()
    assert await mqtt_rig.crl.publish()  # the store changed: a new CRL, and SIGHUP
    assert not await mqtt_rig.crl.publish()  # nothing new: no rewrite, no reload
    async with asyncio.timeout(WAIT_S):  # until the broker has reloaded
        while (outcome := await tls_probe(port, context)) == "connack":  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    assert outcome == "SSLV3_ALERT_CERTIFICATE_REVOKED"
    # Another device is unaffected by the reload.
    _, other = await mqtt_rig.enrol()
    assert await tls_probe(port, _context(other.certificate, other.key, other.broker_ca)) == (
        "connack"
    )


# --------------------------------------------------------------------------- the broker's ACL


async def test_a_device_cannot_publish_or_listen_under_another_device(mqtt_rig: Rig) -> None:
    victim_credentials, victim_tls = await mqtt_rig.enrol()
    victim = await mqtt_rig.session(victim_credentials, victim_tls)
    attacker_credentials, attacker_tls = await mqtt_rig.enrol(mqtt_rig.world.other_car)
    attacker = await mqtt_rig.session(attacker_credentials, attacker_tls)
    victim_id, attacker_id = victim_credentials.device_id, attacker_credentials.device_id
    # Publishing into the victim's branch: a frame sealed with the victim's own key (as if it
    # were stolen), a HELLO, and a BYE that would end the victim's session.
    await attacker.publish(device_topic(victim_id, Channel.TELEMETRY), mqtt_rig.frame(victim, 1))
    await attacker.publish(device_topic(victim_id, Channel.SESSION_UP), control.HELLO)
    await attacker.publish(
        device_topic(victim_id, Channel.SESSION_UP), control.bye(victim.session_id)
    )
    await attacker.subscribe(device_topic(victim_id, Channel.REPLIES))
    # The attacker's own frame, published after those: once the gateway has it, it has had
    # everything the attacker sent before (one publisher, in order).
    reply = open_reply(attacker.session_key, await attacker.request(mqtt_rig.frame(attacker, 1)))
    assert reply.status is Status.ACCEPTED
    assert mqtt_rig.mqtt.received[(victim_id, Channel.TELEMETRY)] == 0
    # Only the victim's own HELLO and RESPONSE ever came from its branch.
    assert mqtt_rig.mqtt.received[(victim_id, Channel.SESSION_UP)] == 2
    # The victim's session is untouched and its replies reach only the victim.
    victim_reply = await victim.request(mqtt_rig.frame(victim, 1))
    assert open_reply(victim.session_key, victim_reply).status is Status.ACCEPTED
    assert await attacker.request(mqtt_rig.frame(attacker, 2))  # after the victim's reply
    assert attacker.commands.empty()  # nothing of the victim's ever arrived
    stored = {(row.device_id, row.sequence, row.session_id) for row in await mqtt_rig.rows()}
    assert stored == {
        (victim_id, 1, victim.session_id),  # the victim's one frame, from its own session
        (attacker_id, 1, attacker.session_id),
        (attacker_id, 2, attacker.session_id),
    }
    # The broker says so to the publisher: MQTT 5 PUBACK "Not authorized". (Last: the probe
    # connects with the attacker's certificate, so under the attacker's client id, and the
    # broker replaces the attacker's connection with it.)
    context = _context(attacker_tls.certificate, attacker_tls.key, attacker_tls.broker_ca)
    port = mqtt_rig.broker.layout.device_port
    victim_topic = device_topic(victim_id, Channel.TELEMETRY)
    assert await puback_reason(port, context, "attacker-2", victim_topic) == "Not authorized"


async def test_a_handshake_with_another_devices_certificate_is_refused(mqtt_rig: Rig) -> None:
    # The attacker holds a second device's key and certificate, but the broker knows it as
    # itself: a session on its topic must be proven with a certificate naming it.
    stolen, _ = await mqtt_rig.enrol()
    attacker_credentials, attacker_tls = await mqtt_rig.enrol(mqtt_rig.world.other_car)
    attacker = await mqtt_rig.connect(attacker_credentials.device_id, attacker_tls)
    with pytest.raises(HandshakeRefused) as raised:
        await attacker.open_session(
            stolen,
            server_id=mqtt_rig.gateway.server_id,
            software_version=SOFTWARE,
            vehicle_config=CONFIG,
            now=mqtt_rig.clock.now,
        )
    assert raised.value.code == CloseCode.UNAUTHENTICATED
    [failure] = await mqtt_rig.audit(EventName.DEVICE_HANDSHAKE_FAILED)
    assert (failure.reason, failure.object_id) == ("topic-mismatch", attacker_credentials.device_id)
    assert mqtt_rig.gateway.registry.sessions(stolen.device_id) == []


Misstep = Callable[[MqttDeviceConnection], Awaitable[None]]


async def _garbage(d: MqttDeviceConnection) -> None:
    await d.publish(device_topic(d.device_id, Channel.SESSION_UP), b'{"device_id": "x"}')


async def _response_without_challenge(d: MqttDeviceConnection) -> None:
    # A well-framed RESPONSE (type 0x02) that answers no challenge of this gateway.
    await d.publish(device_topic(d.device_id, Channel.SESSION_UP), b"\x02\x01")


MISSTEPS: list[tuple[str, Misstep, CloseCode, str]] = [
    # Identity never comes from a payload: a JSON hello naming a device is not a handshake.
    ("not-a-handshake", _garbage, CloseCode.PROTOCOL, "malformed"),
    # A RESPONSE is only ever an answer to this gateway's pending challenge.
    ("no-challenge", _response_without_challenge, CloseCode.PROTOCOL, "no-challenge"),
]


@pytest.mark.parametrize(
    ("case", "misstep", "code", "reason"), MISSTEPS, ids=[m[0] for m in MISSTEPS]
)
async def test_a_session_message_out_of_turn_is_refused_and_audited(
    mqtt_rig: Rig, case: str, misstep: Misstep, code: CloseCode, reason: str
) -> None:
    credentials, tls = await mqtt_rig.enrol()
    device = await mqtt_rig.connect(credentials.device_id, tls)
    await misstep(device)
    async with asyncio.timeout(WAIT_S):
        assert await device.wait_closed() == code  # a CLOSED naming no session
    [failure] = await mqtt_rig.audit(EventName.DEVICE_HANDSHAKE_FAILED)
    assert (failure.reason, failure.object_id) == (reason, credentials.device_id)
    assert failure.details == {"peer": mqtt_rig.mqtt.peer, "close": code.phrase}
    assert mqtt_rig.gateway.registry.sessions(credentials.device_id) == []


def test_the_rendered_acls_confine_devices_to_their_own_branch() -> None:
    assert device_acl().splitlines()[1:] == [
        "pattern write fleetward/v1/devices/%u/session/up",
        "pattern write fleetward/v1/devices/%u/telemetry",
        "pattern read fleetward/v1/devices/%u/session/down",
        "pattern read fleetward/v1/devices/%u/replies",
        "pattern read fleetward/v1/devices/%u/commands",
    ]
    assert service_acl("fleetward-gateway").splitlines() == [
        "user fleetward-gateway",
        "topic read fleetward/v1/devices/+/session/up",
        "topic read fleetward/v1/devices/+/telemetry",
        "topic write fleetward/v1/devices/+/session/down",
        "topic write fleetward/v1/devices/+/replies",
        "topic write fleetward/v1/devices/+/commands",
    ]
    # A value that would smuggle an option of its own into the file is refused.
    with pytest.raises(ValueError, match="single tokens"):
        service_acl("gateway\ntopic readwrite #")


# --------------------------------------------------------------------------- the pipeline


def _tampered(r: Rig, d: MqttDeviceConnection) -> bytes:
    frame = bytearray(r.frame(d, 2))
    frame[30] ^= 0x01  # one bit of the payload
    return bytes(frame)


def _replayed(r: Rig, d: MqttDeviceConnection) -> bytes:
    return r.frame(d, 1)  # the accepted frame again, byte for byte


def _foreign_vehicle(r: Rig, d: MqttDeviceConnection) -> bytes:
    payload = json.dumps(
        {"vehicle_id": r.world.other_car.id, "signals": {"Vehicle.Speed": 1.0}}
    ).encode()
    return r.frame(d, 2, payload)


REFUSED_BY_PIPELINE: list[tuple[str, Callable[[Rig, MqttDeviceConnection], bytes], Status]] = [
    # Integrity: any changed bit fails the session MAC.
    ("tampered", _tampered, Status.BAD_MAC),
    # Freshness: a captured frame sent again reuses its counter.
    ("replayed", _replayed, Status.STALE_COUNTER),
    # Identity is the session's: a payload naming another vehicle is refused, not rerouted.
    ("foreign-vehicle", _foreign_vehicle, Status.FOREIGN_IDENTITY),
]


@pytest.mark.parametrize(
    ("case", "make", "status"), REFUSED_BY_PIPELINE, ids=[r[0] for r in REFUSED_BY_PIPELINE]
)
async def test_the_pipeline_refuses_over_mqtt_as_over_websocket(
    mqtt_rig: Rig,
    case: str,
    make: Callable[[Rig, MqttDeviceConnection], bytes],
    status: Status,
) -> None:
    credentials, tls = await mqtt_rig.enrol()
    device = await mqtt_rig.session(credentials, tls)
    first = open_reply(device.session_key, await device.request(mqtt_rig.frame(device, 1)))
    assert first.status is Status.ACCEPTED
    refused = open_reply(device.session_key, await device.request(make(mqtt_rig, device)))
    assert refused.status is status
    assert [row.sequence for row in await mqtt_rig.rows()] == [1]  # nothing else stored


async def test_a_command_pushed_while_a_frame_awaits_its_reply_is_kept_for_receive(
    mqtt_rig: Rig,
) -> None:
    # The platform delivers a job whenever it has one, also between a telemetry frame and its
    # reply. request() returned the next message whatever it was: the COMMAND came back as
    # the frame's reply, and the reply later from receive() as if it were a command.
    credentials, tls = await mqtt_rig.enrol()
    device = await mqtt_rig.session(credentials, tls)
    command = signed_command(credentials.vehicle_id, mqtt_rig.clock.now())
    gateway = mqtt_rig.gateway
    gateway.handler = CommandBeforeReply(gateway.handler, gateway.registry, command)
    async with asyncio.timeout(WAIT_S):
        first = open_reply(device.session_key, await device.request(mqtt_rig.frame(device, 1)))
        second = open_reply(device.session_key, await device.request(mqtt_rig.frame(device, 2)))
        # Both commands wait for receive, in the order they came.
        assert [await device.receive(), await device.receive()] == [command, command]
    assert [(r.status, r.counter) for r in (first, second)] == [
        (Status.ACCEPTED, 1),
        (Status.ACCEPTED, 2),
    ]
    assert [row.sequence for row in await mqtt_rig.rows()] == [1, 2]


# --------------------------------------------------------------------------- revocation


def _admin_token(r: Rig) -> str:
    world = r.world
    return r.platform.identity.tokens.issue(
        subject=world.admin.id,
        client_id="cli_admin_console",
        tenant=world.operator.id,
        surface=Surface.ADMIN,
        scopes=["admin:manage_clients"],
        auth_time=r.clock.now(),
        acr=Acr.MFA.value,
        amr=["pwd", "otp"],
        token_family=None,
        subject_type="user",
    ).token


async def test_revoking_through_the_api_closes_the_mqtt_session_at_once(mqtt_rig: Rig) -> None:
    credentials, tls = await mqtt_rig.enrol()
    device = await mqtt_rig.session(credentials, tls)
    assert open_reply(device.session_key, await device.request(mqtt_rig.frame(device, 1)))
    async with httpx.AsyncClient(base_url=mqtt_rig.base) as http:
        response = await http.post(
            f"/admin/v1/devices/{credentials.device_id}/revoke",
            json={"reason": "compromised"},
            headers={"authorization": f"Bearer {_admin_token(mqtt_rig)}"},
        )
    assert response.status_code == 200, response.text
    # Closed by the registry before the API answered: the gateway no longer holds it.
    assert mqtt_rig.gateway.registry.sessions(credentials.device_id) == []
    async with asyncio.timeout(WAIT_S):
        assert await device.wait_closed() == CloseCode.REVOKED
    # The broker connection is still open (until the CRL reload refuses the next one), but
    # what it sends is dropped unjudged.
    await device.send(mqtt_rig.frame(device, 2))
    await mqtt_rig.received(credentials.device_id, Channel.TELEMETRY, 2)
    # The consumer forgets the closed session on its own task, right after the close: bounded.
    for _ in range(int(WAIT_S / 0.01)):
        if mqtt_rig.mqtt.session(credentials.device_id) is None:
            break
        await asyncio.sleep(0.01)
    assert mqtt_rig.mqtt.session(credentials.device_id) is None
    assert [row.sequence for row in await mqtt_rig.rows()] == [1]
    async with mqtt_rig.platform.unit_of_work() as uow:
        closed = await uow.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.name == EventName.DEVICE_SESSION_CLOSED.value)
        )
    assert closed == 1


async def test_a_new_session_ends_the_one_it_replaces(mqtt_rig: Rig) -> None:
    # Threat: over MQTT a device opens sessions with HELLO and RESPONSE on one broker
    # connection, and only its newest session is reachable (the consumer routes the device's
    # topics to it). The ones it replaced lingered, unreachable, in the registry and as tasks
    # until their idle timeout: one connection could hold any number of sessions.
    credentials, tls = await mqtt_rig.enrol()
    device = await mqtt_rig.session(credentials, tls)
    replaced = [device.session_id]
    for _ in range(2):
        await device.open_session(
            credentials,
            server_id=mqtt_rig.gateway.server_id,
            software_version=SOFTWARE,
            vehicle_config=CONFIG,
            now=mqtt_rig.clock.now,
        )
        replaced.append(device.session_id)
    newest = replaced.pop()
    registry = mqtt_rig.gateway.registry
    for _ in range(int(WAIT_S / 0.05)):
        closes = await mqtt_rig.audit(EventName.DEVICE_SESSION_CLOSED)
        if len(closes) == len(replaced):
            break
        await asyncio.sleep(0.05)
    assert [s.session.session_id for s in registry.sessions(credentials.device_id)] == [newest]
    assert sorted(c.details["session"] for c in closes) == sorted(replaced)
    assert {c.details["close"] for c in closes} == {CloseCode.SUPERSEDED.phrase}
    # The newest session is the device's: its frames are judged and answered.
    reply = open_reply(device.session_key, await device.request(mqtt_rig.frame(device, 1)))
    assert reply.status is Status.ACCEPTED


async def test_a_copy_taking_over_a_quiet_mqtt_session_is_found_when_the_car_speaks(
    mqtt_rig: Rig,
) -> None:
    # Threat: a copy of the device key, as on the WebSocket. Over MQTT both holders of the
    # key share the device's topics: the copy's handshake superseded the parked car's session
    # (quiet past the liveness window, within its idle timeout), and the car's next frame went
    # to the copy's session, refused as a bad tag, with nothing recorded. Now the superseded
    # session is watched until its idle deadline: a frame under its key shows its car alive.
    credentials, tls = await mqtt_rig.enrol()
    device_id = credentials.device_id
    car = await mqtt_rig.session(credentials, tls)
    reply = open_reply(car.session_key, await car.request(mqtt_rig.frame(car, 1)))
    assert reply.status is Status.ACCEPTED
    car_session, car_key = car.session_id, car.session_key
    mqtt_rig.clock.advance(timedelta(seconds=31))  # parked: quiet past the liveness window
    # The copy, on the device's topics (the same broker connection here: a second one with
    # the device's client id would replace it at the broker).
    await car.open_session(
        credentials,
        server_id=mqtt_rig.gateway.server_id,
        software_version=SOFTWARE,
        vehicle_config=CONFIG,
        now=mqtt_rig.clock.now,
    )
    copy_session, copy_key = car.session_id, car.session_key
    now_ms = int(mqtt_rig.clock.now().timestamp() * 1000)
    copied = seal(copy_key, SPEED, counter=1, sequence=2, device_time_ms=now_ms)
    # The newest session is judged as a car's back after a drop would be: nothing found.
    assert open_reply(copy_key, await car.request(copied)).status is Status.ACCEPTED
    async with mqtt_rig.platform.unit_of_work() as uow:
        assert list(await uow.session.scalars(select(DeviceIncident))) == []
    await car.send(seal(car_key, SPEED, counter=2, sequence=3, device_time_ms=now_ms))
    incidents: list[DeviceIncident] = []
    for _ in range(int(WAIT_S / 0.05)):
        async with mqtt_rig.platform.unit_of_work() as uow:
            incidents = list(await uow.session.scalars(select(DeviceIncident)))
        if incidents:
            break
        await asyncio.sleep(0.05)
    [incident] = incidents
    assert (incident.device_id, incident.kind) == (device_id, IncidentKind.CONCURRENT_SESSION)
    assert incident.details == {
        "session": car_session,
        "other_sessions": [copy_session],
        "finding": "superseded-session-heard",
    }
    [detected] = await mqtt_rig.audit(EventName.DEVICE_CLONE_DETECTED)
    assert detected.object_id == device_id
    async with mqtt_rig.platform.unit_of_work() as uow:
        device = await uow.session.get(Device, device_id)
        assert device is not None and device.status is DeviceStatus.QUARANTINED
    for _ in range(int(WAIT_S / 0.05)):  # the close is recorded after the worker ended
        closes = await mqtt_rig.audit(EventName.DEVICE_SESSION_CLOSED)
        if closes:
            break
        await asyncio.sleep(0.05)
    assert [(c.details["session"], c.details["close"]) for c in closes] == [
        (car_session, CloseCode.SUPERSEDED.phrase)
    ]
    # The frame that gave the car away was never judged; the copy's session goes on.
    assert [row.sequence for row in await mqtt_rig.rows()] == [1, 2]
    assert [s.session.session_id for s in mqtt_rig.gateway.registry.sessions(device_id)] == [
        copy_session
    ]


async def test_a_device_cannot_take_over_another_clients_connection(mqtt_rig: Rig) -> None:
    # MQTT client ids are one namespace across the broker's listeners, and a CONNECT with a
    # client id already connected disconnects the holder (session takeover). A device's
    # client id must be its certificate's identity, or any device could knock another
    # vehicle, or the gateway itself, off the broker by naming their client id.
    victim_credentials, victim_tls = await mqtt_rig.enrol()
    victim = await mqtt_rig.session(victim_credentials, victim_tls)
    _, attacker_tls = await mqtt_rig.enrol(mqtt_rig.world.other_car)
    context = _context(attacker_tls.certificate, attacker_tls.key, attacker_tls.broker_ca)
    port = mqtt_rig.broker.layout.device_port
    for client_id in (victim_credentials.device_id, DEFAULT_CLIENT_ID):
        assert await tls_probe(port, context, client_id) == "connack"
    # Neither connection was taken over: the victim's session still answers, and the broker
    # never closed a client for another's CONNECT.
    reply = await victim.request(mqtt_rig.frame(victim, 1))
    assert open_reply(victim.session_key, reply).status is Status.ACCEPTED
    assert "already connected" not in mqtt_rig.broker.layout.log_file.read_text()
