"""Remote commands end to end: the real server, the simulated vehicle over the WebSocket, real
tokens. Each case asserts the job's final state AND what the simulated vehicle did.

Cases are one comment each on the threat or behaviour they cover.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.orm.exc import StaleDataError

from fleetward.api import commands as api_commands
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.authz.decision import Decision, Obligation, Reason
from fleetward.commands import recheck as recheck_module
from fleetward.commands.models import CommandJob, JobState
from fleetward.commands.runtime import commands_of
from fleetward.commands.service import settle
from fleetward.core.surfaces import Surface
from fleetward.gateway.websocket import gateway_of
from fleetward.identity.acr import Acr
from fleetward.identity.models import User
from fleetward.identity.oauth.revocation import RevocationService
from fleetward.platform import Platform
from fleetward.sim.vehicle import Mode
from fleetward.vehicles.delegation import DelegationService
from fleetward.vehicles.models import DriverDelegation, Vehicle
from fleetward.vehicles.ownership import OwnershipService
from support.commands import CommandWorld, RunningClock, command_world, reported


async def test_alice_unlocks_her_car_and_watches_it_confirmed(world: CommandWorld) -> None:
    # The story: after step-up, alice unlocks ALICE-1 and the job is confirmed by
    # the car's own telemetry while the simulated lock state changes.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    assert car.vehicle.state.locked is True
    response = await world.command("alice", "ALICE-1", "unlock")
    assert response.status_code == 202, response.text
    job = response.json()
    # The car is connected here: delivered in the transaction that authorized it, and the
    # delivery's links follow the request's.
    assert job["state"] == "delivered"
    assert [link["link"] for link in job["chain"]] == [
        "client",
        "user",
        "relationship",
        "role",
        "permission",
        "step_up",
        "region",
        "vehicle_state",
        "conflict",
        "quota",
        "delivery_recheck",
        "command_service",
    ]
    final = await world.settle("alice", "ALICE-1", job["id"])
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
    assert {link["link"] for link in final["chain"]} >= {"command_service", "vehicle"}
    assert car.vehicle.state.locked is False
    assert car.acted() == 1


async def test_a_connected_car_gets_its_command_in_the_authorizing_transaction(
    world: CommandWorld, backend: str
) -> None:
    # One transaction creates, re-checks and delivers: the relations are read once for both
    # of the request's questions (sees the car, may sound its horn); the job, its
    # transitions and its audit records are one INSERT each, at the commit. On SQLite the
    # transaction holds the write lock from its BEGIN, so nothing can commit between the
    # decision and the delivery: the decision is the re-check (its link says so). On
    # PostgreSQL the relations are read once more for the re-check, after the counter's
    # UPDATE.
    await reported(world, "ALICE-1")
    first = await world.command("alice", "ALICE-1", "horn_lights", key="first")
    assert (await world.settle("alice", "ALICE-1", first.json()["id"]))["state"] == "executed"
    statements: list[tuple[int, str]] = []

    def seen(conn: object, _cursor: object, sql: str, *_rest: object) -> None:
        statements.append((id(conn), " ".join(sql.split()[:4])))

    engine = world.platform.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        response = await world.command("alice", "ALICE-1", "horn_lights", key="second")
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "delivered"
    # The request's connection (others run the telemetry writer, the sweep, the answer).
    mine = next(c for c, sql in statements if sql.startswith("INSERT INTO command_jobs "))
    on_mine = [sql for c, sql in statements if c == mine]
    sqlite = backend == "sqlite"
    start = "BEGIN IMMEDIATE" if sqlite else "SELECT users"
    first = next(i for i, sql in enumerate(on_mine) if sql.startswith(start))
    last = next(i for i, sql in enumerate(on_mine) if "command_job_transitions" in sql)
    created = on_mine[first : last + 1]
    recheck = [
        "SELECT users.disabled_at,",  # the re-check, after the counter's UPDATE
        "SELECT vehicles.id, vehicles.tenant_id,",
    ]
    expected = [
        *(["BEGIN IMMEDIATE"] if sqlite else []),  # the write lock, before anything is read
        "SELECT users.disabled_at,",  # the principal, for both questions
        "SELECT vehicles.id, vehicles.tenant_id,",  # the car's relations
        "SELECT command_jobs.id, command_jobs.request_hash,",  # an earlier copy (idempotency)
        "SELECT vehicles.tenant_id FROM",  # the car's tenant
        "SELECT oauth_clients.id, oauth_clients.disabled_at,",  # the client link
        "UPDATE vehicle_command_counters SET",  # the counter
        *([] if sqlite else recheck),
        "INSERT INTO command_jobs",  # as delivered
        "INSERT INTO audit_events",  # decisions and transitions
        "INSERT INTO command_job_transitions",  # after the job they refer to
    ]
    assert len(created) == len(expected), created
    assert all(got.startswith(want) for got, want in zip(created, expected, strict=True)), created
    recheck_link = next(c for c in response.json()["chain"] if c["link"] == "delivery_recheck")
    assert recheck_link["ok"] is True
    assert ("this transaction" in recheck_link["detail"]) is sqlite
    final = await world.settle("alice", "ALICE-1", response.json()["id"])
    assert final["state"] == "executed"
    assert world.cars["ALICE-1"].acted() == 2


async def test_bob_cannot_unlock_alices_car(world: CommandWorld) -> None:
    # A driver outside the delegated set (bob may lock, not unlock): rejected at the
    # permission link, stored, and the car never hears of it.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    response = await world.command("bob", "ALICE-1", "unlock")
    assert response.status_code == 403, response.text
    problem = response.json()
    assert problem["link"] == "permission" and problem["state"] == "rejected"
    job = await world.job("alice", "ALICE-1", problem["job_id"])
    assert job["state"] == "rejected" and job["rejected_link"] == "permission"
    await world.sweep()
    assert car.vehicle.state.locked is True
    assert car.acted() == 0


async def test_the_same_key_returns_the_same_job_and_acts_once(world: CommandWorld) -> None:
    # A network retry (same key, same body) returns the original job; the same key with
    # another body is a conflict. The car acts once.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    first = await world.command("alice", "ALICE-1", "climate", {"cabin_celsius": 21}, key="c-1")
    again = await world.command("alice", "ALICE-1", "climate", {"cabin_celsius": 21}, key="c-1")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert again.headers["idempotency-replayed"] == "true"
    other = await world.command("alice", "ALICE-1", "climate", {"cabin_celsius": 25}, key="c-1")
    assert other.status_code == 409 and other.json()["reason"] == "different-body"
    final = await world.settle("alice", "ALICE-1", first.json()["id"], until={"executed"})
    assert final["state"] == "executed"
    await asyncio.sleep(0.3)
    assert car.acted() == 1
    assert car.vehicle.state.cabin_target_c == 21


async def test_without_a_key_nothing_is_created(world: CommandWorld) -> None:
    # Idempotency is not optional for physical actions: no key, no job.
    response = await world.command("alice", "ALICE-1", "lock", key=None)
    assert response.status_code == 400
    assert response.json()["reason"] == "missing-idempotency-key"
    listed = await world.http.get(
        f"/mobile/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands",
        headers={"authorization": f"Bearer {world.token('alice')}"},
    )
    assert listed.json()["items"] == []


async def test_concurrent_identical_requests_create_one_job(world: CommandWorld) -> None:
    # 100 copies of one request at once (a client retrying hard): one job, one execution.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")

    async def one() -> str:
        while True:
            response = await world.command("alice", "ALICE-1", "lock", key="burst-1")
            if response.status_code != 503:  # a busy store says "try again": a client does
                assert response.status_code == 202, response.text
                return str(response.json()["id"])
            await asyncio.sleep(0.05)

    ids = await asyncio.gather(*(one() for _ in range(100)))
    assert len(set(ids)) == 1
    final = await world.settle("alice", "ALICE-1", ids[0])
    assert final["state"] == "confirmed"
    await asyncio.sleep(0.3)
    assert car.acted() == 1


async def test_one_security_command_in_flight_per_vehicle(world: CommandWorld) -> None:
    # A lock and an unlock racing for the same car: exactly one is accepted, the other is
    # rejected at the conflict link, and the car does only the accepted one.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()  # both stay in flight while the car is away
    lock, unlock = await asyncio.gather(
        world.command("alice", "ALICE-1", "lock", key="race-lock"),
        world.command("alice", "ALICE-1", "unlock", key="race-unlock"),
    )
    statuses = sorted([lock.status_code, unlock.status_code])
    assert statuses == [202, 409], (lock.text, unlock.text)
    winner, loser = (lock, unlock) if lock.status_code == 202 else (unlock, lock)
    assert loser.json()["link"] == "conflict"
    car.online()
    final = await world.settle("alice", "ALICE-1", winner.json()["id"])
    assert final["state"] in {"confirmed", "executed"}
    assert car.acted() == 1
    assert car.vehicle.state.locked is (winner is lock)


async def test_fresh_state_decides_and_stale_state_is_asked_of_the_vehicle(
    world: CommandWorld,
) -> None:
    # Unlock only when parked. Fresh state showing motion: refused by the platform. Stale
    # state: never assumed; the vehicle applies the rule to its own state and refuses.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    car.vehicle.state.mode = Mode.DRIVING
    car.vehicle.state.speed_kmh = 40.0
    await asyncio.sleep(0.4)  # a report showing the speed
    moving = await world.command("alice", "ALICE-1", "unlock", key="u-moving")
    assert moving.status_code == 409 and moving.json()["link"] == "vehicle_state"
    assert moving.json()["reason"] == "moving"

    await car.offline()
    world.clock.advance(timedelta(minutes=3))  # the last report is now stale
    stale = await world.command("alice", "ALICE-1", "unlock", key="u-stale")
    assert stale.status_code == 202, stale.text
    state_link = next(c for c in stale.json()["chain"] if c["link"] == "vehicle_state")
    assert "deferred-to-vehicle" in state_link["detail"]
    car.online()
    final = await world.settle("alice", "ALICE-1", stale.json()["id"])
    assert final["state"] == "rejected_by_vehicle" and final["result_reason"] == "moving"
    assert car.vehicle.state.locked is True


async def test_a_grant_revoked_while_the_job_waits_never_reaches_the_vehicle(
    world: CommandWorld,
) -> None:
    # bob may lock; the car is offline; bob's delegation is revoked before it reconnects:
    # the job is checked again at delivery and never sent.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command("bob", "ALICE-1", "lock", key="bob-lock")
    assert response.status_code == 202, response.text
    await revoke_bob(world)
    car.online()
    final = await world.settle("alice", "ALICE-1", response.json()["id"])
    assert final["state"] == "rejected"
    assert final["rejected_link"] == "delivery_recheck"
    await asyncio.sleep(0.3)
    assert car.acted() == 0


async def test_an_obligation_at_delivery_is_a_denial_there(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A job applies no obligation: if the policy in force at delivery attaches one to the
    # allow (a policy changed while the job waited), the re-check fails closed, as a route
    # that applies none would.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command("bob", "ALICE-1", "lock", key="bob-lock-obliged")
    assert response.status_code == 202, response.text
    decide = recheck_module.decide_audited

    async def obliged(*args: Any) -> list[Decision]:
        return [
            dataclasses.replace(d, obligations=d.obligations | {Obligation.MINIMISE_FIELDS})
            if d.allowed
            else d
            for d in await decide(*args)
        ]

    monkeypatch.setattr(recheck_module, "decide_audited", obliged)
    car.online()
    final = await world.settle("alice", "ALICE-1", response.json()["id"])
    assert final["state"] == "rejected"
    assert final["rejected_link"] == "delivery_recheck"
    await asyncio.sleep(0.3)
    assert car.acted() == 0


async def test_a_sale_while_the_owners_job_waits_never_reaches_the_car(
    world: CommandWorld,
) -> None:
    # The delivery re-check decides as of the delivery, not of the request: alice's lock,
    # queued while the car is offline, is never sent once she has sold the car (her
    # ownership ended after the job was created; asked "as of creation" it still held).
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command("alice", "ALICE-1", "lock", key="sold-lock")
    assert response.status_code == 202, response.text
    async with world.platform.services() as (uow, ctx):
        vehicle = await ctx.session.get(Vehicle, world.vehicles["ALICE-1"].id)
        seller = await ctx.session.get(User, world.users["alice"].id)
        buyer = await ctx.session.get(User, world.users["carol"].id)
        assert vehicle is not None and seller is not None and buyer is not None
        await OwnershipService(ctx).transfer(vehicle, seller, buyer, actor=Actor.system("t"))
        await uow.commit()
    car.online()
    job_id = response.json()["id"]
    for _ in range(200):  # alice no longer sees the job's car: read it from the store
        async with world.platform.unit_of_work() as uow:
            job = await uow.session.get(CommandJob, job_id)
        assert job is not None
        if job.state is not JobState.QUEUED:
            break
        await asyncio.sleep(0.05)
    assert job.state is JobState.REJECTED, job.state
    assert job.rejected_link == "delivery_recheck"
    recheck = [c["detail"] for c in job.chain or [] if c["link"] == "delivery_recheck"]
    assert recheck == [Reason.FORMER_OWNER.value]
    # A job rejected at delivery is finished: it leaves the queue for good.
    assert job.finished_at is not None
    await asyncio.sleep(0.3)
    assert car.acted() == 0


async def test_a_delegation_that_ends_while_the_job_waits_never_reaches_the_car(
    world: CommandWorld,
) -> None:
    # A window that simply runs out (no revocation) ends the grant too: dave may lock
    # ALICE-1 for 30 s; his lock, queued while the car is offline, is delivered after the
    # window closed (within the command's own lifetime) and is rejected, never sent.
    async with world.platform.services() as (uow, ctx):
        vehicle = await ctx.session.get(Vehicle, world.vehicles["ALICE-1"].id)
        owner = await ctx.session.get(User, world.users["alice"].id)
        driver = await ctx.session.get(User, world.users["dave"].id)
        assert vehicle is not None and owner is not None and driver is not None
        await DelegationService(ctx).delegate(
            vehicle,
            owner,
            driver,
            ["vehicle:lock", "vehicle:read_status"],
            valid_until=ctx.clock.now() + timedelta(seconds=30),
            actor=Actor.user(owner.id),
        )
        await uow.commit()
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command("dave", "ALICE-1", "lock", key="dave-lock")
    assert response.status_code == 202, response.text
    world.clock.advance(timedelta(seconds=40))
    car.online()
    final = await world.settle("alice", "ALICE-1", response.json()["id"])
    assert final["state"] == "rejected", final
    assert final["rejected_link"] == "delivery_recheck"
    recheck = [c["detail"] for c in final["chain"] if c["link"] == "delivery_recheck"]
    assert recheck == [Reason.WINDOW_EXPIRED.value]
    await asyncio.sleep(0.3)
    assert car.acted() == 0


async def test_step_up_is_not_asked_again_at_a_late_delivery(world: CommandWorld) -> None:
    # Step-up is the request's link (RFC 9470 challenge at the request), not the delivery's:
    # an immobilize asked with a fresh MFA sign-in, queued while the car is offline and
    # delivered ten minutes later (within its lifetime), still reaches the car. A re-check
    # that asked for step-up again would reject every long-queued step-up command.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command("alice", "ALICE-1", "immobilize", key="late-immobilize")
    assert response.status_code == 202, response.text
    world.clock.advance(timedelta(minutes=10))
    car.online()
    final = await world.settle("alice", "ALICE-1", response.json()["id"])
    recheck = [c for c in final["chain"] if c["link"] == "delivery_recheck"]
    assert [c["ok"] for c in recheck] == [True], final
    assert final["delivered_at"] is not None, final


@pytest.mark.parametrize("revoked", ["user", "family"])
async def test_a_job_whose_token_was_revoked_while_it_waited_never_reaches_the_vehicle(
    world: CommandWorld, revoked: str
) -> None:
    # A command asked for with a stolen token while the car is offline; its owner then
    # revokes every token of theirs ("sign out everywhere"), or the stolen refresh token's
    # family is revoked (its replay, a client's revocation request), before the car
    # reconnects: the delivery's re-check finds the revocation and the job is never sent.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command(
        "alice", "ALICE-1", "horn_lights", key="stolen-1", family="fam-stolen"
    )
    assert response.status_code == 202, response.text
    async with world.platform.services() as (uow, ctx):
        revocations = RevocationService(ctx, world.platform.identity.revocations)
        if revoked == "user":
            await revocations.revoke_user(
                world.users["alice"].id, reason="signed-out-everywhere", actor=Actor.system("t")
            )
        else:
            await revocations.revoke_family(
                "fam-stolen", reason="refresh-token-replayed", actor=Actor.system("t")
            )
        await uow.commit()
    car.online()
    job_id = response.json()["id"]
    for _ in range(200):  # read from the store: alice's tokens of this second are revoked too
        async with world.platform.unit_of_work() as uow:
            job = await uow.session.get(CommandJob, job_id)
        assert job is not None
        if job.state is not JobState.QUEUED:
            break
        await asyncio.sleep(0.05)
    assert job.state is JobState.REJECTED, job.state
    assert job.rejected_link == "delivery_recheck"
    recheck = [c["detail"] for c in job.chain or [] if c["link"] == "delivery_recheck"]
    assert recheck == ["token-revoked"]
    await asyncio.sleep(0.3)
    assert car.acted() == 0


async def test_a_revocation_racing_a_command_never_lets_it_act_after(
    world: CommandWorld,
) -> None:
    # The command and the revocation race. Whatever wins, the car never acts on a grant
    # that had ended when the job was delivered.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    response, revoked_at = await asyncio.gather(
        world.command("bob", "ALICE-1", "lock", key="bob-race"), revoke_bob(world)
    )
    if response.status_code != 202:
        # Revoked first: bob no longer sees the car at all (404), or no longer may lock.
        assert response.status_code in {403, 404}, response.text
        assert car.acted() == 0
        return
    final = await world.settle("alice", "ALICE-1", response.json()["id"])
    if final["state"] == "rejected":
        assert final["rejected_link"] == "delivery_recheck"
        assert car.acted() == 0
    else:
        assert final["delivered_at"] is not None
        assert datetime.fromisoformat(final["delivered_at"]) <= revoked_at


@pytest.mark.parametrize("connected", [True, False])
async def test_a_token_revoked_while_its_request_waits_creates_no_job(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch, connected: bool
) -> None:
    # A command asked for with a stolen token; it is authenticated, then waits (its flow
    # charge, a twin with the same key, the store's write lock) while its owner revokes every
    # token of theirs ("sign out everywhere"). The job was judged without the token and
    # stamped after the revocation, so neither the authorizing transaction (delivering to a
    # connected car) nor the delivery re-check (which counts revocations since the job) saw
    # it: the car acted. Nothing may be created: the token was dead when the job was judged.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    if not connected:
        await car.offline()
    original = api_commands.charge_command_flow

    async def revoked_meanwhile(*args: Any, **kwargs: Any) -> None:
        await original(*args, **kwargs)
        await world.sign_out_everywhere("alice")
        world.clock.advance(timedelta(seconds=1))

    monkeypatch.setattr(api_commands, "charge_command_flow", revoked_meanwhile)
    response = await world.command("alice", "ALICE-1", "unlock", key="stolen-wait")
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    if not connected:
        car.online()
        await reported(world, "ALICE-1")
        await world.sweep()
    async with world.platform.unit_of_work() as uow:
        jobs = list(await uow.session.scalars(select(CommandJob)))
    assert jobs == []
    await asyncio.sleep(0.3)
    assert car.acted() == 0


# PostgreSQL only: on SQLite the authorizing decision is the delivery's (write lock).
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_job_rejected_at_its_own_delivery_binds_no_key(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On PostgreSQL the authorizing transaction asks the PDP again when it delivers to a
    # connected car; a grant that ended in between rejects the job there (403,
    # delivery_recheck). A rejected attempt binds nothing: the retry with the same key once
    # the grant holds again is judged afresh, never answered 202 with the rejected job.
    await reported(world, "ALICE-1")
    original = recheck_module.decide_audited
    calls: list[int] = []

    async def denied_once(*args: Any) -> list[Decision]:
        decisions = await original(*args)
        calls.append(1)
        if len(calls) > 1:
            return decisions
        return [Decision.deny(Reason.REVOKED, d.policy_version) for d in decisions]

    monkeypatch.setattr(recheck_module, "decide_audited", denied_once)
    first = await world.command("alice", "ALICE-1", "horn_lights", key="recheck-1")
    assert first.status_code == 403, first.text
    assert first.json()["link"] == "delivery_recheck"
    again = await world.command("alice", "ALICE-1", "horn_lights", key="recheck-1")
    assert again.status_code == 202, again.text
    assert again.headers.get("idempotency-replayed") is None
    assert again.json()["id"] != first.json()["job_id"]
    assert again.json()["state"] == "delivered"


async def test_a_job_past_its_deadline_is_never_delivered(world: CommandWorld) -> None:
    # The car is offline past the lock's lifetime: the job expires, and reconnecting
    # later delivers nothing.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command("alice", "ALICE-1", "lock", key="late-lock")
    assert response.status_code == 202
    world.clock.advance(timedelta(seconds=61))
    await world.sweep()
    car.online()
    await reported(world, "ALICE-1")
    final = await world.settle("alice", "ALICE-1", response.json()["id"])
    assert final["state"] == "expired"
    assert car.acted() == 0


async def test_a_job_whose_deadline_passes_while_it_is_judged_is_not_sealed(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short TTL (1 s) and a slow judgement (here the quota store takes 2 s): by the time
    # the authorizing transaction would deliver to the connected car, the job's deadline has
    # passed. It is not signed (an envelope issued at or after its own expiry: before, a
    # 500 with the quota charged); it stays queued, is answered 202, and the dispatcher's
    # deadline check expires it. The car never acts.
    await reported(world, "ALICE-1")
    quotas = commands_of(world.app).quotas
    charge = quotas.charge

    async def slow(*args: Any) -> Any:
        answer = await charge(*args)
        world.clock.advance(timedelta(seconds=2))
        return answer

    monkeypatch.setattr(quotas, "charge", slow)
    response = await world.http.post(
        f"/mobile/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands/horn_lights",
        json={"ttl_seconds": 1},
        headers={"authorization": f"Bearer {world.token('alice')}", "idempotency-key": "ttl-1"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "queued"
    final = await world.settle("alice", "ALICE-1", response.json()["id"])
    assert final["state"] == "expired", final
    assert final["delivered_at"] is None
    assert world.cars["ALICE-1"].acted() == 0


async def test_a_queued_job_can_be_cancelled_by_its_requester(world: CommandWorld) -> None:
    # Cancelling before delivery: the car never gets it; after that, cancel is refused.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command("alice", "ALICE-1", "lock", key="cancel-me")
    job_id = response.json()["id"]
    path = f"/mobile/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands/{job_id}/cancel"
    bobs = await world.http.post(path, headers={"authorization": f"Bearer {world.token('bob')}"})
    assert bobs.status_code == 404  # not his job: indistinguishable from no job
    cancelled = await world.http.post(
        path, headers={"authorization": f"Bearer {world.token('alice')}"}
    )
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = await world.http.post(path, headers={"authorization": f"Bearer {world.token('alice')}"})
    assert again.status_code == 409
    # Nobody follows it: the cancel leaves no change event behind in the process.
    assert not commands_of(world.app).dispatcher.followed(job_id)
    car.online()
    await reported(world, "ALICE-1")
    await world.sweep()
    assert car.acted() == 0


async def test_a_job_moved_by_another_transaction_is_not_overwritten(
    world: CommandWorld,
) -> None:
    # Two transactions read the same queued job; the requester's cancel commits first. The
    # other one (a sweep settling the job as overdue) must not write its move over the
    # cancel: its UPDATE holds only while the job is still in the state it read.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command("alice", "ALICE-1", "horn_lights", key="stale-1")
    job_id = response.json()["id"]
    assert response.json()["state"] == "queued"
    path = f"/mobile/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands/{job_id}/cancel"
    config = commands_of(world.app).config
    async with world.platform.services() as (uow, ctx):
        job = await ctx.session.get(CommandJob, job_id)
        assert job is not None and job.state is JobState.QUEUED
        cancelled = await world.http.post(
            path, headers={"authorization": f"Bearer {world.token('alice')}"}
        )
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
        assert settle(ctx, config, job, job.expires_at + timedelta(seconds=1))  # expired
        with pytest.raises(StaleDataError):
            await uow.commit()
    final = await world.job("alice", "ALICE-1", job_id)
    assert final["state"] == "cancelled"
    assert [t["to_state"] for t in final["transitions"]][-1] == "cancelled"
    assert "expired" not in {t["to_state"] for t in final["transitions"]}


async def test_a_cancel_racing_another_move_is_judged_again(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job expires (the sweep commits) between the cancel's read and its write: the
    # cancel does not overwrite the expiry; judged again, it is refused (409, "expired").
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command("alice", "ALICE-1", "horn_lights", key="stale-2")
    job_id = response.json()["id"]
    config = commands_of(world.app).config
    read = api_commands._own_job
    reads: list[str] = []

    async def read_then_expire(*args: Any) -> CommandJob:
        job = await read(*args)
        reads.append(job.state.value)
        if len(reads) == 1:
            async with world.platform.services() as (uow, ctx):
                other = await ctx.session.get(CommandJob, job_id)
                assert other is not None
                assert settle(ctx, config, other, other.expires_at + timedelta(seconds=1))
                await uow.commit()
        return job

    monkeypatch.setattr(api_commands, "_own_job", read_then_expire)
    path = f"/mobile/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands/{job_id}/cancel"
    refused = await world.http.post(
        path, headers={"authorization": f"Bearer {world.token('alice')}"}
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["reason"] == "expired"
    assert reads == ["queued", "expired"]
    final = await world.job("alice", "ALICE-1", job_id)
    assert final["state"] == "expired"
    assert "cancelled" not in {t["to_state"] for t in final["transitions"]}


async def test_the_job_records_when_its_requester_signed_in(world: CommandWorld) -> None:
    # The job is the evidence of what authorized it: its auth_time is the token's auth_time
    # (when the person signed in), never the token's issue time, which a refresh renews.
    response = await world.command("alice", "ALICE-1", "lock", auth_age=timedelta(minutes=3))
    assert response.status_code == 202, response.text
    async with world.platform.services() as (_, ctx):
        job = await ctx.session.get(CommandJob, response.json()["id"])
        assert job is not None and job.auth_time is not None
        assert job.acr == Acr.MFA.value
        assert job.created_at - job.auth_time >= timedelta(minutes=3)
        assert job.created_at - job.auth_time < timedelta(minutes=3, seconds=10)


async def test_missing_step_up_is_rejected_and_the_retry_after_it_passes(
    world: CommandWorld,
) -> None:
    # Unlock needs a recent multi-factor sign-in: an old one gets the RFC 9470 challenge and
    # a rejected job; the same key after stepping up is judged afresh and goes through.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    old = await world.command(
        "alice", "ALICE-1", "unlock", key="su-1", auth_age=timedelta(minutes=10)
    )
    assert old.status_code == 401, old.text
    assert "insufficient_user_authentication" in old.headers["www-authenticate"]
    assert old.json()["link"] == "step_up"
    password_only = await world.command("alice", "ALICE-1", "unlock", key="su-1", acr=Acr.PASSWORD)
    assert password_only.status_code == 401
    assert car.acted() == 0
    fresh = await world.command("alice", "ALICE-1", "unlock", key="su-1")
    assert fresh.status_code == 202, fresh.text
    final = await world.settle("alice", "ALICE-1", fresh.json()["id"])
    assert final["state"] == "confirmed"
    assert car.acted() == 1


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("lock", rb'{"parameters": {"\ud800": 1}}'),  # a parameter name that is no text
        ("unlock", rb'{"parameters": {"x": "\ud800"}}'),  # a value (hashed for the flow)
        ("climate", rb'{"parameters": {"cabin_celsius": "\udfff"}}'),
    ],
)
async def test_a_body_that_is_not_text_is_invalid_input(
    world: CommandWorld, name: str, body: bytes
) -> None:
    # JSON may carry a lone surrogate ("\ud800"), which is no UTF-8 text: the request is
    # invalid input (422 problem), never a 500 from echoing or hashing it, and no job exists.
    response = await world.http.post(
        f"/mobile/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands/{name}",
        content=body,
        headers={
            "authorization": f"Bearer {world.token('alice')}",
            "idempotency-key": f"text-{name}",
            "content-type": "application/json",
        },
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    listed = await world.http.get(
        f"/mobile/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands",
        headers={"authorization": f"Bearer {world.token('alice')}"},
    )
    assert listed.json()["items"] == []


async def test_a_stranger_gets_not_found_and_no_job(world: CommandWorld) -> None:
    # mallory knows ALICE-1's id: knowing an id grants nothing, and not even a job exists.
    response = await world.command("mallory", "ALICE-1", "unlock")
    assert response.status_code == 404
    assert response.json()["type"] == "urn:fleetward:problem:not-found"
    listed = await world.http.get(
        f"/mobile/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands",
        headers={"authorization": f"Bearer {world.token('alice')}"},
    )
    assert listed.json()["items"] == []


async def test_a_vehicle_id_longer_than_any_id_is_not_found(world: CommandWorld) -> None:
    # No vehicle id is longer than the store's id column (40 characters). On PostgreSQL such
    # a path id reached the audit record of the decision about it (the record's vehicle_id
    # is that column): the create was a 500, and the job routes' denial records were lost.
    # It is the missing object's 404, before any store sees it (as a control character).
    headers = {"authorization": f"Bearer {world.token('alice')}", "idempotency-key": "long"}
    base = f"/mobile/v1/vehicles/veh_{'a' * 37}/commands"
    created = await world.http.post(f"{base}/lock", json={}, headers=headers)
    assert created.status_code == 404, created.text
    assert created.json()["type"] == "urn:fleetward:problem:not-found"
    for path in (base, f"{base}/job_x", f"{base}/job_x/events"):
        assert (await world.http.get(path, headers=headers)).status_code == 404, path
    assert (await world.http.post(f"{base}/job_x/cancel", headers=headers)).status_code == 404


async def test_following_a_job_streams_its_states(world: CommandWorld) -> None:
    # Server-sent events from queued to confirmed: the state, never a bare "ok".
    await reported(world, "ALICE-1")
    response = await world.command("alice", "ALICE-1", "lock", key="follow-1")
    job_id = response.json()["id"]
    states: list[str] = []
    async with world.http.stream(
        "GET",
        f"/mobile/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands/{job_id}/events",
        headers={"authorization": f"Bearer {world.token('alice')}"},
    ) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                states.append(json.loads(line.removeprefix("data: "))["state"])
    assert states[-1] == "confirmed"
    assert states == sorted(set(states), key=states.index)  # each state once, in order
    # The stream has ended: nothing of it stays in the process (a long-running server
    # would otherwise keep an event for every job ever followed).
    assert not commands_of(world.app).dispatcher.followed(job_id)


@pytest.mark.parametrize("revoked", ["delegation", "token"])
async def test_a_follow_stream_ends_when_the_followers_access_ends(
    world: CommandWorld, revoked: str
) -> None:
    # bob follows his queued lock (the car is away). His delegation is revoked, or his
    # tokens are ("sign out everywhere": the follower may hold a stolen one): the stream
    # must end, promptly and cleanly, instead of going on showing the job for up to a minute
    # to a token that is no longer valid, or breaking off mid-message.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    response = await world.command("bob", "ALICE-1", "lock", key="bob-follow")
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    events: list[str] = []
    loop = asyncio.get_running_loop()
    revoked_at: list[float] = []
    first_event = asyncio.Event()

    async def revoke() -> None:
        # Once the stream showed the job: the revocation lands on a stream in progress (a
        # fixed pause lost the race to the first event on a loaded machine).
        await first_event.wait()
        if revoked == "delegation":
            await revoke_bob(world)
        else:
            await world.sign_out_everywhere("bob")
        revoked_at.append(loop.time())

    revoking = asyncio.create_task(revoke())
    async with world.http.stream(
        "GET",
        f"/mobile/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands/{job_id}/events",
        headers={"authorization": f"Bearer {world.token('bob')}"},
        timeout=10,
    ) as stream:
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: "))["state"])
                first_event.set()
    ended = loop.time()
    first_event.set()  # a stream that showed nothing still lets the revocation end
    await revoking
    assert events == ["queued"]
    assert ended - revoked_at[0] < 3, ended - revoked_at[0]


async def revoke_bob(world: CommandWorld) -> datetime:
    async with world.platform.services() as (uow, ctx):
        delegation = await ctx.session.scalar(
            select(DriverDelegation).where(
                DriverDelegation.driver_user_id == world.users["bob"].id,
                DriverDelegation.vehicle_id == world.vehicles["ALICE-1"].id,
            )
        )
        assert delegation is not None
        await DelegationService(ctx).revoke(delegation, actor=Actor.user(world.users["alice"].id))
        await uow.commit()
        return ctx.clock.now()


async def test_a_vehicle_can_only_be_commanded_so_often(world: CommandWorld) -> None:
    # Quotas by business meaning: one vehicle takes at most 10 commands a minute, whoever
    # sends them; the 11th is a rejected job at the quota link, answered 429 + Retry-After.
    await reported(world, "ALICE-1")
    for n in range(10):
        ok = await world.command("alice", "ALICE-1", "horn_lights", key=f"h-{n}")
        assert ok.status_code == 202, ok.text
    refused = await world.command("alice", "ALICE-1", "horn_lights", key="h-10")
    assert refused.status_code == 429, refused.text
    assert refused.json()["link"] == "quota"
    assert int(refused.headers["retry-after"]) >= 1


async def test_every_transition_is_an_audit_event(world: CommandWorld) -> None:
    # Investigators get the job's whole life from the audit log: one event per transition,
    # each naming the job, the client and the token (never the token itself).
    await reported(world, "ALICE-1")
    response = await world.command("alice", "ALICE-1", "lock", key="audit-1")
    job = await world.settle("alice", "ALICE-1", response.json()["id"])
    async with world.platform.unit_of_work() as uow:
        events = list(
            await uow.session.scalars(
                select(AuditRecord)
                .where(AuditRecord.name.like("vehicle:command:%"))
                .order_by(AuditRecord.seq)
            )
        )
    mine = [e for e in events if e.details.get("job_id") == job["id"]]
    assert [e.name.rsplit(":", 1)[-1] for e in mine] == [t["to_state"] for t in job["transitions"]]
    assert all(e.details["client_id"] == "fleetward-mobile" for e in mine)
    assert all(e.details["token_id"] for e in mine)


async def test_queued_jobs_of_offline_cars_never_starve_the_sweep(
    platform: Platform, clock: RunningClock, free_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The sweep delivers jobs queued by another replica (or left by a busy store) to the
    # cars connected here. Many jobs queued for cars that are offline (a bulk "charge" to a
    # parked fleet: an hour each) must not fill the sweep's batch: a connected car's job
    # behind them is delivered all the same. Before, the sweep took the first `batch`
    # queued jobs whatever their car, and a connected car's job waited until it expired.
    cars = ("ACME-N1", "ACME-N2")
    async with command_world(platform, clock, free_port, cars=cars) as world:
        for label in cars:
            await reported(world, label)
        # The offline car sorts first by id, and its jobs are queued first.
        away, here = sorted(cars, key=lambda label: world.vehicles[label].id)
        await world.cars[away].offline()
        dispatcher = commands_of(world.app).dispatcher
        monkeypatch.setattr(
            dispatcher, "_dispatch", dataclasses.replace(dispatcher._dispatch, batch=2)
        )
        for n in range(2):
            waiting = await world.command(
                "erin",
                away,
                "climate",
                {"cabin_celsius": 21},
                key=f"away-{n}",
                surface=Surface.FLEET,
            )
            assert waiting.json()["state"] == "queued", waiting.text
        # A job queued by another replica: not delivered in its transaction, no notice here.
        deliver_in, notify = dispatcher.deliver_in, dispatcher.notify

        async def elsewhere(*_args: Any, **_kwargs: Any) -> None:
            return None

        monkeypatch.setattr(dispatcher, "deliver_in", elsewhere)
        monkeypatch.setattr(dispatcher, "notify", lambda *_args: None)
        response = await world.command("erin", here, "lock", key="here-1", surface=Surface.FLEET)
        assert response.status_code == 202 and response.json()["state"] == "queued"
        monkeypatch.setattr(dispatcher, "deliver_in", deliver_in)
        monkeypatch.setattr(dispatcher, "notify", notify)
        await world.sweep()
        final = await world.settle("erin", here, response.json()["id"], surface=Surface.FLEET)
        assert final["state"] == "confirmed", final
        assert world.cars[here].acted() == 1
        assert world.cars[away].acted() == 0


async def test_a_car_that_stops_reading_never_stalls_the_sweep(
    platform: Platform, clock: RunningClock, free_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A TCU that keeps its session but stops reading (a rooted one, or a stalled link):
    # sending it an envelope waits for the socket. The sweep must not wait with it: it
    # also expires overdue jobs, confirms effects and delivers to every other car. Before,
    # it sent inline, car after car, and one such car held up all of that.
    cars = ("ACME-N1", "ACME-N2")
    async with command_world(platform, clock, free_port, cars=cars) as world:
        for label in cars:
            await reported(world, label)
        stuck, fine = cars
        gateway = gateway_of(world.app)
        assert gateway is not None
        live = gateway.registry.commandable(world.vehicles[stuck].id)
        assert live is not None
        released = asyncio.Event()
        send = live.sender
        assert send is not None

        async def drains_once_released(message: bytes) -> None:
            await released.wait()
            await send(message)

        live.sender = drains_once_released
        dispatcher = commands_of(world.app).dispatcher

        async def elsewhere(*_args: Any, **_kwargs: Any) -> None:
            return None

        # Jobs queued by another replica: found here by the sweep only.
        with monkeypatch.context() as patched:
            patched.setattr(dispatcher, "deliver_in", elsewhere)
            patched.setattr(dispatcher, "notify", lambda *_args: None)
            queued = {
                label: await world.command(
                    "erin", label, "lock", key=f"lock-{label}", surface=Surface.FLEET
                )
                for label in cars
            }
        assert all(r.json()["state"] == "queued" for r in queued.values())
        sweeping = asyncio.create_task(world.sweep())
        try:
            final = await world.settle(
                "erin", fine, queued[fine].json()["id"], surface=Surface.FLEET
            )
            assert final["state"] == "confirmed", final
            assert sweeping.done()
        finally:
            released.set()
            await sweeping
