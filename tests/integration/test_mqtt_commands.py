"""Remote commands over the MQTT transport: the real app, a real Mosquitto (TLS, client
certificates, the rendered ACLs), the simulated vehicle through the broker, real tokens.
Runs on SQLite and PostgreSQL.

What it proves: a COMMAND reaches the vehicle on its ``commands`` topic and its signed RESULT
comes back on ``telemetry`` to the command service (never the pipeline), so the job ends
confirmed; the broker refuses a RESULT published under another device's id, and any device's
publication on a ``commands`` topic (its own included), and delivers nobody else's commands;
a tampered RESULT on the device's own topic is refused by the platform and audited, and the
job waits for the genuine one.

The clock runs from the real time (not the suite's fixed instant): OpenSSL in the broker
judges the certificates and the CRL by the real clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import func, select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.commands.envelope import (
    COMMAND_TYPE,
    RESULT_TYPE,
    CommandResult,
    ResultVerdict,
    envelope_digest,
    open_command,
    seal_result,
)
from fleetward.commands.models import CommandJob
from fleetward.gateway.mqtt.device import MqttDeviceConnection
from fleetward.gateway.mqtt.topics import Channel, device_topic
from fleetward.gateway.session import Transport
from fleetward.platform import Platform
from fleetward.sim.command_guard import CommandGuard
from fleetward.sim.commands import SimCommandExecutor
from fleetward.sim.frames import encode_payload
from fleetward.sim.mqtt import MqttSimTransport
from fleetward.sim.vehicle import SimVehicle
from fleetward.telemetry.envelope import open_reply, seal
from fleetward.telemetry.errors import Status
from fleetward.telemetry.models import TelemetryMessage
from support.commands import RunningClock
from support.mosquitto import HOST
from support.mqtt_commands import (
    CONFIG,
    SOFTWARE,
    WAIT_S,
    MqttCommandWorld,
    mqtt_command_world,
    publish_reason,
)

NOT_AUTHORIZED = "Not authorized"
REFUSED = EventName.COMMAND_RESULT_REFUSED


@pytest.fixture
def clock() -> RunningClock:
    return RunningClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def world(
    platform: Platform, clock: RunningClock, free_port: int, tmp_path: Path
) -> AsyncIterator[MqttCommandWorld]:
    async with mqtt_command_world(
        platform, clock, free_port, tmp_path, provision=("ALICE-1", "DAVE-1")
    ) as running:
        yield running


async def reported(running: MqttCommandWorld, label: str) -> None:
    """Wait until the car's first message was accepted (its state is in the store)."""
    car = running.world.cars[label]
    async with asyncio.timeout(WAIT_S):
        while car.driver.tally.replies.get("accepted", 0) < 1:  # noqa: ASYNC110 - a counter
            await asyncio.sleep(0.02)


async def audit(platform: Platform, name: EventName) -> list[AuditRecord]:
    async with platform.unit_of_work() as uow:
        query = select(AuditRecord).where(AuditRecord.name == name.value)
        return list(await uow.session.scalars(query.order_by(AuditRecord.seq)))


async def stored(platform: Platform, device_id: str) -> int:
    async with platform.unit_of_work() as uow:
        count = await uow.session.scalar(
            select(func.count())
            .select_from(TelemetryMessage)
            .where(TelemetryMessage.device_id == device_id)
        )
        return int(count or 0)


async def delivered_job(running: MqttCommandWorld, job_id: str) -> CommandJob:
    async with running.world.platform.unit_of_work() as uow:
        job = await uow.session.get(CommandJob, job_id)
        assert job is not None
        return job


async def next_command(device: MqttDeviceConnection) -> bytes:
    async with asyncio.timeout(WAIT_S):
        while True:
            message = await device.receive()
            if message[:1] == bytes([COMMAND_TYPE]):
                return message


async def test_alice_unlocks_her_car_over_mqtt_and_watches_it_confirmed(
    world: MqttCommandWorld,
) -> None:
    # The WebSocket story, through the broker: the envelope goes down the car's commands
    # topic, the car's signed answer comes up its telemetry topic, and the car's next report
    # confirms the effect.
    running = world
    car = running.world.cars["ALICE-1"]
    device_id = running.device_id("ALICE-1")
    await reported(running, "ALICE-1")
    [session] = running.gateway.registry.sessions(device_id)
    assert session.session.transport is Transport.MQTT
    assert car.vehicle.state.locked is True
    response = await running.world.command("alice", "ALICE-1", "unlock")
    assert response.status_code == 202, response.text
    job = response.json()
    final = await running.world.settle("alice", "ALICE-1", job["id"])
    assert final["state"] == "confirmed", final
    assert [t["to_state"] for t in final["transitions"]] == [
        "requested",
        "authorized",
        "queued",
        "delivered",
        "executed",
        "confirmed",
    ]
    assert final["result_reason"] == "ok"
    assert car.vehicle.state.locked is False
    assert car.acted() == 1
    await car.offline()
    tally = car.driver.tally
    assert tally.commands == {"acted:ok": 1}
    # Every message of the car came through the broker: its frames and its one result, on
    # its telemetry topic. The result never reached the pipeline: every stored row is one
    # accepted frame, and the consumer dropped nothing.
    assert running.consumer.received[(device_id, Channel.TELEMETRY)] == tally.messages + 1
    assert await stored(running.world.platform, device_id) == tally.replies["accepted"]
    assert running.consumer.dropped_frames == 0
    assert await audit(running.world.platform, EventName.COMMAND_RESULT_REFUSED) == []


async def test_the_broker_refuses_results_under_another_device_and_any_command_publication(
    world: MqttCommandWorld,
) -> None:
    # DAVE-1's device (a genuine certificate of the platform) tries to answer for ALICE-1:
    # the broker's ACL keeps each device to its own branch, so nothing it publishes under
    # ALICE-1's id, nor on any commands topic, is ever delivered.
    running = world
    victim_id, attacker_id = running.device_id("ALICE-1"), running.device_id("DAVE-1")
    attacker_credentials = running.credentials["DAVE-1"]
    await reported(running, "ALICE-1")
    # The attacker listens on its own connection, and tries to listen on the victim's
    # commands topic too.
    attacker = await running.connect("DAVE-1")
    await attacker.subscribe(device_topic(victim_id, Channel.COMMANDS))
    response = await running.world.command("alice", "ALICE-1", "unlock")
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    final = await running.world.settle("alice", "ALICE-1", job_id)
    assert final["state"] == "confirmed", final
    job = await delivered_job(running, job_id)
    counter, digest = job.counter or 0, bytes.fromhex(job.envelope_digest or "")
    # A RESULT for the victim's job, as the attacker can make it (signed with its own key).
    forged = seal_result(
        CommandResult(
            job_id=job_id,
            vehicle_id=attacker_credentials.vehicle_id,
            device_id=attacker_id,
            counter=counter,
            envelope_digest=digest,
            verdict=ResultVerdict.FAILED,
            reason="forged",
            device_time_ms=int(running.world.clock.now().timestamp() * 1000),
        ),
        attacker_credentials.key,
    )
    context = running.tls("DAVE-1").context()
    port = running.broker.layout.device_port
    victim_results = device_topic(victim_id, Channel.TELEMETRY)
    # The broker's answer to each publication: MQTT 5 PUBACK "Not authorized".
    assert await publish_reason(port, context, "dave-probe", victim_results, forged) == (
        NOT_AUTHORIZED
    )
    for target in (victim_id, attacker_id):  # no device publishes commands, even its own
        commands = device_topic(target, Channel.COMMANDS)
        assert await publish_reason(port, context, "dave-probe", commands, forged) == (
            NOT_AUTHORIZED
        )
    # What the attacker may publish, it may: the same bytes on its own telemetry topic are
    # accepted by the broker (and refused by the platform: no session, dropped unjudged).
    own = device_topic(attacker_id, Channel.TELEMETRY)
    assert await publish_reason(port, context, "dave-probe", own, forged) == "Success"
    async with asyncio.timeout(WAIT_S):
        while running.consumer.received[(attacker_id, Channel.TELEMETRY)] < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
    # Nothing of it reached the victim's session or the command service, and the job stands.
    assert await audit(running.world.platform, EventName.COMMAND_RESULT_REFUSED) == []
    after = await running.world.job("alice", "ALICE-1", job_id)
    assert after["state"] == "confirmed" and after["result_reason"] == "ok"
    # The attacker's connection never received the victim's command (nor anything else).
    assert attacker.unexpected.empty()
    assert running.world.cars["ALICE-1"].acted() == 1


async def test_a_tampered_result_is_refused_and_the_job_waits_for_the_genuine_one(
    world: MqttCommandWorld,
) -> None:
    # A relay (the broker, a proxy) holding a genuine RESULT changes one byte: the platform
    # verifies the device's signature, refuses and audits it, and the job is unchanged; the
    # genuine answer, sent after it on the same session, is recorded.
    running = world
    label = "DAVE-1"  # not driven by the simulator: this test is the TCU
    credentials = running.credentials[label]
    device = await running.session(label)
    [live] = running.gateway.registry.sessions(credentials.device_id)
    response = await running.world.command("dave", label, "horn_lights")
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    envelope = await next_command(device)
    opened = open_command(envelope, credentials.command_keys)
    assert (opened.job_id, opened.vehicle_id) == (job_id, credentials.vehicle_id)
    delivered = await running.world.job("dave", label, job_id)
    assert delivered["state"] == "delivered"

    guard = CommandGuard(
        vehicle_id=credentials.vehicle_id,
        device_id=credentials.device_id,
        device_key=credentials.key,
        trusted_keys=credentials.command_keys,
        clock=running.world.clock.now,
        receiver=SimCommandExecutor(SimVehicle(seed=7)),
    )
    answer, _outcome = await guard.handle(envelope)
    assert answer is not None and answer[:1] == bytes([RESULT_TYPE])
    # One bit of the signature (the frame's last byte) flipped on the way.
    tampered = answer[:-1] + bytes([answer[-1] ^ 0x01])
    await device.send(tampered)
    async with asyncio.timeout(WAIT_S):
        while not (refused := await audit(running.world.platform, REFUSED)):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    [record] = refused
    assert record.object_id == credentials.device_id
    assert record.details["session_id"] == live.session.session_id
    assert record.details["job_id"] == job_id
    still = await running.world.job("dave", label, job_id)
    assert still["state"] == "delivered"
    assert still["transitions"] == delivered["transitions"]

    await device.send(answer)  # the genuine answer, on the same session
    final = await running.world.settle(
        "dave", label, job_id, until={"executed", "confirmed", "failed", "outcome_unknown"}
    )
    assert final["state"] in {"executed", "confirmed"}, final
    assert final["result_reason"] == "ok"
    # Neither result was taken for telemetry: nothing stored, and the session is still open.
    assert await stored(running.world.platform, credentials.device_id) == 0
    assert live.closed_with is None
    # The envelope the device answered is the one the platform recorded as delivered.
    job = await delivered_job(running, job_id)
    assert job.envelope_digest == envelope_digest(envelope).hex()


async def test_an_idle_simulator_link_waits_for_commands_past_its_reply_timeout(
    world: MqttCommandWorld, tmp_path: Path
) -> None:
    # The simulator's reader waits on its link between ticks: with no frame in flight the
    # reply timeout does not run, so a quiet vehicle still gets its commands; a frame sent
    # afterwards gets its reply as before, and the result in between expects none.
    running = world
    label = "DAVE-1"
    credentials = running.credentials[label]
    reply_timeout = 0.2
    transport = MqttSimTransport(
        HOST,
        running.broker.layout.device_port,
        server_id=running.gateway.server_id,
        broker_ca=running.broker.broker_ca,
        credentials_dir=tmp_path / "idle-tcu",
        reply_timeout_s=reply_timeout,
    )
    link = await transport.open(
        credentials, software_version=SOFTWARE, vehicle_config=CONFIG, now=running.world.clock.now
    )
    try:
        waiting = asyncio.ensure_future(link.receive())
        await asyncio.sleep(reply_timeout * 5)
        assert not waiting.done()  # idle, not timed out
        response = await running.world.command("dave", label, "horn_lights")
        assert response.status_code == 202, response.text
        async with asyncio.timeout(WAIT_S):
            envelope = await waiting
        assert envelope[:1] == bytes([COMMAND_TYPE])
        guard = CommandGuard(
            vehicle_id=credentials.vehicle_id,
            device_id=credentials.device_id,
            device_key=credentials.key,
            trusted_keys=credentials.command_keys,
            clock=running.world.clock.now,
            receiver=SimCommandExecutor(SimVehicle(seed=3)),
        )
        answer, _outcome = await guard.handle(envelope)
        assert answer is not None
        await link.send(answer)
        final = await running.world.settle(
            "dave", label, response.json()["id"], until={"executed", "confirmed", "failed"}
        )
        assert final["state"] in {"executed", "confirmed"}, final
        await asyncio.sleep(reply_timeout * 2)  # the result awaits no reply
        now_ms = int(running.world.clock.now().timestamp() * 1000)
        frame = seal(
            link.session_key,
            encode_payload(SimVehicle(seed=3).signals()),
            counter=1,
            sequence=1,
            device_time_ms=now_ms,
        )
        await link.send(frame)
        reply = open_reply(link.session_key, await link.receive())
        assert reply.status is Status.ACCEPTED
    finally:
        await link.close()
