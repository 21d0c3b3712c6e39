"""A dealer technician's command jobs end to end (issue #7 on the dealer surface): the real
server, the simulated ALICE-1 over the WebSocket, real tokens, on both stores.

grace (Downtown Motors) holds the demo's open case on ALICE-1: she may run diagnostics on it,
so she may also read, list, follow and cancel that job on the dealer surface, under the same
rules as the other surfaces (her history window AND the job's own command family allowed
now; cancel for the requester only). She never sees alice's lock or unlock jobs, and once the
case is closed she sees nothing of the car: the object routes' 404.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
from sqlalchemy import select

from fleetward.audit.recorder import Actor
from fleetward.core.surfaces import Surface
from fleetward.identity.directory import Directory
from fleetward.identity.models import Role, TenantKind
from fleetward.vehicles.cases import CaseService
from fleetward.vehicles.models import CaseStatus, DealerCase
from support.commands import CommandWorld, reported

D = Surface.DEALER
SEED = Actor.system("test")


def _jobs(world: CommandWorld, surface: Surface = D) -> str:
    return f"/{surface.value}/v1/vehicles/{world.vehicles['ALICE-1'].id}/commands"


def _as(world: CommandWorld, who: str, surface: Surface = D) -> dict[str, str]:
    return {"authorization": f"Bearer {world.token(who, surface)}"}


async def _diagnose(world: CommandWorld, key: str) -> dict[str, Any]:
    response = await world.command("grace", "ALICE-1", "diagnostics_run", key=key, surface=D)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    assert response.headers["location"] == f"{_jobs(world)}/{body['id']}"
    return body


async def _follow(world: CommandWorld, who: str, job_id: str) -> list[str]:
    states: list[str] = []
    async with world.http.stream(
        "GET", f"{_jobs(world)}/{job_id}/events", headers=_as(world, who), timeout=15
    ) as stream:
        assert stream.status_code == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        async for line in stream.aiter_lines():
            if line.startswith("data: "):
                states.append(json.loads(line.removeprefix("data: "))["state"])
    return states


def _without_instance(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    body.pop("instance", None)
    return body


async def _refused_everywhere(world: CommandWorld, who: str, job_id: str) -> None:
    """Every job route answers ``who`` the unknown job's 404 (the list: the vehicle's 404)."""
    headers = _as(world, who)
    unknown = await world.http.get(f"{_jobs(world)}/job_unknown", headers=headers)
    assert unknown.status_code == 404
    assert unknown.headers["content-type"].startswith("application/problem+json")
    answers = [
        await world.http.get(_jobs(world), headers=headers),
        await world.http.get(f"{_jobs(world)}/{job_id}", headers=headers),
        await world.http.get(f"{_jobs(world)}/{job_id}/events", headers=headers),
        await world.http.post(f"{_jobs(world)}/{job_id}/cancel", headers=headers),
    ]
    for answer in answers:
        assert answer.status_code == 404, (answer.request.url, answer.text)
        assert _without_instance(answer) == _without_instance(unknown), answer.request.url


async def test_a_technician_reads_lists_follows_and_cancels_their_diagnostics_run(
    world: CommandWorld,
) -> None:
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    # The owner's own security commands on the same car, before the technician's.
    owners = []
    for command in ("lock", "unlock"):
        sent = await world.command("alice", "ALICE-1", command, key=f"alice-{command}")
        assert sent.status_code == 202, sent.text
        owners.append(sent.json()["id"])
        await world.settle("alice", "ALICE-1", owners[-1])
    # grace's diagnostics run: the connected car gets it and runs it; she follows it.
    ran = await _diagnose(world, "grace-1")
    states = await _follow(world, "grace", ran["id"])
    assert states[-1] == "executed", states
    assert states == sorted(set(states), key=states.index)
    read = await world.http.get(f"{_jobs(world)}/{ran['id']}", headers=_as(world, "grace"))
    assert read.status_code == 200, read.text
    detail = read.json()
    assert detail["command"] == "vehicle:diagnostics_run" and detail["state"] == "executed"
    assert [t["to_state"] for t in detail["transitions"]][-1] == "executed"
    # A second run while the car is away stays queued: its requester withdraws it.
    await car.offline()
    waiting = await _diagnose(world, "grace-2")
    assert waiting["state"] == "queued"
    listed = await world.http.get(_jobs(world), headers=_as(world, "grace"))
    assert listed.status_code == 200, listed.text
    items = listed.json()["items"]
    assert {i["id"] for i in items} == {ran["id"], waiting["id"]}
    assert {i["command"] for i in items} == {"vehicle:diagnostics_run"}
    assert not {i["id"] for i in items} & set(owners)  # never the owner's lock or unlock
    for owners_job in owners:  # nor one by one
        hidden = await world.http.get(f"{_jobs(world)}/{owners_job}", headers=_as(world, "grace"))
        assert hidden.status_code == 404
    cancel = f"{_jobs(world)}/{waiting['id']}/cancel"
    cancelled = await world.http.post(cancel, headers=_as(world, "grace"))
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"
    again = await world.http.post(cancel, headers=_as(world, "grace"))
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")
    # The owner sees the technician's jobs too (her car, her window), as they ended.
    seen = await world.job("alice", "ALICE-1", waiting["id"], Surface.MOBILE)
    assert seen["state"] == "cancelled"
    car.online()
    await reported(world, "ALICE-1")
    await world.sweep()
    assert (await world.job("grace", "ALICE-1", waiting["id"], D))["state"] == "cancelled"


async def test_a_technician_cannot_cancel_the_owners_job(world: CommandWorld) -> None:
    # alice's diagnostics run is in a family grace may send: she sees it, but it is not hers
    # to withdraw, and the refusal is the non-requester's 404 of the other surfaces.
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    sent = await world.command("alice", "ALICE-1", "diagnostics_run", key="alice-diag")
    assert sent.status_code == 202, sent.text
    job_id = sent.json()["id"]
    visible = await world.http.get(f"{_jobs(world)}/{job_id}", headers=_as(world, "grace"))
    assert visible.status_code == 200, visible.text
    unknown = await world.http.post(
        f"{_jobs(world)}/job_unknown/cancel", headers=_as(world, "grace")
    )
    refused = await world.http.post(f"{_jobs(world)}/{job_id}/cancel", headers=_as(world, "grace"))
    assert refused.status_code == 404, refused.text
    assert _without_instance(refused) == _without_instance(unknown)
    assert (await world.job("alice", "ALICE-1", job_id, Surface.MOBILE))["state"] == "queued"
    # Nor an owner's lock, which she may not even see.
    locked = await world.command("alice", "ALICE-1", "lock", key="alice-lock")
    assert locked.status_code == 202, locked.text
    lock_cancel = f"{_jobs(world)}/{locked.json()['id']}/cancel"
    assert (await world.http.post(lock_cancel, headers=_as(world, "grace"))).status_code == 404
    lock = await world.job("alice", "ALICE-1", locked.json()["id"], Surface.MOBILE)
    assert lock["state"] == "queued"
    # The owner may cancel hers.
    mine = await world.http.post(
        f"{_jobs(world, Surface.MOBILE)}/{job_id}/cancel",
        headers=_as(world, "alice", Surface.MOBILE),
    )
    assert mine.status_code == 200 and mine.json()["state"] == "cancelled"


async def _other_dealer(world: CommandWorld) -> None:
    """ursula, a technician of Uptown Motors, with an open case of her own on DAVE-1."""
    async with world.platform.services() as (uow, ctx):
        directory = Directory(ctx)
        uptown = await directory.create_tenant(
            "uptown-motors", "Uptown Motors", TenantKind.DEALER, actor=SEED
        )
        ursula = await directory.create_user(
            "ursula", "Ursula", uptown, password_hash=None, actor=SEED
        )
        await directory.grant_membership(ursula, uptown, Role.DEALER_TECHNICIAN, actor=SEED)
        cases = CaseService(ctx)
        case = await cases.open_dealer_case(uptown, world.vehicles["DAVE-1"], "tyres", actor=SEED)
        await cases.assign_technician(case, ursula, actor=SEED)
        await uow.commit()
    world.users["ursula"] = ursula


async def test_another_dealer_and_a_closed_case_see_nothing_of_the_job(
    world: CommandWorld,
) -> None:
    car = world.cars["ALICE-1"]
    await reported(world, "ALICE-1")
    await car.offline()
    job = await _diagnose(world, "grace-closing")
    await _other_dealer(world)
    # Another dealer's technician (an open case of her own, on another car), and harry of
    # grace's own dealer (his case, on DAVE-1, is closed): the unknown job's 404 everywhere.
    await _refused_everywhere(world, "ursula", job["id"])
    await _refused_everywhere(world, "harry", job["id"])
    # grace herself sees it while her case is open ...
    read = await world.http.get(f"{_jobs(world)}/{job['id']}", headers=_as(world, "grace"))
    assert read.status_code == 200, read.text
    listed = await world.http.get(_jobs(world), headers=_as(world, "grace"))
    assert [i["id"] for i in listed.json()["items"]] == [job["id"]]
    # ... and the case closes: her allowance ends with it, her own job included.
    async with world.platform.services() as (uow, ctx):
        case = await ctx.session.scalar(
            select(DealerCase).where(
                DealerCase.vehicle_id == world.vehicles["ALICE-1"].id,
                DealerCase.status == CaseStatus.OPEN,
            )
        )
        assert case is not None
        await CaseService(ctx).close_dealer_case(case, actor=SEED)
        await uow.commit()
    await _refused_everywhere(world, "grace", job["id"])
    # Nothing was withdrawn by any of the refused cancels.
    assert (await world.job("alice", "ALICE-1", job["id"], Surface.MOBILE))["state"] == "queued"
