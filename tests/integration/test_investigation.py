"""A scripted incident through the real routes: a stolen fleet token is used against three
vehicles among thousands; the blast radius names exactly those three, the request chain
names the token, and the audit columns were filled by the real requests."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select

from fleetward.audit import investigate as investigate_module
from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.investigate import BlastQuery, Subject, blast_radius, trace_request
from fleetward.audit.models import AuditRecord
from fleetward.authz.permissions import Permission
from fleetward.core.surfaces import Surface
from fleetward.telemetry.models import TelemetryMessage
from support.api import Api

F = Surface.FLEET
STOLEN_FAMILY = "fam_stolen_0000000000000000"
NOISE_VEHICLES = 3_000


def _stolen_token(api: Api) -> str:
    """frank's token (a fleet operator: the north group), as its thief holds it."""
    now = api.platform.clock.now()
    return api.platform.identity.tokens.issue(
        subject=api.world.users["frank"].id,
        client_id="cli_fleet",
        tenant=api.world.tenants["acme-logistics"].id,
        surface=F,
        scopes=sorted(p.value for p in Permission),
        auth_time=now - timedelta(seconds=30),
        acr="urn:fleetward:acr:mfa",
        amr=["pwd", "otp"],
        token_family=STOLEN_FAMILY,
        subject_type="user",
    ).token


async def _noise(api: Api) -> None:
    """Thousands of other vehicles read by other tokens (bulk-inserted audit rows)."""
    now = api.platform.clock.now()
    rows = [
        {
            "id": f"evt_noise_{i:08d}",
            "occurred_at": now,
            "name": EventName.AUTHZ_DECISION_MADE.value,
            "actor_type": ActorType.USER,
            "actor_id": f"usr_noise_{i % 50}",
            "object_type": "vehicle",
            "object_id": f"veh_noise_{i:08d}",
            "action": Permission.VEHICLE_READ_STATUS.value,
            "decision": Decision.ALLOWED,
            "details": {},
            "token_id": f"jti_noise_{i % 50}",
            "token_family": f"fam_noise_{i % 50}",
            "client_id": "cli_fleet",
            "vehicle_id": f"veh_noise_{i:08d}",
        }
        for i in range(NOISE_VEHICLES)
    ]
    async with api.platform.unit_of_work() as uow:
        await uow.session.execute(insert(AuditRecord), rows)
        await uow.commit()


async def test_a_stolen_token_reaches_exactly_three_vehicles(api: Api) -> None:
    await _noise(api)
    # The owner of the fleet keeps working: erin's own token reads every ACME vehicle.
    for label in ("ACME-N1", "ACME-N2", "ACME-N3", "ACME-S1", "ACME-S2"):
        response = await api.get("erin", F, f"/vehicles/{api.vehicle_id(label)}/status")
        assert response.status_code == 200
    headers = {"authorization": f"Bearer {_stolen_token(api)}"}
    request_ids = []
    for label in ("ACME-N1", "ACME-N2", "ACME-N3"):
        response = await api.client.get(
            f"/fleet/v1/vehicles/{api.vehicle_id(label)}/status", headers=headers
        )
        assert response.status_code == 200
        request_ids.append(response.headers["x-request-id"])
    # The thief tries the rest of the fleet: refused (frank is assigned the north only).
    for label in ("ACME-S1", "GLOBEX-1"):
        response = await api.client.get(
            f"/fleet/v1/vehicles/{api.vehicle_id(label)}/status", headers=headers
        )
        assert response.status_code == 404

    async with api.platform.unit_of_work() as uow:
        result = await blast_radius(uow.session, BlastQuery(Subject.TOKEN_FAMILY, STOLEN_FAMILY))
        trace = await trace_request(uow.session, request_ids[0])
        stored = (
            await uow.session.scalars(
                select(AuditRecord).where(AuditRecord.request_id == request_ids[1])
            )
        ).all()

    three = sorted(api.vehicle_id(label) for label in ("ACME-N1", "ACME-N2", "ACME-N3"))
    assert result.touched == three
    assert result.attempted_only == sorted(
        api.vehicle_id(label) for label in ("ACME-S1", "GLOBEX-1")
    )
    assert result.reads == {Permission.VEHICLE_READ_STATUS.value: 3}
    assert "ACME" not in result.to_csv()  # ids only

    # The request chain: one caller, one token, one vehicle.
    assert trace.users == [api.world.users["frank"].id]
    assert trace.token_families == [STOLEN_FAMILY]
    assert [v["vehicle_id"] for v in trace.vehicles] == [api.vehicle_id("ACME-N1")]

    # The columns were filled by the real request, not by the test.
    assert stored
    event = stored[0]
    assert event.token_family == STOLEN_FAMILY
    assert event.token_id and event.token_id == trace.tokens[0]
    assert event.client_id == "cli_fleet"
    assert event.acr == "urn:fleetward:acr:mfa" and event.amr == "pwd otp"
    assert event.surface == "fleet" and event.endpoint
    assert event.source_ip == "127.0.0.1"
    assert event.vehicle_id == api.vehicle_id("ACME-N2")
    assert event.action == Permission.VEHICLE_READ_STATUS.value
    assert event.policy_version


async def test_a_time_without_an_offset_is_a_problem_not_a_500(api: Api) -> None:
    """A window bound without its UTC offset cannot be compared with the log's aware times:
    the caller is told so (422 problem), the server does not fail, nothing is recorded."""
    async with api.platform.unit_of_work() as uow:
        before = await uow.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.name == EventName.INVESTIGATION_RUN.value)
        )
    for query in (
        "subject=window&since=2026-01-01T00:00:00",
        f"subject=token-family&value={STOLEN_FAMILY}&until=2026-01-01T00:00:00",
    ):
        response = await api.get("judy", Surface.ADMIN, f"/investigations/blast-radius?{query}")
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"][0]["problem"] == "timezone_aware"
    # Aware, but outside what UTC can hold: refused too, not handed to the store.
    for query in (
        "subject=window&since=0001-01-01T00:00:00%2B05:00",
        "subject=window&until=9999-12-31T23:00:00-05:00",
    ):
        response = await api.get("judy", Surface.ADMIN, f"/investigations/blast-radius?{query}")
        assert response.status_code == 422, response.text
        assert response.headers["content-type"] == "application/problem+json"
    async with api.platform.unit_of_work() as uow:
        after = await uow.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.name == EventName.INVESTIGATION_RUN.value)
        )
    assert after == before
    aware = "subject=window&since=2026-01-01T00:00:00Z"
    response = await api.get("judy", Surface.ADMIN, f"/investigations/blast-radius?{aware}")
    assert response.status_code == 200, response.text


PADDED_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


async def _padding(api: Api, count: int) -> None:
    """``count`` reads of the caller's own vehicle under one trace id (bulk-inserted: the
    same rows ``count`` real reads with that ``traceparent`` would leave)."""
    now = api.platform.clock.now()
    rows = [
        {
            "id": f"evt_pad_{i:08d}",
            "occurred_at": now,
            "name": EventName.AUTHZ_DECISION_MADE.value,
            "actor_type": ActorType.USER,
            "actor_id": api.world.users["frank"].id,
            "object_type": "vehicle",
            "object_id": api.vehicle_id("ACME-N1"),
            "action": Permission.VEHICLE_READ_STATUS.value,
            "decision": Decision.ALLOWED,
            "details": {},
            "token_family": STOLEN_FAMILY,
            "client_id": "cli_fleet",
            "vehicle_id": api.vehicle_id("ACME-N1"),
            "trace_id": PADDED_TRACE,
        }
        for i in range(count)
    ]
    async with api.platform.unit_of_work() as uow:
        await uow.session.execute(insert(AuditRecord), rows)
        await uow.commit()


async def test_padding_a_trace_neither_hides_its_decisive_records_nor_drops_any_silently(
    api: Api,
) -> None:
    # Threat: a trace id is the caller's to choose (its traceparent is continued), so a thief
    # first pads the trace with more cheap reads than a listing holds, then acts under it:
    # listed in order up to the cap, the records that mattered were never shown, and the
    # answer did not say it was cut.
    await _padding(api, 10_000)
    headers = {
        "authorization": f"Bearer {_stolen_token(api)}",
        "traceparent": f"00-{PADDED_TRACE}-00f067aa0ba902b7-01",
    }
    # Under the padded trace: a refused read of a car frank may not see, and a command
    # record (what the thief came for).
    refused = await api.client.get(
        f"/fleet/v1/vehicles/{api.vehicle_id('ACME-S1')}/status", headers=headers
    )
    assert refused.status_code == 404
    assert PADDED_TRACE in refused.headers["traceparent"]
    now = api.platform.clock.now()
    async with api.platform.unit_of_work() as uow:
        await uow.session.execute(
            insert(AuditRecord),
            [
                {
                    "id": "evt_pad_command",
                    "occurred_at": now,
                    "name": EventName.COMMAND_REQUESTED.value,
                    "actor_type": ActorType.USER,
                    "actor_id": api.world.users["frank"].id,
                    "object_type": "vehicle",
                    "object_id": api.vehicle_id("ACME-N2"),
                    "action": Permission.VEHICLE_UNLOCK.value,
                    "decision": Decision.ALLOWED,
                    "details": {"command": "unlock"},
                    "vehicle_id": api.vehicle_id("ACME-N2"),
                    "trace_id": PADDED_TRACE,
                }
            ],
        )
        await uow.commit()

    response = await api.get("judy", Surface.ADMIN, f"/investigations/requests/{PADDED_TRACE}")
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["total"] == 10_002
    assert page["listed"] == 10_000 and len(page["events"]) == 10_000
    assert page["truncated"] is True and page["next_cursor"]
    # The decisive records come first, whatever was added before them.
    first = page["events"][:2]
    assert [e["name"] for e in first] == [
        EventName.COMMAND_REQUESTED.value,
        EventName.AUTHZ_DECISION_MADE.value,
    ]
    assert first[1]["decision"] == Decision.DENIED.value
    assert first[1]["vehicle_id"] == api.vehicle_id("ACME-S1")
    assert api.vehicle_id("ACME-N2") in [v["vehicle_id"] for v in page["vehicles"]]
    # The rest is one page on, nothing dropped.
    more = await api.get(
        "judy",
        Surface.ADMIN,
        f"/investigations/requests/{PADDED_TRACE}?cursor={page['next_cursor']}",
    )
    assert more.status_code == 200, more.text
    rest = more.json()
    assert rest["listed"] == 2 and rest["truncated"] is False and rest["next_cursor"] is None
    listed = {e["id"] for e in page["events"]} | {e["id"] for e in rest["events"]}
    assert len(listed) == 10_002
    # A cursor no page returned is a problem, not a 500 and not the first page again (a seq
    # past a BIGINT included: the store cannot compare it).
    for cursor in ("7.1", "0.9999999999999999999"):
        bad = await api.get(
            "judy", Surface.ADMIN, f"/investigations/requests/{PADDED_TRACE}?cursor={cursor}"
        )
        assert bad.status_code == 422, (cursor, bad.text)
        assert bad.headers["content-type"].startswith("application/problem+json")


async def _commands_sent(api: Api, count: int) -> None:
    """``count`` command requests by the stolen token family (bulk-inserted: the rows its
    jobs' ``requested`` transitions leave)."""
    now = api.platform.clock.now()
    vehicles = [api.vehicle_id(label) for label in ("ACME-N1", "ACME-N2", "ACME-N3")]
    rows = [
        {
            "id": f"evt_cmd_{i:08d}",
            "occurred_at": now,
            "name": EventName.COMMAND_REQUESTED.value,
            "actor_type": ActorType.USER,
            "actor_id": api.world.users["frank"].id,
            "object_type": "command_job",
            "object_id": f"job_sent_{i:08d}",
            "action": "requested",
            "decision": Decision.ALLOWED,
            "details": {"job_id": f"job_sent_{i:08d}", "command": "lock"},
            "token_family": STOLEN_FAMILY,
            "client_id": "cli_fleet",
            "vehicle_id": vehicles[i % 3],
        }
        for i in range(count)
    ]
    async with api.platform.unit_of_work() as uow:
        await uow.session.execute(insert(AuditRecord), rows)
        await uow.commit()


async def test_a_blast_radius_never_cuts_its_commands_without_saying_so(api: Api) -> None:
    # Threat: a stolen token sends more commands than a listing holds; the answer listed the
    # first 10,000 and counted 10,000 sent, so the investigator never learned of the rest.
    await _commands_sent(api, 10_001)
    path = f"/investigations/blast-radius?subject=token-family&value={STOLEN_FAMILY}"
    response = await api.get("judy", Surface.ADMIN, path)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["counts"]["commands_sent"] == 10_001
    assert len(page["commands"]) == 10_000
    assert page["truncated"] is True
    commands = page["lists"]["commands"]
    assert commands["total"] == 10_001 and commands["listed"] == 10_000
    assert commands["truncated"] is True and commands["next_cursor"]
    # The vehicles are complete (never cut), and say so.
    assert page["lists"]["vehicles"] == {
        "total": 3,
        "listed": 3,
        "truncated": False,
        "next_cursor": None,
    }
    assert sorted(v["commands"] for v in page["vehicles"]) == [3_333, 3_334, 3_334]
    # The rest is one page on, nothing dropped, in order.
    more = await api.get("judy", Surface.ADMIN, f"{path}&cursor={commands['next_cursor']}")
    assert more.status_code == 200, more.text
    rest = more.json()
    assert rest["truncated"] is False
    assert rest["lists"]["commands"] == {
        "total": 10_001,
        "listed": 1,
        "truncated": False,
        "next_cursor": None,
    }
    listed = [c["job_id"] for c in page["commands"]] + [c["job_id"] for c in rest["commands"]]
    assert listed == [f"job_sent_{i:08d}" for i in range(10_001)]
    # A cursor no page returned is a problem (422, nothing recorded), not a 500 and not the
    # first page again.
    async with api.platform.unit_of_work() as uow:
        runs = await uow.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.name == EventName.INVESTIGATION_RUN.value)
        )
    for bad in ("x1", "1.5", "-1", "9999999999999999999"):
        response = await api.get("judy", Surface.ADMIN, f"{path}&cursor={bad}")
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    async with api.platform.unit_of_work() as uow:
        after = await uow.session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(AuditRecord.name == EventName.INVESTIGATION_RUN.value)
        )
    assert after == runs


async def test_a_request_chain_names_every_list_it_cut(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The summaries and the telemetry of a chain are capped too (10,000 and 200): an
    # investigator told less than the truth must be told so. Caps lowered to keep it small.
    monkeypatch.setattr(investigate_module, "_SUMMARY_LISTED", 2)
    monkeypatch.setattr(investigate_module, "_TELEMETRY_LISTED", 2)
    trace = "5cf92f3577b34da6a3ce929d0e0e4737"
    now = api.platform.clock.now()
    vehicle = api.vehicle_id("ACME-N1")
    async with api.platform.unit_of_work() as uow:
        await uow.session.execute(
            insert(AuditRecord),
            [
                {
                    "id": f"evt_cut_{i}",
                    "occurred_at": now,
                    "name": EventName.AUTHZ_DECISION_MADE.value,
                    "actor_type": ActorType.USER,
                    "actor_id": f"usr_cut_{i}",
                    "object_type": "vehicle",
                    "object_id": vehicle,
                    "action": Permission.VEHICLE_READ_STATUS.value,
                    "decision": Decision.ALLOWED,
                    "details": {},
                    "client_id": "cli_fleet",
                    "vehicle_id": vehicle,
                    "trace_id": trace,
                }
                for i in range(3)
            ],
        )
        await uow.session.execute(
            insert(TelemetryMessage),
            [
                {
                    "device_id": "dev_cut",
                    "sequence": i,
                    "vehicle_id": vehicle,
                    "tenant_id": api.world.tenants["acme-logistics"].id,
                    "session_id": "ses_cut",
                    "certificate_serial": "01",
                    "software_version": "1.0.0",
                    "vehicle_config": "base",
                    "received_at": now + timedelta(seconds=i),
                    "device_time": now + timedelta(seconds=i),
                    "store_and_forward": False,
                    "late": False,
                    "signals": {"Vehicle.Speed": 10.0},
                }
                for i in range(3)
            ],
        )
        await uow.commit()
    response = await api.get("judy", Surface.ADMIN, f"/investigations/requests/{trace}")
    assert response.status_code == 200, response.text
    chain = response.json()
    assert chain["cut"] == ["users", "telemetry"]
    assert chain["users"] == ["usr_cut_0", "usr_cut_1"]
    assert [m["sequence"] for m in chain["telemetry"]] == [0, 1]
    assert chain["clients"] == ["cli_fleet"]  # under its cap: whole, and not named
