"""Bulk commands end to end: the fleet's simulated cars, real tokens, the real server.

Each case: one comment on the threat or rule it covers; each asserts what the jobs ended as
and what the cars did.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from fleetward.api import bulk_commands as bulk_api
from fleetward.audit.events import Decision as AuditVerdict
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor
from fleetward.commands import bulk as bulk_service
from fleetward.commands.models import CommandBulk, CommandJob, JobState
from fleetward.commands.runtime import commands_of
from fleetward.core.surfaces import Surface
from fleetward.identity.directory import Directory
from fleetward.identity.models import Membership, Role
from fleetward.identity.oauth_models import Client
from fleetward.platform import Platform
from fleetward.vehicles.fleets import FleetService
from fleetward.vehicles.models import FleetGroup, OperatorAssignment
from support.commands import CLIENT_OF, CommandWorld, RunningClock, command_world, reported

CARS = ("ACME-N1", "ACME-N2")


@pytest.fixture
async def world(
    platform: Platform, clock: RunningClock, free_port: int
) -> AsyncIterator[CommandWorld]:
    async with command_world(platform, clock, free_port, cars=CARS) as running:
        for label in CARS:
            await reported(running, label)
        yield running


async def bulk(
    world: CommandWorld,
    who: str,
    command: str,
    labels: list[str] | None = None,
    *,
    ids: list[str] | None = None,
    key: str = "b-1",
    group: str | None = None,
    **token: Any,
) -> httpx.Response:
    body: dict[str, Any] = {
        "command": command,
        "vehicle_ids": ids if ids is not None else [world.vehicles[x].id for x in labels or []],
    }
    if group is not None:
        body["group_id"] = group
    return await world.http.post(
        "/fleet/v1/bulk-commands",
        json=body,
        headers={
            "authorization": f"Bearer {world.token(who, Surface.FLEET, **token)}",
            "idempotency-key": key,
        },
    )


async def bulks(world: CommandWorld) -> int:
    async with world.platform.unit_of_work() as uow:
        count = await uow.session.scalar(select(func.count()).select_from(CommandBulk))
    return int(count or 0)


async def test_a_fleet_admin_unlocks_two_cars_in_one_request(world: CommandWorld) -> None:
    # One request, one job per vehicle, each through the whole chain and each car acting.
    response = await bulk(world, "erin", "unlock", list(CARS))
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["state"] == "dispatched" and len(view["jobs"]) == 2
    for job in view["jobs"]:
        label = next(x for x in CARS if world.vehicles[x].id == job["vehicle_id"])
        final = await world.settle("erin", label, job["job_id"], surface=Surface.FLEET)
        assert final["state"] == "confirmed", final
        assert {c["link"] for c in final["chain"]} >= {"quota", "vehicle_state", "vehicle"}
    for label in CARS:
        assert world.cars[label].vehicle.state.locked is False
        assert world.cars[label].acted() == 1


async def test_over_the_cap_nothing_is_created(world: CommandWorld) -> None:
    # A request aimed at more vehicles than one bulk command may carry is refused whole.
    cap = commands_of(world.app).config.max_bulk
    ids = [f"veh_{n:026d}" for n in range(cap + 1)]
    response = await bulk(world, "erin", "lock", ids=ids)
    assert response.status_code == 422 and response.json()["reason"] == "over-cap"
    assert await bulks(world) == 0


@pytest.mark.parametrize(
    ("where", "bad"),
    [
        ("vehicle_ids", "veh_\x00"),
        ("group_id", "grp_\x00"),
        ("vehicle_ids", "veh_" + "a" * 37),
        ("group_id", "grp_" + "a" * 37),
    ],
)
async def test_an_id_no_object_can_have_is_invalid_input(
    world: CommandWorld, where: str, bad: str
) -> None:
    # No vehicle or group id holds a control character or is longer than the store's id
    # column (40). PostgreSQL refuses a NUL in text with an error, and a longer vehicle id
    # reached the 40-character vehicle_id of the decision's audit record: the request was a
    # 500 there (on SQLite the 404 of an unknown id). Invalid input before anything is read.
    body: dict[str, Any] = {"command": "lock", "vehicle_ids": [world.vehicles["ACME-N1"].id]}
    if where == "vehicle_ids":
        body["vehicle_ids"] = [*body["vehicle_ids"], bad]
    else:
        body["group_id"] = bad
    response = await world.http.post(
        "/fleet/v1/bulk-commands",
        json=body,
        headers={
            "authorization": f"Bearer {world.token('erin', Surface.FLEET)}",
            "idempotency-key": "nul-1",
        },
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await bulks(world) == 0
    assert world.cars["ACME-N1"].acted() == 0


async def test_without_step_up_nothing_is_created(world: CommandWorld) -> None:
    # Bulk commands need a recent multi-factor sign-in.
    response = await bulk(world, "erin", "lock", list(CARS), auth_age=timedelta(minutes=10))
    assert response.status_code == 401
    assert "insufficient_user_authentication" in response.headers["www-authenticate"]
    assert await bulks(world) == 0
    assert all(world.cars[x].acted() == 0 for x in CARS)


async def test_a_vehicle_of_another_fleet_refuses_the_whole_request(world: CommandWorld) -> None:
    # An id from another tenant slipped into the array: the same 404 as an unknown id.
    response = await bulk(world, "erin", "lock", ["ACME-N1", "GLOBEX-1"])
    assert response.status_code == 404
    assert await bulks(world) == 0
    assert world.cars["ACME-N1"].acted() == 0


async def test_an_operator_commands_only_their_group(world: CommandWorld) -> None:
    # frank is assigned to group north: a bulk lock there goes; a car of south does not.
    north = next(g for g in await groups(world) if g[1] == "north")[0]
    outside = await bulk(world, "frank", "lock", ["ACME-N1", "ACME-S1"], group=north, key="f-1")
    assert outside.status_code == 404
    inside = await bulk(world, "frank", "lock", ["ACME-N1"], group=north, key="f-2")
    assert inside.status_code == 202, inside.text
    assert await bulks(world) == 1


async def test_a_group_not_theirs_answers_as_an_unknown_group(world: CommandWorld) -> None:
    # A group id in the body is checked like an id in a path: another fleet's group, or a
    # group of their own fleet an operator is not assigned to, answers exactly what an id no
    # group has gets (it was a 403 naming "tenant-mismatch" or "no-relationship": an oracle
    # for which group ids exist and whose they are), with or without a fresh step-up, and
    # nothing is created.
    ids = {name: gid for gid, name in await groups(world)}
    unknown = "grp_" + "0" * 26
    stale = {"auth_age": timedelta(minutes=10)}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("erin", ids["main"], {}),  # a fleet admin, another fleet's group
        ("erin", ids["main"], stale),  # ... without step-up: not a step-up challenge either
        ("frank", ids["main"], {}),  # an operator, another fleet's group
        ("frank", ids["south"], {}),  # an operator, a group of his fleet not assigned to him
    ]
    for n, (who, group, token) in enumerate(cases):
        theirs = await bulk(world, who, "lock", ["ACME-N1"], group=group, key=f"g-{n}", **token)
        nobody = await bulk(world, who, "lock", ["ACME-N1"], group=unknown, key=f"u-{n}", **token)
        assert nobody.status_code == 404, nobody.text
        assert (theirs.status_code, theirs.json()) == (404, nobody.json()), (who, group, token)
    assert await bulks(world) == 0
    assert world.cars["ACME-N1"].acted() == 0


async def test_a_requester_sees_their_bulk_only_while_they_see_its_cars(
    world: CommandWorld,
) -> None:
    # frank's own bulk shows its jobs while he is an operator of the group; once he is
    # moved off it, his own request is as hidden as any other object of the fleet.
    north = next(g for g in await groups(world) if g[1] == "north")[0]
    asked = await bulk(world, "frank", "lock", ["ACME-N1"], group=north, key="f-seen")
    assert asked.status_code == 202, asked.text
    path = f"/fleet/v1/bulk-commands/{asked.json()['id']}"
    seen = await world.http.get(path, headers=fleet_auth(world, "frank"))
    assert seen.status_code == 200, seen.text
    assert [j["vehicle_id"] for j in seen.json()["jobs"]] == [world.vehicles["ACME-N1"].id]
    await unassign(world, "frank", north)
    gone = await world.http.get(path, headers=fleet_auth(world, "frank"))
    assert gone.status_code == 404, gone.text
    # The key is frank's for that one client: another client's request with it is refused.
    other = await bulk(
        world, "frank", "lock", ["ACME-N1"], group=north, key="f-seen", client_id="other-app"
    )
    assert other.status_code == 409, other.text
    # Nor does replaying the request that created it show it.
    replayed = await bulk(world, "frank", "lock", ["ACME-N1"], group=north, key="f-seen")
    assert replayed.status_code == 404, replayed.text


async def test_above_the_threshold_a_second_admin_must_approve(world: CommandWorld) -> None:
    # A large bulk unlock waits: no job, no car acts, the requester cannot approve it
    # herself, an operator cannot (and hears what an unknown bulk id gets); a second fleet
    # admin with step-up can.
    approval_above_one(world)
    response = await bulk(world, "erin", "unlock", list(CARS))
    assert response.status_code == 202, response.text
    view = response.json()
    assert view["state"] == "awaiting_approval" and view["jobs"] == []
    path = f"/fleet/v1/bulk-commands/{view['id']}/approve"
    own = await world.http.post(path, headers=fleet_auth(world, "erin"))
    assert own.status_code == 403 and own.json()["reason"] == "second-approver-required"
    operator = await world.http.post(path, headers=fleet_auth(world, "frank"))
    unknown = await world.http.post(approve_path(UNKNOWN_BULK), headers=fleet_auth(world, "frank"))
    assert (operator.status_code, without_instance(operator)) == (404, without_instance(unknown))
    await second_admin(world)
    stale = await world.http.post(
        path, headers=fleet_auth(world, "olga", auth_age=timedelta(minutes=10))
    )
    assert stale.status_code == 401
    assert all(world.cars[x].acted() == 0 for x in CARS)
    approved = await world.http.post(path, headers=fleet_auth(world, "olga"))
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "dispatched" and len(approved.json()["jobs"]) == 2
    for job in approved.json()["jobs"]:
        label = next(x for x in CARS if world.vehicles[x].id == job["vehicle_id"])
        final = await world.settle("erin", label, job["job_id"], surface=Surface.FLEET)
        assert final["state"] == "confirmed"
        assert any(c["link"] == "approval" for c in final["chain"])
    assert all(world.cars[x].vehicle.state.locked is False for x in CARS)
    again = await world.http.post(path, headers=fleet_auth(world, "olga"))
    assert again.status_code == 422 and again.json()["reason"] == "dispatched"


async def test_a_bulk_not_theirs_answers_approve_and_reject_as_an_unknown_bulk(
    world: CommandWorld,
) -> None:
    # A bulk id is an object id: someone with no relationship to a waiting bulk (an
    # operator of its fleet, with or without a fresh step-up; another fleet's admin) who
    # approves or rejects it hears exactly what an id no bulk has gets (it was a 403 for the
    # operator: an oracle for which bulk ids exist), the operator's try is still a recorded
    # denial, and the bulk keeps waiting with no job.
    approval_above_one(world)
    asked = await bulk(world, "erin", "unlock", list(CARS))
    bulk_id = asked.json()["id"]
    stale = {"auth_age": timedelta(minutes=10)}
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("frank", "approve", {}),  # an operator of the same fleet
        ("frank", "approve", stale),  # ... without step-up: not a step-up challenge either
        ("frank", "reject", {}),
        ("frank", "reject", stale),
        ("gina", "approve", {}),  # another fleet's admin
        ("gina", "reject", {}),
    ]
    before = await decisions_of(world, "frank", AuditVerdict.DENIED)
    for who, verb, token in cases:
        headers = fleet_auth(world, who, **token)
        theirs = await world.http.post(f"/fleet/v1/bulk-commands/{bulk_id}/{verb}", headers=headers)
        nobody = await world.http.post(
            f"/fleet/v1/bulk-commands/{UNKNOWN_BULK}/{verb}", headers=headers
        )
        assert nobody.status_code == 404, nobody.text
        assert (theirs.status_code, without_instance(theirs)) == (
            404,
            without_instance(nobody),
        ), (who, verb, token)
    assert await decisions_of(world, "frank", AuditVerdict.DENIED) == before + 4
    async with world.platform.unit_of_work() as uow:
        waiting = await uow.session.get(CommandBulk, bulk_id)
    assert waiting is not None and waiting.state.value == "awaiting_approval"
    assert await jobs_of(world, bulk_id) == 0


async def test_an_operator_approving_his_own_group_bulk_meets_the_four_eyes_rule(
    world: CommandWorld,
) -> None:
    # frank's own bulk is his (he reads it): his approval of it is refused by the four-eyes
    # rule and audited, never answered as if the bulk did not exist nor as a bare 403 of
    # the whole fleet's bulk command (he is asked on the group he asked it on).
    bulk_id, _north = await franks_waiting_lock(world, "f-own")
    own = await world.http.post(approve_path(bulk_id), headers=fleet_auth(world, "frank"))
    assert own.status_code == 403, own.text
    assert own.json()["reason"] == "second-approver-required"
    async with world.platform.unit_of_work() as uow:
        refused = await uow.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.name == EventName.BULK_COMMAND_APPROVAL_REFUSED.value)
        )
    assert refused == 1
    assert await jobs_of(world, bulk_id) == 0


async def test_a_requester_rejects_only_while_they_hold_the_relationship(
    world: CommandWorld,
) -> None:
    # Turning a bulk down is a decision about it like an approval: a requester's rejection
    # was never asked of the PDP (nothing recorded), so erin, after leaving the fleet, and
    # frank, moved off the group he asked on, could still reject their bulks with tokens
    # that were still valid. Now each is decided and recorded: refused as an unknown bulk
    # (the bulks keep waiting), and allowed while the relationship holds.
    approval_above_one(world)
    erins = (await bulk(world, "erin", "lock", list(CARS), key="e-left")).json()["id"]
    franks, north = await franks_waiting_lock(world, "f-left")
    franks_kept = (
        await bulk(world, "frank", "lock", list(CARS), group=north, key="f-kept")
    ).json()["id"]
    allowed = await decisions_of(world, "frank", AuditVerdict.ALLOWED)
    kept = await world.http.post(reject_path(franks_kept), headers=fleet_auth(world, "frank"))
    assert kept.status_code == 200 and kept.json()["state"] == "rejected", kept.text
    assert await decisions_of(world, "frank", AuditVerdict.ALLOWED) == allowed + 1
    await leave_fleet(world, "erin")
    await unassign(world, "frank", north)
    for who, bulk_id in (("erin", erins), ("frank", franks)):
        denied = await decisions_of(world, who, AuditVerdict.DENIED)
        refused = await world.http.post(reject_path(bulk_id), headers=fleet_auth(world, who))
        nobody = await world.http.post(reject_path(UNKNOWN_BULK), headers=fleet_auth(world, who))
        assert (refused.status_code, without_instance(refused)) == (
            404,
            without_instance(nobody),
        ), who
        assert await decisions_of(world, who, AuditVerdict.DENIED) == denied + 1, who
        async with world.platform.unit_of_work() as uow:
            waiting = await uow.session.get(CommandBulk, bulk_id)
        assert waiting is not None and waiting.state.value == "awaiting_approval", who


async def test_a_bulk_jobs_chain_names_its_approver_to_the_approver_alone(
    world: CommandWorld,
) -> None:
    # A bulk job's approval link recorded the approver's user id, and every job view showed
    # it to whoever could see the job (the requester, any admin of the fleet), although a
    # job view never says who else acted. The requester now reads the role; the approver
    # still reads her own id; the stored chain and the audit keep it for investigators.
    path = await waiting_unlock(world)
    approved = await world.http.post(path, headers=fleet_auth(world, "olga"))
    assert approved.status_code == 200, approved.text
    olga = world.users["olga"].id
    for job in approved.json()["jobs"]:
        label = next(x for x in CARS if world.vehicles[x].id == job["vehicle_id"])
        seen = await world.settle("erin", label, job["job_id"], surface=Surface.FLEET)
        assert seen["state"] == "confirmed", seen
        approval = [c for c in seen["chain"] if c["link"] == "approval"]
        assert approval == [{"link": "approval", "ok": True, "detail": "second fleet admin"}]
        assert olga not in str(seen)
        own = await world.job("olga", label, job["job_id"], surface=Surface.FLEET)
        assert [c["detail"] for c in own["chain"] if c["link"] == "approval"] == [olga]
        async with world.platform.unit_of_work() as uow:
            stored = await uow.session.get(CommandJob, job["job_id"])
        assert stored is not None and stored.chain is not None
        assert {"link": "approval", "ok": True, "detail": olga} in stored.chain
    async with world.platform.unit_of_work() as uow:
        (record,) = await uow.session.scalars(
            select(AuditRecord).where(AuditRecord.name == EventName.BULK_COMMAND_APPROVED.value)
        )
    assert record.details["approved_by"] == olga


def reject_path(bulk_id: str) -> str:
    return f"/fleet/v1/bulk-commands/{bulk_id}/reject"


async def leave_fleet(world: CommandWorld, who: str) -> None:
    """End every membership of ``who`` now (their tokens stay valid)."""
    async with world.platform.services() as (uow, ctx):
        for membership in await ctx.session.scalars(
            select(Membership).where(Membership.user_id == world.users[who].id)
        ):
            membership.valid_until, membership.ended_reason = ctx.clock.now(), "left"
        await uow.commit()


UNKNOWN_BULK = "blk_" + "0" * 26


def without_instance(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    body.pop("instance", None)
    return body


async def decisions_of(world: CommandWorld, who: str, verdict: AuditVerdict) -> int:
    """How many fleet:bulk_command decisions with this verdict ``who`` got so far."""
    async with world.platform.unit_of_work() as uow:
        rows = await uow.session.scalars(
            select(AuditRecord).where(
                AuditRecord.name == EventName.AUTHZ_DECISION_MADE.value,
                AuditRecord.actor_id == world.users[who].id,
                AuditRecord.decision == verdict,
            )
        )
        return sum(1 for r in rows if r.details.get("permission") == "fleet:bulk_command")


async def test_a_requester_approving_their_own_bulk_is_refused_and_audited(
    world: CommandWorld,
) -> None:
    # The four-eyes rule holding is a security decision like any other: a requester (or a
    # stolen session of hers) trying to approve her own large bulk unlock is refused, and
    # the refusal is in the audit trail, naming who tried, the bulk and the rule; the bulk
    # keeps waiting with no job. (It left no record: only the PDP's allow of her
    # fleet:bulk_command, as if nothing had been refused.)
    approval_above_one(world)
    asked = await bulk(world, "erin", "unlock", list(CARS))
    bulk_id = asked.json()["id"]
    own = await world.http.post(
        f"/fleet/v1/bulk-commands/{bulk_id}/approve", headers=fleet_auth(world, "erin")
    )
    assert own.status_code == 403 and own.json()["reason"] == "second-approver-required"
    async with world.platform.unit_of_work() as uow:
        refused = list(
            await uow.session.scalars(
                select(AuditRecord).where(
                    AuditRecord.name == EventName.BULK_COMMAND_APPROVAL_REFUSED.value
                )
            )
        )
        waiting = await uow.session.get(CommandBulk, bulk_id)
    assert [(r.actor_id, r.object_type, r.object_id, r.decision, r.reason) for r in refused] == [
        (world.users["erin"].id, "bulk_command", bulk_id, "denied", "second-approver-required")
    ]
    assert waiting is not None and waiting.state.value == "awaiting_approval"
    assert waiting.approved_by is None
    assert await jobs_of(world, bulk_id) == 0
    assert all(world.cars[x].acted() == 0 for x in CARS)


async def test_an_approval_after_its_window_is_refused(world: CommandWorld) -> None:
    # A stale approval request cannot be approved a day later.
    approval_above_one(world)
    response = await bulk(world, "erin", "lock", list(CARS))
    await second_admin(world)
    world.clock.advance(timedelta(hours=2))
    late = await world.http.post(
        f"/fleet/v1/bulk-commands/{response.json()['id']}/approve",
        headers=fleet_auth(world, "olga"),
    )
    assert late.status_code == 422 and late.json()["reason"] == "approval-expired"
    assert all(world.cars[x].acted() == 0 for x in CARS)


async def test_an_approval_racing_a_rejection_is_judged_again(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The requester's rejection commits between a second admin's read of the waiting bulk
    # and the approval's write: the approval does not overwrite it (a vetoed bulk unlock
    # never reaches a car); judged again, it is refused as rejected.
    path = await waiting_unlock(world)
    bulk_id = path.split("/")[-2]
    read = bulk_api._visible_bulk
    reads: list[str] = []

    async def read_then_reject(*args: Any) -> CommandBulk:
        found = await read(*args)
        reads.append(found.state.value)
        if len(reads) == 1:
            async with world.platform.services() as (uow, ctx):
                waiting = await ctx.session.get(CommandBulk, bulk_id)
                assert waiting is not None
                bulk_service.reject(ctx, waiting, world.users["erin"].id, "turned-down")
                await uow.commit()
        return found

    monkeypatch.setattr(bulk_api, "_visible_bulk", read_then_reject)
    approved = await world.http.post(path, headers=fleet_auth(world, "olga"))
    assert approved.status_code == 422, approved.text
    assert approved.json()["reason"] == "rejected"
    assert reads == ["awaiting_approval", "rejected"]
    assert await jobs_of(world, bulk_id) == 0
    assert all(world.cars[x].acted() == 0 for x in CARS)


async def test_two_approvals_at_once_dispatch_once(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A double-submitted approval: both requests read the bulk waiting; the first dispatches
    # one job per car, the second must not dispatch them again (each car would act twice).
    path = await waiting_unlock(world)
    bulk_id = path.split("/")[-2]
    read = bulk_api._visible_bulk
    reads: list[str] = []

    async def read_then_approve(*args: Any) -> CommandBulk:
        found = await read(*args)
        reads.append(found.state.value)
        if len(reads) == 1:
            first = await world.http.post(path, headers=fleet_auth(world, "olga"))
            assert first.status_code == 200 and first.json()["state"] == "dispatched"
        return found

    monkeypatch.setattr(bulk_api, "_visible_bulk", read_then_approve)
    second = await world.http.post(path, headers=fleet_auth(world, "olga"))
    assert second.status_code == 422, second.text
    assert second.json()["reason"] == "dispatched"
    assert reads == ["awaiting_approval", "awaiting_approval", "dispatched"]
    assert await jobs_of(world, bulk_id) == len(CARS)


async def test_the_same_bulk_request_twice_at_once_creates_one_bulk(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A network retry of a bulk lock arrives while the first is being judged: both looked
    # for the key before either wrote. The second to commit is the first's replay (202, the
    # same bulk), never a 500 and never a second bulk or second jobs.
    judged = bulk_api.client_link
    calls: list[int] = []
    twins: list[httpx.Response] = []

    async def judged_while_twin_commits(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            twins.append(await bulk(world, "erin", "lock", list(CARS), key="twin"))
        await judged(*args)

    monkeypatch.setattr(bulk_api, "client_link", judged_while_twin_commits)
    first = await bulk(world, "erin", "lock", list(CARS), key="twin")
    (twin,) = twins
    assert twin.status_code == 202 and first.status_code == 202, first.text
    assert first.json()["id"] == twin.json()["id"]
    assert first.headers.get("Idempotency-Replayed") == "true"
    assert await bulks(world) == 1
    assert await jobs_of(world, first.json()["id"]) == len(CARS)


def approval_above_one(world: CommandWorld) -> None:
    """From now on a bulk of two or more cars waits for a second fleet admin."""
    runtime = commands_of(world.app)
    world.app.state.commands = dataclasses.replace(
        runtime, config=dataclasses.replace(runtime.config, approval_threshold=1)
    )


async def waiting_unlock(world: CommandWorld) -> str:
    """A bulk unlock of both cars waiting for a second admin (olga); its approve path."""
    approval_above_one(world)
    response = await bulk(world, "erin", "unlock", list(CARS))
    assert response.json()["state"] == "awaiting_approval"
    await second_admin(world)
    return f"/fleet/v1/bulk-commands/{response.json()['id']}/approve"


async def jobs_of(world: CommandWorld, bulk_id: str) -> int:
    async with world.platform.unit_of_work() as uow:
        count = await uow.session.scalar(
            select(func.count()).select_from(CommandJob).where(CommandJob.bulk_id == bulk_id)
        )
    return int(count or 0)


def fleet_auth(world: CommandWorld, who: str, **token: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {world.token(who, Surface.FLEET, **token)}"}


async def second_admin(world: CommandWorld) -> None:
    async with world.platform.services() as (uow, ctx):
        directory = Directory(ctx)
        acme = world.tenants["acme-logistics"]
        olga = await directory.create_user(
            "olga", "Olga", acme, password_hash=None, actor=Actor.system("test")
        )
        await directory.grant_membership(olga, acme, Role.FLEET_ADMIN, actor=Actor.system("t"))
        await uow.commit()
    world.users["olga"] = olga


async def groups(world: CommandWorld) -> list[tuple[str, str]]:
    async with world.platform.unit_of_work() as uow:
        rows = await uow.session.execute(select(FleetGroup.id, FleetGroup.name))
        return [(gid, name) for gid, name in rows]


async def test_a_requester_revoked_before_the_approval_never_reaches_a_car(
    world: CommandWorld,
) -> None:
    # A large bulk unlock asked for with erin's stolen token; erin then signs out everywhere
    # (her tokens revoked) while it waits; an unaware second admin approves it later. The
    # jobs are created at the approval, after the revocation, but the grant they carry is
    # the bulk request's token: the delivery re-check must find the revocation and never
    # send them.
    path = await waiting_unlock(world)
    bulk_id = path.split("/")[-2]
    await world.sign_out_everywhere("erin")
    world.clock.advance(timedelta(seconds=5))  # the approval comes a little later
    approved = await world.http.post(path, headers=fleet_auth(world, "olga"))
    assert approved.status_code == 200, approved.text
    ids = [job["job_id"] for job in approved.json()["jobs"]]
    assert len(ids) == len(CARS)
    states: list[CommandJob] = []
    for _ in range(200):
        async with world.platform.unit_of_work() as uow:
            states = [j for j in [await uow.session.get(CommandJob, i) for i in ids] if j]
        if all(j.state is not JobState.QUEUED for j in states):
            break
        await asyncio.sleep(0.05)
    assert [j.state for j in states] == [JobState.REJECTED] * len(CARS), bulk_id
    assert all(j.rejected_link == "delivery_recheck" for j in states)
    await asyncio.sleep(0.3)
    assert all(world.cars[x].acted() == 0 for x in CARS)
    assert all(world.cars[x].vehicle.state.locked is True for x in CARS)


async def test_a_token_revoked_while_its_bulk_request_waits_creates_nothing(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A bulk unlock asked for with a stolen token: authenticated, then its owner revokes
    # every token of theirs while it waits to be judged. The bulk is stamped after the
    # revocation, so its jobs' delivery re-check (revocations since the bulk request) never
    # counted it and every car unlocked. Nothing may be created.
    original = bulk_api.charge_command_flow

    async def revoked_meanwhile(*args: Any, **kwargs: Any) -> None:
        await original(*args, **kwargs)
        await world.sign_out_everywhere("erin")
        world.clock.advance(timedelta(seconds=1))

    monkeypatch.setattr(bulk_api, "charge_command_flow", revoked_meanwhile)
    response = await bulk(world, "erin", "unlock", list(CARS), key="stolen-bulk")
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert await bulks(world) == 0
    await world.sweep()
    await asyncio.sleep(0.3)
    for label in CARS:
        assert world.cars[label].acted() == 0


async def test_an_approvers_token_revoked_while_the_approval_waits_approves_nothing(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A second admin's stolen token approves a waiting bulk unlock: authenticated, then its
    # owner signs out everywhere before the approval is judged. The approval went through
    # on the dead token and every car unlocked. Nothing may be approved: 401, the bulk keeps
    # waiting, no job, no car acts.
    path = await waiting_unlock(world)
    original = bulk_api._approve_once

    async def revoked_meanwhile(*args: Any) -> Any:
        await world.sign_out_everywhere("olga")
        world.clock.advance(timedelta(seconds=1))
        return await original(*args)

    monkeypatch.setattr(bulk_api, "_approve_once", revoked_meanwhile)
    response = await world.http.post(path, headers=fleet_auth(world, "olga"))
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    bulk_id = path.split("/")[-2]
    async with world.platform.unit_of_work() as uow:
        stored = await uow.session.get(CommandBulk, bulk_id)
    assert stored is not None and stored.state.value == "awaiting_approval"
    assert await jobs_of(world, bulk_id) == 0
    await world.sweep()
    await asyncio.sleep(0.3)
    assert all(world.cars[x].acted() == 0 for x in CARS)


async def test_a_requester_demoted_before_the_approval_has_nothing_approved(
    world: CommandWorld,
) -> None:
    # erin, a fleet admin, asks for a bulk unlock of two cars of the fleet; while it waits
    # her admin role ends and she becomes an operator of north, the group of both cars:
    # each car's unlock is still hers to send, a bulk command to the whole fleet is not.
    # An unaware second admin's approval must not send it on her behalf.
    path = await waiting_unlock(world)
    north = next(g for g in await groups(world) if g[1] == "north")[0]
    await demote_erin_to_operator_of(world, north)
    world.clock.advance(timedelta(seconds=5))
    refused = await world.http.post(path, headers=fleet_auth(world, "olga"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["reason"] == "requester-not-allowed"
    bulk_id = path.split("/")[-2]
    assert await jobs_of(world, bulk_id) == 0
    async with world.platform.unit_of_work() as uow:
        stored = await uow.session.get(CommandBulk, bulk_id)
        assert stored is not None and stored.decided_reason == "requester-not-allowed"
    # Nor can it be approved again later.
    again = await world.http.post(path, headers=fleet_auth(world, "olga"))
    assert again.status_code == 422 and again.json()["reason"] == "rejected"
    await asyncio.sleep(0.3)
    assert all(world.cars[x].acted() == 0 for x in CARS)
    assert all(world.cars[x].vehicle.state.locked is True for x in CARS)


async def test_a_requester_demoted_to_an_operator_has_no_bulk_immobilize_approved(
    world: CommandWorld,
) -> None:
    # erin, a fleet admin, asks for a bulk immobilize of north; while it waits she becomes
    # an operator of north. North is still hers to command in bulk, but an operator never
    # immobilises in bulk (no-bulk-immobilize): the approval decides for the bulk's command,
    # not for "a bulk command" in general, and refuses it. (The fleet's console is
    # registered for immobilize here: a deployment may approve it.)
    async with world.platform.services() as (uow, ctx):
        console = await ctx.session.get(Client, CLIENT_OF[Surface.FLEET])
        assert console is not None
        console.scopes = [*console.scopes, "vehicle:immobilize"]
        await uow.commit()
    approval_above_one(world)
    north = next(g for g in await groups(world) if g[1] == "north")[0]
    asked = await bulk(world, "erin", "immobilize", list(CARS), group=north, key="e-imm")
    assert asked.status_code == 202 and asked.json()["state"] == "awaiting_approval", asked.text
    await second_admin(world)
    await demote_erin_to_operator_of(world, north)
    world.clock.advance(timedelta(seconds=5))
    refused = await world.http.post(
        approve_path(asked.json()["id"]), headers=fleet_auth(world, "olga")
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["reason"] == "requester-not-allowed"
    assert await jobs_of(world, asked.json()["id"]) == 0


async def test_a_requester_demoted_while_the_jobs_wait_has_no_bulk_immobilize_delivered(
    world: CommandWorld,
) -> None:
    # erin, a fleet admin, immobilises both cars of north in one bulk request (below the
    # threshold: its jobs are created at once) while the cars are offline; before they
    # reconnect she becomes an operator of north. Each car's own immobilize is still hers
    # to send, one at a time, but an operator never immobilises in bulk
    # (no-bulk-immobilize). The delivery re-check asked only the car's question, so both
    # cars were immobilised on her behalf; it must ask the bulk's too, as the approval
    # does: the jobs are rejected at delivery and no car acts.
    async with world.platform.services() as (uow, ctx):
        console = await ctx.session.get(Client, CLIENT_OF[Surface.FLEET])
        assert console is not None
        console.scopes = [*console.scopes, "vehicle:immobilize"]
        await uow.commit()
    north = next(g for g in await groups(world) if g[1] == "north")[0]
    for label in CARS:
        await world.cars[label].offline()
    asked = await bulk(world, "erin", "immobilize", list(CARS), group=north, key="e-imm-now")
    assert asked.status_code == 202 and asked.json()["state"] == "dispatched", asked.text
    await demote_erin_to_operator_of(world, north)
    await second_admin(world)
    for label in CARS:
        world.cars[label].online()
    for job in asked.json()["jobs"]:
        label = next(x for x in CARS if world.vehicles[x].id == job["vehicle_id"])
        final = await world.settle("olga", label, job["job_id"], surface=Surface.FLEET)
        assert final["state"] == "rejected", final
        assert final["rejected_link"] == "delivery_recheck"
        recheck = next(c for c in final["chain"] if c["link"] == "delivery_recheck")
        assert recheck == {"link": "delivery_recheck", "ok": False, "detail": "no-bulk-immobilize"}
    assert all(world.cars[x].acted() == 0 for x in CARS)


async def demote_erin_to_operator_of(world: CommandWorld, group_id: str) -> None:
    """End erin's fleet admin membership now; she becomes an operator of the group."""
    async with world.platform.services() as (uow, ctx):
        erin = world.users["erin"]
        (admin,) = await ctx.session.scalars(
            select(Membership).where(
                Membership.user_id == erin.id, Membership.role == Role.FLEET_ADMIN
            )
        )
        admin.valid_until, admin.ended_reason = ctx.clock.now(), "demoted"
        acme = world.tenants["acme-logistics"]
        await Directory(ctx).grant_membership(
            erin, acme, Role.FLEET_OPERATOR, actor=Actor.system("test")
        )
        group = await ctx.session.get(FleetGroup, group_id)
        assert group is not None
        await FleetService(ctx).assign_operator(group, erin, actor=Actor.system("test"))
        await uow.commit()


async def test_an_operator_moved_off_the_group_has_nothing_approved(
    world: CommandWorld,
) -> None:
    # frank, an operator of north, asks for a bulk lock of the group's two cars above the
    # threshold; he is moved off north before a fleet admin approves: refused, no job.
    bulk_id, north = await franks_waiting_lock(world, "f-wait")
    await unassign(world, "frank", north)
    refused = await world.http.post(approve_path(bulk_id), headers=fleet_auth(world, "olga"))
    assert refused.status_code == 422, refused.text
    assert refused.json()["reason"] == "requester-not-allowed"
    assert await jobs_of(world, bulk_id) == 0


async def test_an_operators_waiting_group_bulk_is_approved_while_he_holds_the_group(
    world: CommandWorld,
) -> None:
    # The re-check judges the group the request was asked on, not the whole fleet: an
    # operator's bulk lock of his own group is approved and reaches both cars.
    bulk_id, _north = await franks_waiting_lock(world, "f-ok")
    approved = await world.http.post(approve_path(bulk_id), headers=fleet_auth(world, "olga"))
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "dispatched" and len(approved.json()["jobs"]) == 2


async def test_a_bulk_approved_long_after_its_request_is_not_asked_for_step_up_again(
    world: CommandWorld,
) -> None:
    # Step-up is the request's link: the requester signed in with MFA when asking, and the
    # approval (by a second admin with her own fresh step-up) 20 minutes later, well within
    # the approval window, does not need the requester's sign-in to be fresh again.
    bulk_id, _north = await franks_waiting_lock(world, "f-late")
    world.clock.advance(timedelta(minutes=20))
    approved = await world.http.post(approve_path(bulk_id), headers=fleet_auth(world, "olga"))
    assert approved.status_code == 200, approved.text
    assert approved.json()["state"] == "dispatched" and len(approved.json()["jobs"]) == 2


async def franks_waiting_lock(world: CommandWorld, key: str) -> tuple[str, str]:
    """frank's bulk lock of north's two cars, waiting for a second admin (olga, created
    here): (the bulk's id, north's id)."""
    approval_above_one(world)
    north = next(g for g in await groups(world) if g[1] == "north")[0]
    asked = await bulk(world, "frank", "lock", list(CARS), group=north, key=key)
    assert asked.status_code == 202 and asked.json()["state"] == "awaiting_approval"
    await second_admin(world)
    return asked.json()["id"], north


def approve_path(bulk_id: str) -> str:
    return f"/fleet/v1/bulk-commands/{bulk_id}/approve"


async def unassign(world: CommandWorld, who: str, group_id: str) -> None:
    """End ``who``'s operator assignment to the group."""
    async with world.platform.services() as (uow, ctx):
        (assignment,) = await ctx.session.scalars(
            select(OperatorAssignment).where(
                OperatorAssignment.group_id == group_id,
                OperatorAssignment.user_id == world.users[who].id,
            )
        )
        await FleetService(ctx).unassign_operator(assignment, actor=Actor.system("test"))
        await uow.commit()


async def test_an_approved_bulk_keeps_the_requested_ttl(world: CommandWorld) -> None:
    # A TTL only ever shortens a command's lifetime: "unlock these cars, but only within the
    # next 5 s". Below the threshold the jobs keep it; a bulk that waits for a second admin
    # must keep it too, never stretch the jobs to the command's full lifetime.
    approval_above_one(world)
    await second_admin(world)
    response = await world.http.post(
        "/fleet/v1/bulk-commands",
        json={
            "command": "horn_lights",
            "vehicle_ids": [world.vehicles[x].id for x in CARS],
            "ttl_seconds": 5,
        },
        headers={**fleet_auth(world, "erin"), "idempotency-key": "ttl-1"},
    )
    assert response.status_code == 202, response.text
    assert response.json()["state"] == "awaiting_approval"
    approved = await world.http.post(
        f"/fleet/v1/bulk-commands/{response.json()['id']}/approve",
        headers=fleet_auth(world, "olga"),
    )
    assert approved.status_code == 200, approved.text
    async with world.platform.unit_of_work() as uow:
        created = list(
            await uow.session.scalars(
                select(CommandJob).where(CommandJob.bulk_id == response.json()["id"])
            )
        )
    assert len(created) == len(CARS)
    assert all(j.expires_at - j.created_at == timedelta(seconds=5) for j in created), [
        j.expires_at - j.created_at for j in created
    ]


# PostgreSQL: two writers run at once there (on SQLite the approval's transaction holds the
# write lock once it wrote, and the single command waits for it).
@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_an_approval_racing_a_single_command_for_one_of_its_cars_is_judged_again(
    world: CommandWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While a second admin's approval creates the bulk unlock's jobs, a single unlock of one
    # of its cars commits first and takes that car's security slot. The approval's commit
    # then finds the slot taken (the unique index): it is judged again, and that car's job
    # is rejected at the conflict link, never a 500 that leaves the approval undone.
    path = await waiting_unlock(world)
    await world.cars[CARS[0]].offline()  # the single unlock then waits, holding the slot
    first_car = world.vehicles[CARS[0]].id
    made = bulk_api._service
    raced: list[httpx.Response] = []

    def racing_service(ctx: Any, runtime: Any) -> Any:
        service = made(ctx, runtime)
        create = service.create

        async def create_then_race(*args: Any, **kwargs: Any) -> Any:
            created = await create(*args, **kwargs)
            if args[1].vehicle_id == first_car and not raced:
                raced.append(
                    await world.command(
                        "erin", CARS[0], "unlock", key="single", surface=Surface.FLEET
                    )
                )
            return created

        monkeypatch.setattr(service, "create", create_then_race)
        return service

    monkeypatch.setattr(bulk_api, "_service", racing_service)
    approved = await world.http.post(path, headers=fleet_auth(world, "olga"))
    assert [r.status_code for r in raced] == [202], raced[0].text if raced else None
    assert approved.status_code == 200, approved.text
    jobs = {j["vehicle_id"]: j for j in approved.json()["jobs"]}
    assert jobs[first_car]["state"] == "rejected"
    assert jobs[first_car]["rejected_link"] == "conflict"
    other = jobs[world.vehicles[CARS[1]].id]
    final = await world.settle("erin", CARS[1], other["job_id"], surface=Surface.FLEET)
    assert final["state"] == "confirmed", final
    assert raced[0].json()["state"] == "queued"
    assert [world.cars[x].acted() for x in CARS] == [0, 1]
