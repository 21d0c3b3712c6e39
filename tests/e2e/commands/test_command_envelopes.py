"""What reaches the vehicle is verified by the vehicle: envelopes replayed, tampered with,
expired, meant for another vehicle or forged without the command key do nothing, and a
replayed answer changes nothing on the platform. The envelopes here are the real ones the
platform signed (captured on their way into the simulated car) or signed by its real key.

Each case: one comment on the threat it covers.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from sqlalchemy import select

from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.commands import dispatch as dispatch_module
from fleetward.commands import results
from fleetward.commands.dispatch import REFUSED_RESULTS_PER_SESSION
from fleetward.commands.envelope import CommandEnvelope, seal_command
from fleetward.commands.models import CommandJob
from fleetward.commands.runtime import commands_of
from fleetward.commands.signing import CommandSigner
from fleetward.devices.models import DeviceStatus
from fleetward.gateway.handshake import CloseCode, epoch_ms
from fleetward.gateway.registry import LiveSession
from fleetward.gateway.websocket import Gateway, gateway_of
from fleetward.sim.command_guard import CommandGuard, GuardAction
from fleetward.telemetry.errors import Status
from fleetward.telemetry.pipeline import TelemetryPipeline
from support.commands import CommandWorld, reported


class Recorder:
    """Keeps every envelope the car's guard is handed, and every answer it gives."""

    def __init__(self, guard: CommandGuard, *, swallow: bool = False) -> None:
        """``swallow``: the answers never leave the car (a link lost on the way back)."""
        self.frames: list[bytes] = []
        self.answers: list[bytes] = []
        original = guard.handle

        async def handle(frame: bytes) -> Any:
            self.frames.append(frame)
            answer, outcome = await original(frame)
            if answer is not None:
                self.answers.append(answer)
            return (None if swallow else answer), outcome

        guard.handle = handle  # type: ignore[method-assign]


async def unlocked(world: CommandWorld) -> tuple[CommandGuard, Recorder, str]:
    """alice unlocks ALICE-1 (confirmed); the envelope and the answer were recorded."""
    guard = world.cars["ALICE-1"].driver.guard
    assert guard is not None
    recorder = Recorder(guard)
    await reported(world, "ALICE-1")
    response = await world.command("alice", "ALICE-1", "unlock", key="env-1")
    job_id = response.json()["id"]
    final = await world.settle("alice", "ALICE-1", job_id)
    assert final["state"] == "confirmed"
    assert len(recorder.frames) == 1 and len(recorder.answers) == 1
    return guard, recorder, job_id


async def answered_unheard(world: CommandWorld, command: str, key: str) -> Unheard:
    """alice's ``command`` to ALICE-1, delivered; the car's signed answer kept back (a link
    lost on the way back), with the session it would have come on."""
    await reported(world, "ALICE-1")
    guard = world.cars["ALICE-1"].driver.guard
    assert guard is not None
    recorder = Recorder(guard, swallow=True)
    response = await world.command("alice", "ALICE-1", command, key=key)
    job_id = response.json()["id"]
    await world.settle("alice", "ALICE-1", job_id, until={"delivered"})
    for _ in range(100):
        if recorder.answers:
            break
        await asyncio.sleep(0.02)
    gateway = gateway_of(world.app)
    assert gateway is not None
    live = gateway.registry.commandable(world.vehicles["ALICE-1"].id)
    assert live is not None
    return Unheard(job_id, live, recorder.answers[0])


@dataclass(frozen=True)
class Unheard:
    job_id: str
    live: LiveSession
    answer: bytes


async def refused_reasons(world: CommandWorld) -> list[str | None]:
    """The reasons of every refused command answer recorded so far."""
    async with world.platform.unit_of_work() as uow:
        return list(
            await uow.session.scalars(
                select(AuditRecord.reason).where(
                    AuditRecord.name == EventName.COMMAND_RESULT_REFUSED.value
                )
            )
        )


async def assert_refused_as_quarantined(world: CommandWorld, unheard: Unheard) -> None:
    """The kept-back answer, given now, is refused as a quarantined device's and audited; its
    job stays delivered."""
    await commands_of(world.app).dispatcher.on_result(unheard.live, unheard.answer)
    assert (await world.job("alice", "ALICE-1", unheard.job_id))["state"] == "delivered"
    reasons = await refused_reasons(world)
    assert reasons == ["device-quarantined"]


def envelope(world: CommandWorld, label: str, *, counter: int, expired: bool = False) -> bytes:
    signer = commands_of(world.app).signer
    now = epoch_ms(world.clock.now())
    return seal_command(
        CommandEnvelope(
            vehicle_id=world.vehicles[label].id,
            job_id="job_" + "a" * 26,
            command="vehicle:unlock",
            parameters={},
            issued_at_ms=now - 60_000 if expired else now,
            expires_at_ms=now - 30_000 if expired else now + 30_000,
            counter=counter,
            key_id=signer.key_id,
        ),
        signer,
    )


async def test_a_replayed_envelope_does_nothing(world: CommandWorld) -> None:
    # Someone on the path (a broker, a gateway) sends the unlock again after the owner
    # locked the car: the car answers with its first answer and stays locked.
    guard, recorder, _job = await unlocked(world)
    car = world.cars["ALICE-1"]
    car.vehicle.set_locked(True)
    answer, outcome = await guard.handle(recorder.frames[0])
    assert outcome.action is GuardAction.RESENT
    assert answer == recorder.answers[0]
    assert car.vehicle.state.locked is True
    assert guard.stats.acted == 1


async def test_a_tampered_envelope_is_refused_unanswered(world: CommandWorld) -> None:
    # A byte changed anywhere (here: the command name region) breaks the signature; the car
    # neither acts nor signs anything about it.
    guard, recorder, _job = await unlocked(world)
    car = world.cars["ALICE-1"]
    car.vehicle.set_locked(True)
    frame = bytearray(recorder.frames[0])
    frame[60] ^= 0x01
    answer, outcome = await guard.handle(bytes(frame))
    assert answer is None and outcome.action is GuardAction.REFUSED
    assert car.vehicle.state.locked is True and guard.stats.acted == 1


async def test_an_expired_envelope_is_refused(world: CommandWorld) -> None:
    # A validly signed envelope held back past its deadline (a delayed or stored frame).
    guard = world.cars["ALICE-1"].driver.guard
    assert guard is not None
    await reported(world, "ALICE-1")
    answer, outcome = await guard.handle(envelope(world, "ALICE-1", counter=10**6, expired=True))
    assert outcome.action is GuardAction.REFUSED and outcome.reason == "expired"
    assert answer is not None  # a signed refusal: the platform may record it
    assert world.cars["ALICE-1"].vehicle.state.locked is True and guard.stats.acted == 0


async def test_an_envelope_for_another_vehicle_is_refused(world: CommandWorld) -> None:
    # A validly signed envelope for MALLORY-1 routed to ALICE-1 (a routing fault or attack).
    guard = world.cars["ALICE-1"].driver.guard
    assert guard is not None
    await reported(world, "ALICE-1")
    answer, outcome = await guard.handle(envelope(world, "MALLORY-1", counter=10**6))
    assert answer is None and outcome.reason == "wrong-vehicle"
    assert world.cars["ALICE-1"].vehicle.state.locked is True and guard.stats.acted == 0


async def test_an_envelope_without_the_command_key_is_refused(world: CommandWorld) -> None:
    # A compromised broker forges an envelope under the platform's key id with its own key.
    guard = world.cars["ALICE-1"].driver.guard
    assert guard is not None
    await reported(world, "ALICE-1")
    real = commands_of(world.app).signer
    forger = CommandSigner(ed25519.Ed25519PrivateKey.generate())
    forger._key_id = real.key_id  # claims to be the platform's key
    now = epoch_ms(world.clock.now())
    unsigned = CommandEnvelope(
        vehicle_id=world.vehicles["ALICE-1"].id,
        job_id="job_" + "b" * 26,
        command="vehicle:unlock",
        parameters={},
        issued_at_ms=now,
        expires_at_ms=now + 30_000,
        counter=10**6,
        key_id=forger.key_id,
    )
    answer, outcome = await guard.handle(seal_command(unsigned, forger))
    assert answer is None and outcome.action is GuardAction.REFUSED
    assert outcome.reason == "bad-signature"
    assert world.cars["ALICE-1"].vehicle.state.locked is True and guard.stats.acted == 0


async def test_a_replayed_answer_changes_nothing_on_the_platform(world: CommandWorld) -> None:
    # The car's signed answer sent again (by the car or anyone on the path): the job is
    # already settled, so the platform refuses it and records the refusal.
    _guard, recorder, job_id = await unlocked(world)
    gateway = gateway_of(world.app)
    assert gateway is not None
    live = gateway.registry.commandable(world.vehicles["ALICE-1"].id)
    assert live is not None
    await commands_of(world.app).dispatcher.on_result(live, recorder.answers[0])
    final = await world.job("alice", "ALICE-1", job_id)
    assert final["state"] == "confirmed"
    assert await refused_reasons(world) == ["not-awaiting-an-answer"]


async def test_a_forged_answer_is_refused(world: CommandWorld) -> None:
    # An answer not signed by the device's key (a verdict changed on the way): refused while
    # the job awaits its answer, which then still counts when it arrives intact.
    unheard = await answered_unheard(world, "lock", "forge-1")
    job_id, live = unheard.job_id, unheard.live
    dispatcher = commands_of(world.app).dispatcher
    forged = bytearray(unheard.answer)
    forged[-10] ^= 0x01  # inside the signature
    await dispatcher.on_result(live, bytes(forged))
    assert (await world.job("alice", "ALICE-1", job_id))["state"] == "delivered"
    await dispatcher.on_result(live, unheard.answer)
    assert (await world.job("alice", "ALICE-1", job_id))["state"] == "executed"
    reasons = await refused_reasons(world)
    assert reasons == ["bad-signature"]


async def test_an_answer_racing_the_sweep_is_judged_again(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweep gives up on a delivered job (outcome_unknown) between the moment its answer
    # is read and the moment the answer is written: the write does not overwrite what the
    # sweep did; the answer is judged again and recorded after it, in order.
    unheard = await answered_unheard(world, "horn_lights", "race-1")
    job_id = unheard.job_id
    read = results._read_job
    reads: list[str] = []

    async def read_then_sweep(session: Any, wanted: str) -> CommandJob | None:
        job = await read(session, wanted)
        reads.append(job.state.value if job is not None else "none")
        if len(reads) == 1:
            world.clock.advance(timedelta(seconds=40))  # past the answer's grace
            await world.sweep()
        return job

    monkeypatch.setattr(results, "_read_job", read_then_sweep)
    await commands_of(world.app).dispatcher.on_result(unheard.live, unheard.answer)
    assert reads == ["delivered", "outcome_unknown"]
    final = await world.job("alice", "ALICE-1", job_id)
    assert final["state"] == "executed"
    assert [(t["from_state"], t["to_state"]) for t in final["transitions"]][-2:] == [
        ("delivered", "outcome_unknown"),
        ("outcome_unknown", "executed"),
    ]
    async with world.platform.unit_of_work() as uow:
        names = list(
            await uow.session.scalars(
                select(AuditRecord.name).where(
                    AuditRecord.name.in_(
                        [
                            EventName.COMMAND_OUTCOME_UNKNOWN.value,
                            EventName.COMMAND_EXECUTED.value,
                        ]
                    )
                )
            )
        )
    assert sorted(names) == sorted(
        [EventName.COMMAND_OUTCOME_UNKNOWN.value, EventName.COMMAND_EXECUTED.value]
    )


async def test_a_quarantined_device_s_answer_is_not_recorded(world: CommandWorld) -> None:
    # The device is quarantined (a suspected clone holds its key) after a job was delivered
    # to it: its answer is refused and audited; the job stays delivered (then outcome_unknown),
    # never recorded as what the vehicle did.
    unheard = await answered_unheard(world, "horn_lights", "quarantined-1")
    live = unheard.live
    gateway = gateway_of(world.app)
    assert gateway is not None
    gateway.registry.status_changed(live.session.device_id, DeviceStatus.QUARANTINED, "test")
    await assert_refused_as_quarantined(world, unheard)


async def test_a_device_the_pipeline_quarantines_is_neither_answered_nor_commanded(
    world: CommandWorld,
) -> None:
    # The telemetry pipeline quarantines the device (one frame naming another vehicle is
    # enough) after a job was delivered to it: from then on its answers are refused and no
    # command goes down to it, at once, not from the gateway's next credential sweep.
    unheard = await answered_unheard(world, "horn_lights", "pipeline-quarantined-1")
    live = unheard.live
    gateway = gateway_of(world.app)
    assert isinstance(gateway, Gateway) and isinstance(gateway.handler, TelemetryPipeline)
    await gateway.handler.stages.quarantine.record(live.session.device_id, Status.FOREIGN_IDENTITY)
    assert gateway.registry.commandable(live.session.vehicle_id) is None
    await assert_refused_as_quarantined(world, unheard)


@pytest.mark.parametrize("connected", [True, False])
async def test_a_device_quarantined_while_its_job_is_sealed_gets_nothing(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch, connected: bool
) -> None:
    # The device is quarantined (its key may be a clone's) while a delivery transaction is
    # under way: the session was chosen before its awaits (the job, the revocations, the
    # PDP, the counter), and the envelope was sealed for it and sent all the same: a
    # command went down to a quarantined device. Whether the job is delivered in
    # the request that authorized it (car connected) or by the dispatcher when the car comes
    # back: nothing is sealed, the job stays queued, the car does nothing.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    vehicle_id = world.vehicles["ALICE-1"].id
    gateway = gateway_of(world.app)
    assert gateway is not None
    original = dispatch_module._next_counter
    quarantined: list[str] = []

    async def quarantined_meanwhile(ctx: Any, vehicle: str) -> int:
        counter = await original(ctx, vehicle)
        live = gateway.registry.commandable(vehicle)
        if live is not None:
            gateway.registry.status_changed(live.session.device_id, DeviceStatus.QUARANTINED, "t")
            quarantined.append(live.session.device_id)
        return counter

    if not connected:
        await car.offline()
    monkeypatch.setattr(dispatch_module, "_next_counter", quarantined_meanwhile)
    response = await world.command("alice", "ALICE-1", "horn_lights", key="sealed-q")
    assert response.status_code == 202, response.text
    if not connected:
        car.online()
        for _ in range(200):
            if quarantined:
                break
            await asyncio.sleep(0.02)
    assert quarantined
    # The delivery that ran into the quarantine is over once its vehicle's lock is free.
    lock = commands_of(world.app).dispatcher._locks.get(vehicle_id)
    if lock is not None:
        async with lock:
            pass
    job = await world.job("alice", "ALICE-1", response.json()["id"])
    assert job["state"] == "queued", job
    assert job["delivered_at"] is None
    assert car.acted() == 0


@pytest.mark.parametrize("connected", [True, False])
async def test_a_deadline_that_passes_during_the_delivery_seals_nothing(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch, connected: bool
) -> None:
    # The deadline was checked at the start of the delivery transaction, then it waited (the
    # revocations, the PDP re-check within its budget, the counter) and the envelope was
    # sealed with the time read before: an envelope already past its own expiry went down
    # to the car (one whose clock runs behind acts after the user's deadline). Checked again
    # when sealing: nothing is sent, the job ends expired, the car gets no frame.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    guard = car.driver.guard
    assert guard is not None
    recorder = Recorder(guard)
    vehicle_id = world.vehicles["ALICE-1"].id
    original = dispatch_module._next_counter
    slow: list[int] = []

    async def slow_counter(ctx: Any, vehicle: str) -> int:
        counter = await original(ctx, vehicle)
        world.clock.advance(timedelta(seconds=10))  # past the 5 s TTL
        slow.append(counter)
        return counter

    if not connected:
        await car.offline()
    monkeypatch.setattr(dispatch_module, "_next_counter", slow_counter)
    response = await world.http.post(
        f"/mobile/v1/vehicles/{vehicle_id}/commands/horn_lights",
        json={"ttl_seconds": 5},
        headers={"authorization": f"Bearer {world.token('alice')}", "idempotency-key": "late-1"},
    )
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    if not connected:
        car.online()
    final = await world.settle("alice", "ALICE-1", job_id)
    assert slow
    assert final["state"] == "expired", final
    assert final["delivered_at"] is None
    assert recorder.frames == []
    assert car.acted() == 0


async def test_a_flood_of_answers_that_change_nothing_ends_the_session(
    world: CommandWorld,
) -> None:
    # Answers are not telemetry: the pipeline's limits never see them, and each refusal is an
    # audited write. A session sending many (garbage, forgeries, answers to nothing) is
    # closed after a small budget, and what it sends after that is not recorded.
    await reported(world, "ALICE-1")
    gateway = gateway_of(world.app)
    assert gateway is not None
    live = gateway.registry.commandable(world.vehicles["ALICE-1"].id)
    assert live is not None
    dispatcher = commands_of(world.app).dispatcher
    for _ in range(REFUSED_RESULTS_PER_SESSION + 10):
        await dispatcher.on_result(live, b"\x03\x01garbage")
    assert live.closed_with is CloseCode.PROTOCOL
    assert len(await refused_reasons(world)) == REFUSED_RESULTS_PER_SESSION
