"""The vehicle's envelope checks: it acts only on a fresh, unexpired envelope signed by a
trusted command key for itself, at most once per envelope and per job, and answers with a
result signed by its device key that the platform can verify and bind to the job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fleetward.commands.envelope import (
    CommandEnvelope,
    CommandResult,
    ResultVerdict,
    check_result_binding,
    envelope_digest,
    open_result,
    seal_command,
)
from fleetward.commands.signing import CommandSigner
from fleetward.core.clock import FrozenClock
from fleetward.gateway.device_client import DevicePrivateKey
from fleetward.gateway.handshake import epoch_ms
from fleetward.sim.command_guard import (
    CommandGuard,
    CounterWindow,
    GuardAction,
    GuardOutcome,
)
from fleetward.sim.commands import (
    CommandOutcome,
    SimCommandExecutor,
    VehicleCommand,
    Verdict,
)
from fleetward.sim.vehicle import Mode, SimVehicle

T0 = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
T0_MS = epoch_ms(T0)
VEHICLE = "veh_" + "a" * 26
OTHER_VEHICLE = "veh_" + "z" * 26
DEVICE = "dev_" + "c" * 26
PLATFORM = CommandSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([7]) * 32))
ATTACKER = CommandSigner(ed25519.Ed25519PrivateKey.from_private_bytes(bytes([9]) * 32))


class Impostor:
    """Signs with the attacker's key but names the platform's key id."""

    key_id = PLATFORM.key_id

    def sign(self, data: bytes) -> bytes:
        return ATTACKER.sign(data)


def job(n: int) -> str:
    return "job_" + "abcdefghijklmnopqrstuvwxyz"[n % 26] * 25 + "234567"[n // 26 % 6]


def envelope(
    counter: int = 1,
    *,
    job_id: str | None = None,
    command: str = "vehicle:unlock",
    vehicle_id: str = VEHICLE,
    issued_at_ms: int = T0_MS,
    lifetime_ms: int = 30_000,
    signer: CommandSigner | Impostor = PLATFORM,
    parameters: dict[str, bool | int | float | str] | None = None,
) -> bytes:
    return seal_command(
        CommandEnvelope(
            vehicle_id=vehicle_id,
            job_id=job_id or job(counter),
            command=command,
            parameters=parameters or {},
            issued_at_ms=issued_at_ms,
            expires_at_ms=issued_at_ms + lifetime_ms,
            counter=counter,
            key_id=signer.key_id,
        ),
        signer,  # type: ignore[arg-type]  # an Impostor signs like one
    )


@dataclass
class Car:
    vehicle: SimVehicle
    guard: CommandGuard
    clock: FrozenClock
    device_key: DevicePrivateKey
    received: list[VehicleCommand] = field(default_factory=list)

    async def send(self, frame: bytes) -> tuple[CommandResult | None, GuardOutcome]:
        """Deliver ``frame``; the answer as the platform verifies it (or None)."""
        answer, outcome = await self.guard.handle(frame)
        if answer is None:
            return None, outcome
        result = open_result(answer, self.device_key.public_key())
        check_result_binding(
            result,
            job_id=result.job_id,
            vehicle_id=VEHICLE,
            device_id=DEVICE,
            counter=result.counter,
            digest=envelope_digest(frame),
        )
        return result, outcome


class Recording(SimCommandExecutor):
    def __init__(self, vehicle: SimVehicle, received: list[VehicleCommand]) -> None:
        super().__init__(vehicle)
        self._received = received

    async def receive(self, command: VehicleCommand) -> CommandOutcome:
        self._received.append(command)
        await asyncio.sleep(0)  # let a concurrent delivery try to overtake
        return await super().receive(command)


def make_car(
    device_key: DevicePrivateKey | None = None, *, window: int = 32, remembered: int = 64
) -> Car:
    vehicle = SimVehicle(seed=3)
    vehicle.state.mode = Mode.PARKED
    vehicle.state.locked = True
    clock = FrozenClock(T0)
    key = device_key or ed25519.Ed25519PrivateKey.from_private_bytes(bytes([8]) * 32)
    received: list[VehicleCommand] = []
    guard = CommandGuard(
        vehicle_id=VEHICLE,
        device_id=DEVICE,
        device_key=key,
        trusted_keys=PLATFORM.verifying_keys(),
        clock=clock.now,
        receiver=Recording(vehicle, received),
        window=window,
        remembered_answers=remembered,
    )
    return Car(vehicle, guard, clock, key, received)


async def test_a_valid_unlock_acts_once_and_is_answered_signed() -> None:
    car = make_car()
    frame = envelope(1)
    result, outcome = await car.send(frame)
    assert result is not None
    assert (result.verdict, result.reason, result.job_id) == (ResultVerdict.EXECUTED, "ok", job(1))
    assert (result.counter, result.envelope_digest) == (1, envelope_digest(frame))
    assert result.device_time_ms == T0_MS
    assert outcome == GuardOutcome(GuardAction.ACTED, "ok", job(1), ResultVerdict.EXECUTED)
    assert car.vehicle.state.locked is False
    assert [c.command_id for c in car.received] == [job(1)]  # command_id is the job id
    assert (car.guard.stats.acted, car.guard.stats.executed) == (1, 1)


async def test_a_vehicle_refusal_is_answered_with_the_receivers_reason() -> None:
    car = make_car()
    car.vehicle.state.mode = Mode.DRIVING
    car.vehicle.step(5)
    result, outcome = await car.send(envelope(1))
    assert result is not None and outcome.action is GuardAction.ACTED
    assert (result.verdict, result.reason) == (ResultVerdict.REJECTED_BY_VEHICLE, "moving")
    assert car.vehicle.state.locked is True and car.guard.stats.executed == 0


def _tampered(frame: bytes) -> bytes:
    return frame[:10] + bytes([frame[10] ^ 1]) + frame[11:]


@dataclass(frozen=True)
class Case:
    frames: Callable[[], list[bytes]]  # delivered in order; the last one is judged
    reason: str
    answered: bool
    clock_shift: timedelta = timedelta(0)


CASES = {
    # A gateway or broker flips a byte (e.g. retargets the command): not even answered.
    "tampered": Case(lambda: [_tampered(envelope(1))], "bad-signature", answered=False),
    # A forger with its own key claiming the platform key id.
    "forged with the platform key id": Case(
        lambda: [envelope(1, signer=Impostor())],
        "bad-signature",
        answered=False,
    ),
    # A forger with its own key under its own id: untrusted.
    "untrusted key": Case(lambda: [envelope(1, signer=ATTACKER)], "unknown-key", answered=False),
    # Garbage or a truncated frame (fuzzing the TCU).
    "truncated": Case(lambda: [envelope(1)[:-1]], "malformed", answered=False),
    # A genuine envelope for another car delivered to this one (misrouting, BOLA on the wire):
    # never acted on, and this car says nothing about another car's job.
    "wrong vehicle": Case(
        lambda: [envelope(1, vehicle_id=OTHER_VEHICLE)], "wrong-vehicle", answered=False
    ),
    # A captured envelope delivered after its deadline (held back by a relay).
    "expired": Case(
        lambda: [envelope(1)], "expired", answered=True, clock_shift=timedelta(seconds=30)
    ),
    # An envelope from the future (forged time, or a device clock far behind).
    "not yet valid": Case(
        lambda: [envelope(1, issued_at_ms=T0_MS + 121_000)], "not-yet-valid", answered=True
    ),
    # The platform (bug) signs two jobs with one counter: the second never acts.
    "counter reused": Case(
        lambda: [envelope(5), envelope(5, job_id=job(9))], "replayed", answered=True
    ),
    # The platform signs a job twice (a redelivery with a new counter): one job acts once.
    "job signed twice": Case(
        lambda: [envelope(5), envelope(6, job_id=job(5))], "replayed", answered=True
    ),
    # A captured envelope replayed after 32 newer ones: below the window, cannot be judged.
    "below the window": Case(
        lambda: [envelope(40, command="vehicle:horn_lights"), envelope(8)],
        "stale-counter",
        answered=True,
    ),
    # A command family the vehicle does not know (even if signed).
    "unsupported": Case(lambda: [envelope(1, command="vehicle:fly")], "unsupported", answered=True),
}


@pytest.mark.parametrize("name", CASES)
async def test_refused_envelopes_never_act(name: str) -> None:
    case = CASES[name]
    car = make_car()
    *before, judged = case.frames()
    for frame in before:
        await car.send(frame)
    acted_before = list(car.received)
    locked_before = car.vehicle.state.locked
    car.clock.advance(case.clock_shift)
    result, outcome = await car.send(judged)
    assert car.received == acted_before, "the receiver was called"
    assert car.vehicle.state.locked == locked_before
    assert outcome.action is GuardAction.REFUSED and outcome.reason == case.reason
    assert car.guard.stats.refused[case.reason] == 1
    if case.answered:
        assert result is not None
        assert (result.verdict, result.reason) == (ResultVerdict.REJECTED_BY_VEHICLE, case.reason)
    else:
        assert result is None and outcome.verdict is None


async def test_a_replayed_envelope_gets_the_first_answer_and_acts_nothing() -> None:
    car = make_car()
    frame = envelope(1)
    first, _ = await car.guard.handle(frame)
    car.vehicle.set_locked(True)  # the owner locks by hand
    car.clock.advance(timedelta(minutes=10))  # expired by now; the replay must still not act
    again, outcome = await car.guard.handle(frame)
    assert again == first  # byte for byte: the platform never hears two stories
    assert outcome == GuardOutcome(GuardAction.RESENT, "ok", job(1), ResultVerdict.EXECUTED)
    assert car.vehicle.state.locked is True and len(car.received) == 1
    assert (car.guard.stats.executed, car.guard.stats.resent) == (1, 1)


async def test_a_refusal_is_final() -> None:
    # Refused as not yet valid; once the device clock catches up, a redelivery of the same
    # frame still does not act: the platform already recorded a refusal.
    car = make_car()
    frame = envelope(1, issued_at_ms=T0_MS + 200_000)
    first, outcome = await car.guard.handle(frame)
    assert outcome.reason == "not-yet-valid"
    car.clock.advance(timedelta(seconds=200))
    again, outcome = await car.guard.handle(frame)
    assert again == first and outcome.action is GuardAction.RESENT
    assert car.received == []
    # The same holds for an expired envelope when the device clock is set back.
    late = envelope(2, issued_at_ms=T0_MS - 60_000)
    expired, outcome = await car.guard.handle(late)
    assert outcome.reason == "expired"
    car.clock.set(T0 - timedelta(seconds=50))
    again, outcome = await car.guard.handle(late)
    assert again == expired and car.received == []


async def test_reordering_inside_the_window_is_accepted_once() -> None:
    car = make_car()
    for counter in (5, 3, 4, 1):  # delivered out of order, all unseen: each acts once
        result, _ = await car.send(envelope(counter, command="vehicle:horn_lights"))
        assert result is not None and result.verdict is ResultVerdict.EXECUTED
    assert car.vehicle.state.horn_lights_count == 4
    for counter in (3, 5):  # the same frames again: answered from memory
        _, outcome = await car.send(envelope(counter, command="vehicle:horn_lights"))
        assert outcome.action is GuardAction.RESENT
    assert car.vehicle.state.horn_lights_count == 4


async def test_a_forgotten_answer_still_never_acts_twice() -> None:
    # With only 2 answers remembered, an old frame's answer is gone: it is refused, not redone.
    car = make_car(window=2, remembered=2)
    for counter in (1, 2, 3):
        await car.send(envelope(counter, command="vehicle:horn_lights"))
    result, outcome = await car.send(envelope(1, command="vehicle:horn_lights"))
    assert outcome.reason == "stale-counter" and result is not None
    assert car.vehicle.state.horn_lights_count == 3


async def test_concurrent_copies_act_once() -> None:
    # Two copies of one frame racing (a broker redelivering): one acts, the other waits and
    # gets the same answer.
    car = make_car()
    frame = envelope(1)
    (first, a), (second, b) = await asyncio.gather(car.guard.handle(frame), car.guard.handle(frame))
    assert first == second
    assert {a.action, b.action} == {GuardAction.ACTED, GuardAction.RESENT}
    assert len(car.received) == 1


async def test_p256_devices_answer_with_ecdsa() -> None:
    car = make_car(ec.generate_private_key(ec.SECP256R1()))
    result, _ = await car.send(envelope(1))
    assert result is not None and result.verdict is ResultVerdict.EXECUTED


async def test_parameters_reach_the_receiver_as_signed() -> None:
    car = make_car()
    result, _ = await car.send(
        envelope(1, command="vehicle:climate", parameters={"cabin_celsius": 19.5})
    )
    assert result is not None and result.verdict is ResultVerdict.EXECUTED
    assert car.vehicle.state.cabin_target_c == 19.5
    # A look-alike name (Cyrillic "\u0456" for "i") is not the parameter the platform authorized.
    result, _ = await car.send(
        envelope(2, command="vehicle:climate", parameters={"cabin_cels\u0456us": 29.5})
    )
    assert result is not None and result.reason == "parameter-unknown"
    assert car.vehicle.state.cabin_target_c == 19.5


async def test_a_receiver_answering_for_another_command_is_a_bug() -> None:
    class Confused:
        async def receive(self, command: VehicleCommand) -> CommandOutcome:
            return CommandOutcome("job_other", Verdict.EXECUTED, "ok")

    guard = CommandGuard(
        vehicle_id=VEHICLE,
        device_id=DEVICE,
        device_key=ed25519.Ed25519PrivateKey.generate(),
        trusted_keys=PLATFORM.verifying_keys(),
        clock=lambda: T0,
        receiver=Confused(),
    )
    with pytest.raises(RuntimeError, match="another command"):
        await guard.handle(envelope(1))


def test_a_guard_needs_keys_and_enough_memory() -> None:
    def build(**changes: object) -> CommandGuard:
        arguments: dict[str, object] = {
            "vehicle_id": VEHICLE,
            "device_id": DEVICE,
            "device_key": ed25519.Ed25519PrivateKey.generate(),
            "trusted_keys": PLATFORM.verifying_keys(),
            "clock": lambda: T0,
            "receiver": SimCommandExecutor(SimVehicle(seed=1)),
        } | changes
        return CommandGuard(**arguments)  # type: ignore[arg-type]

    build()
    with pytest.raises(ValueError, match="trusted command key"):
        build(trusted_keys={})  # trusting nothing is a configuration error, not "trust all"
    with pytest.raises(ValueError, match="as many answers"):
        build(window=32, remembered_answers=31)


# --------------------------------------------------------------------------- the window


@pytest.mark.parametrize(
    ("seen", "counter", "refusal", "why"),
    [
        ([], 1, None, "the first counter"),
        ([1], 2, None, "the next counter"),
        ([1], 1_000, None, "a jump ahead (gaps are fine)"),
        ([1], 1, "replayed", "the same counter again"),
        ([5], 3, None, "an older, unseen counter inside the window (reordering)"),
        ([5, 3], 3, "replayed", "that reordered counter again"),
        ([40], 9, None, "the oldest counter the window still holds"),
        ([40], 8, "stale-counter", "one below the window: cannot tell, so refused"),
        ([1, 100], 1, "stale-counter", "a counter the window slid past"),
        ([1, 33], 2, None, "unseen and inside after a slide"),
        ([1, 32], 1, "replayed", "seen, still inside after a slide"),
    ],
)
def test_counter_window(seen: list[int], counter: int, refusal: str | None, why: str) -> None:
    window = CounterWindow(32)
    for value in seen:
        assert window.refusal(value) is None
        window.consume(value)
    assert window.refusal(counter) == refusal, why


def test_the_window_state_survives_a_restart() -> None:
    # A TCU persists (highest, bitmap): a reboot must not reopen spent counters.
    window = CounterWindow(32)
    for value in (10, 7, 9):
        window.consume(value)
    restored = CounterWindow(32, highest=window.highest, bitmap=window.bitmap)
    assert [restored.refusal(c) for c in (10, 9, 8, 7, 11)] == [
        "replayed",
        "replayed",
        None,
        "replayed",
        None,
    ]
