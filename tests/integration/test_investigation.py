"""A scripted incident through the real routes: a stolen fleet token is used against three
vehicles among thousands; the blast radius names exactly those three, the request chain
names the token, and the audit columns were filled by the real requests."""

from __future__ import annotations

import csv
import io
import ipaddress
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from sqlalchemy import func, insert, select

from fleetward.app import build_app
from fleetward.audit import investigate as investigate_module
from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.investigate import BlastQuery, Subject, blast_radius, trace_request
from fleetward.audit.models import AuditRecord
from fleetward.authz.permissions import Permission
from fleetward.core.surfaces import Surface
from fleetward.settings import Settings
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
    # A sweep lists who acted only when asked (the summaries cost more than the rest of it).
    assert response.json()["summarised"] is False and response.json()["principals"] is None
    asked = f"/investigations/blast-radius?{aware}&summaries=true"
    response = await api.get("judy", Surface.ADMIN, asked)
    assert response.status_code == 200, response.text
    assert response.json()["summarised"] is True and response.json()["principals"]


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


THIEF = ("203.0.113.77", 51_000)


def _client_at(api: Api, settings: Settings, address: tuple[str, int]) -> httpx.AsyncClient:
    """The app over the same platform, reached from ``address`` (the recorded source)."""
    app = build_app(settings, platform=api.platform)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=address), base_url="http://testserver"
    )


def _read_from(api: Api, source_ip: str, actor: str, vehicle: str, **extra: Any) -> dict[str, Any]:
    """An allowed read of ``vehicle`` by ``actor`` from ``source_ip`` (a bulk-inserted row:
    what a real request from there leaves)."""
    return {
        "id": f"evt_from_{actor}",
        "occurred_at": api.platform.clock.now(),
        "name": EventName.AUTHZ_DECISION_MADE.value,
        "actor_type": ActorType.USER,
        "actor_id": actor,
        "object_type": "vehicle",
        "object_id": vehicle,
        "action": Permission.VEHICLE_READ_STATUS.value,
        "decision": Decision.ALLOWED,
        "details": {},
        "client_id": "cli_fleet",
        "vehicle_id": vehicle,
        "source_ip": source_ip,
        **extra,
    }


async def _investigations(api: Api) -> list[dict[str, Any]]:
    async with api.platform.unit_of_work() as uow:
        records = (
            await uow.session.scalars(
                select(AuditRecord)
                .where(AuditRecord.name == EventName.INVESTIGATION_RUN.value)
                .order_by(AuditRecord.seq)
            )
        ).all()
    return [{"actor": r.actor_id, **r.details} for r in records]


async def test_an_attackers_address_has_the_blast_radius_of_the_token_it_used(
    api: Api, settings: Settings
) -> None:
    # Threat: an investigator holds only the address an attack came from (a firewall log,
    # an abuse report). Every record from it must be found, with the principals and tokens
    # that used it, as the token itself would find them; neighbours only when asked for.
    await _noise(api)
    async with _client_at(api, settings, THIEF) as thief:
        headers = {"authorization": f"Bearer {_stolen_token(api)}"}
        for label, status in (
            ("ACME-N1", 200),
            ("ACME-N2", 200),
            ("ACME-N3", 200),
            ("ACME-S1", 404),
            ("GLOBEX-1", 404),
        ):
            response = await thief.get(
                f"/fleet/v1/vehicles/{api.vehicle_id(label)}/status", headers=headers
            )
            assert response.status_code == status, response.text
    # The owner keeps working, from elsewhere (127.0.0.1).
    response = await api.get("erin", F, f"/vehicles/{api.vehicle_id('ACME-N1')}/status")
    assert response.status_code == 200
    now = api.platform.clock.now()
    command = {
        "id": "evt_from_thief_command",
        "occurred_at": now,
        "name": EventName.COMMAND_REQUESTED.value,
        "actor_type": ActorType.USER,
        "actor_id": api.world.users["frank"].id,
        "object_type": "command_job",
        "object_id": "job_from_thief",
        "action": "requested",
        "decision": Decision.ALLOWED,
        "details": {"job_id": "job_from_thief", "command": "unlock"},
        "token_family": STOLEN_FAMILY,
        "client_id": "cli_fleet",
        "vehicle_id": api.vehicle_id("ACME-N2"),
        "source_ip": THIEF[0],
    }
    # The same network (one by its IPv4-mapped IPv6 form, as a dual-stack socket reports
    # it), the next one, and IPv6 neighbours.
    mapped = str(ipaddress.ip_address(f"::ffff:{THIEF[0].rsplit('.', 1)[0]}.9"))
    near = [
        _read_from(api, "203.0.113.5", "usr_neighbour", "veh_neighbour"),
        _read_from(api, mapped, "usr_mapped", "veh_mapped"),
        _read_from(api, "203.0.114.77", "usr_outside", "veh_outside"),
        _read_from(api, "2001:db8:1:2::5", "usr_v6", "veh_v6"),
        _read_from(api, "2001:db8:1:3::5", "usr_v6_outside", "veh_v6_outside"),
    ]
    async with api.platform.unit_of_work() as uow:
        await uow.session.execute(insert(AuditRecord), [command, *near])
        await uow.commit()

    base = "/investigations/blast-radius"
    by_token = await api.get(
        "judy", Surface.ADMIN, f"{base}?subject=token-family&value={STOLEN_FAMILY}"
    )
    by_address = await api.get("judy", Surface.ADMIN, f"{base}?subject=source-ip&value={THIEF[0]}")
    assert by_token.status_code == 200, by_token.text
    assert by_address.status_code == 200, by_address.text
    token, address = by_token.json(), by_address.json()
    # The same blast radius: vehicles (touched and attempted), commands, reads, counts.
    for part in ("counts", "vehicles", "commands", "reads", "principals", "tokens"):
        assert address[part] == token[part], part
    touched = sorted(v["vehicle_id"] for v in address["vehicles"] if v["touched"])
    assert touched == sorted(api.vehicle_id(label) for label in ("ACME-N1", "ACME-N2", "ACME-N3"))
    assert address["counts"]["vehicles_attempted_only"] == 2
    assert address["counts"]["commands_sent"] == 1
    assert address["reads"] == {Permission.VEHICLE_READ_STATUS.value: 3}
    # Who used the address, and with what.
    assert address["principals"] == [{"type": "user", "id": api.world.users["frank"].id}]
    assert address["token_families"] == [STOLEN_FAMILY]
    assert len(address["tokens"]) == 1 and address["clients"] == ["cli_fleet"]
    assert address["source_ips"] == [THIEF[0]]
    assert address["query"]["value"] == THIEF[0]
    assert address["truncated"] is False
    # The same address written as IPv4-mapped IPv6 is the same address.
    as_mapped = await api.get(
        "judy", Surface.ADMIN, f"{base}?subject=source-ip&value=::ffff:{THIEF[0]}"
    )
    assert as_mapped.status_code == 200, as_mapped.text
    assert as_mapped.json()["vehicles"] == address["vehicles"]

    # The network: the thief's records and its neighbours', nothing from the next one.
    network = await api.get("judy", Surface.ADMIN, f"{base}?subject=source-ip&value=203.0.113.0/24")
    assert network.status_code == 200, network.text
    wide = network.json()
    vehicles = {v["vehicle_id"] for v in wide["vehicles"]}
    assert {"veh_neighbour", "veh_mapped"} <= vehicles
    assert vehicles.isdisjoint({"veh_outside", "veh_v6", "veh_v6_outside"})
    assert wide["counts"]["vehicles_touched"] == 5
    assert {p["id"] for p in wide["principals"]} == {
        api.world.users["frank"].id,
        "usr_neighbour",
        "usr_mapped",
    }
    assert wide["source_ips"] == [THIEF[0], "203.0.113.5", mapped]
    six = await api.get("judy", Surface.ADMIN, f"{base}?subject=source-ip&value=2001:db8:1:2::/64")
    assert six.status_code == 200, six.text
    assert [v["vehicle_id"] for v in six.json()["vehicles"]] == ["veh_v6"]

    # Each query is itself audited, as any other subject's, in the canonical form asked.
    runs = await _investigations(api)
    assert [(r["subject"], r["value"]) for r in runs[-5:]] == [
        ("token-family", STOLEN_FAMILY),
        ("source-ip", THIEF[0]),
        ("source-ip", THIEF[0]),
        ("source-ip", "203.0.113.0/24"),
        ("source-ip", "2001:db8:1:2::/64"),
    ]
    assert {r["actor"] for r in runs} == {api.world.users["judy"].id}
    # Authorized like the other subjects: anyone but a platform admin is refused.
    refused = await api.get("erin", Surface.ADMIN, f"{base}?subject=source-ip&value={THIEF[0]}")
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert len(await _investigations(api)) == len(runs)


async def test_a_source_address_is_an_address_or_a_narrow_network(api: Api) -> None:
    # Threat: a network of millions is a fishing query over other people's traffic, and a
    # malformed value must neither reach the store nor be read as some other address.
    runs = len(await _investigations(api))
    base = "/investigations/blast-radius?subject=source-ip"
    for value in (
        "10.0.0.0/8",  # wider than /16
        "203.0.0.0/15",
        "2001:db8::/32",  # wider than /48
        "2001:db8::/47",
        "::ffff:0:0/104",  # IPv4-mapped: an IPv4 /8
        "::/40",  # holds every IPv4-mapped address
        "203.0.113.77/24",  # host bits set
        "203.0.113.256",
        "203.0.113",
        "01.2.3.4",
        "fleet-123",
        "2001:db8:::1",
    ):
        response = await api.get("judy", Surface.ADMIN, f"{base}&value={value}")
        assert response.status_code == 422, (value, response.text)
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["reason"] == "source-ip", value
    for value in ("", "203.0.113.7%25eth0", "203.0.113.7 ", "x" * 129):
        response = await api.get("judy", Surface.ADMIN, f"{base}&value={value}")
        assert response.status_code == 422, (value, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    missing = await api.get("judy", Surface.ADMIN, base)
    assert missing.status_code == 422 and missing.json()["reason"] == "source-ip"
    assert len(await _investigations(api)) == runs  # nothing asked, nothing recorded
    for value in ("203.0.0.0/16", "2001:db8:1::/48", "::ffff:203.0.0.0/112"):
        response = await api.get("judy", Surface.ADMIN, f"{base}&value={value}")
        assert response.status_code == 200, (value, response.text)


async def _vehicles_reached(api: Api) -> list[str]:
    """Five vehicles met in order by the stolen token family: the second, fourth and fifth
    read (touched), the first and third refused (attempted only)."""
    now = api.platform.clock.now()
    vehicles = [f"veh_page_{i}" for i in range(5)]
    rows = [
        {
            "id": f"evt_page_{i}",
            "occurred_at": now,
            "name": EventName.AUTHZ_DECISION_MADE.value,
            "actor_type": ActorType.USER,
            "actor_id": api.world.users["frank"].id,
            "object_type": "vehicle",
            "object_id": vehicle,
            "action": Permission.VEHICLE_READ_STATUS.value,
            "decision": Decision.DENIED if i in (0, 2) else Decision.ALLOWED,
            "details": {},
            "token_family": STOLEN_FAMILY,
            "client_id": "cli_fleet",
            "vehicle_id": vehicle,
        }
        for i, vehicle in enumerate(vehicles)
    ]
    async with api.platform.unit_of_work() as uow:
        await uow.session.execute(insert(AuditRecord), rows)
        await uow.commit()
    return vehicles


async def test_a_blast_radius_pages_its_vehicles_and_never_cuts_them_silently(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Threat: a window or a network over a large fleet answers with every vehicle at once (a
    # response of unbounded size); pages must cover every vehicle, touched first, each once.
    # The page size is lowered to keep it small.
    monkeypatch.setattr(investigate_module, "_VEHICLES_LISTED", 2)
    v = await _vehicles_reached(api)
    path = f"/investigations/blast-radius?subject=token-family&value={STOLEN_FAMILY}"
    pages: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        response = await api.get(
            "judy", Surface.ADMIN, path + (f"&vehicles_cursor={cursor}" if cursor else "")
        )
        assert response.status_code == 200, response.text
        pages.append(response.json())
        cursor = pages[-1]["lists"]["vehicles"]["next_cursor"]
        if cursor is None:
            break
        assert len(pages) < 5
    assert [[x["vehicle_id"] for x in p["vehicles"]] for p in pages] == [
        [v[1], v[3]],
        [v[4], v[0]],
        [v[2]],
    ]
    assert [p["lists"]["vehicles"]["truncated"] for p in pages] == [True, True, False]
    assert [p["truncated"] for p in pages] == [True, True, False]
    for page in pages:
        assert page["lists"]["vehicles"]["total"] == 5
        assert page["counts"]["vehicles_touched"] == 3
        assert page["counts"]["vehicles_attempted_only"] == 2
        assert page["counts"]["events"] == 5 and page["counts"]["denied"] == 2
    assert [p["lists"]["vehicles"]["listed"] for p in pages] == [2, 2, 1]
    # A CSV is a page too, and says where the next one starts.
    csv_page = await api.get("judy", Surface.ADMIN, f"{path}&output=csv")
    assert csv_page.status_code == 200, csv_page.text
    assert csv_page.text.splitlines()[1:] == [
        f"{v[1]},True,1,1,0,0,1",
        f"{v[3]},True,1,1,0,0,1",
    ]
    assert csv_page.headers["fleetward-vehicles-total"] == "5"
    assert (
        csv_page.headers["fleetward-vehicles-next-cursor"]
        == pages[0]["lists"]["vehicles"]["next_cursor"]
    )
    # A cursor no page returned is a problem (422, nothing recorded), not a 500 and not the
    # first page again: past a BIGINT, too long, an unknown tier, not a cursor at all.
    runs = len(await _investigations(api))
    for bad in (
        "0.9999999999999999999",
        "1.99999999999999999999",
        "2.1",
        "1",
        "x.1",
        "0.1.2",
        "-1.1",
        "0." + "1" * 40,
    ):
        response = await api.get("judy", Surface.ADMIN, f"{path}&vehicles_cursor={bad}")
        assert response.status_code == 422, (bad, response.text)
        assert response.headers["content-type"] == "application/problem+json"
    assert len(await _investigations(api)) == runs


async def test_the_vehicles_csv_never_carries_a_formula_an_attacker_typed(api: Api) -> None:
    # Threat: the thief asks for "vehicles" whose ids are spreadsheet formulas. Each refused
    # attempt is recorded with the id as asked, so the blast radius lists it; the CSV is what
    # the responder opens in a spreadsheet, where =HYPERLINK(...) or =cmd|... would run.
    # A cell that starts like a formula is written as text (a leading '), nothing dropped.
    headers = {"authorization": f"Bearer {_stolen_token(api)}"}
    typed = ["=1+2", "=HYPERLINK(A1)", "+1+2", "-3+4", "@SUM(A1)"]
    for vehicle in typed:
        response = await api.client.get(
            f"/fleet/v1/vehicles/{quote(vehicle, safe='')}/status", headers=headers
        )
        assert response.status_code == 404
    path = f"/investigations/blast-radius?subject=token-family&value={STOLEN_FAMILY}"
    response = await api.get("judy", Surface.ADMIN, f"{path}&output=csv")
    assert response.status_code == 200, response.text
    rows = list(csv.reader(io.StringIO(response.text)))[1:]
    assert sorted(row[0] for row in rows) == sorted(f"'{vehicle}" for vehicle in typed)
    assert not [row for row in rows if row[0][:1] in ("=", "+", "-", "@", "\t", "\r")]
    # The JSON is data, not a spreadsheet: it keeps the ids as recorded.
    document = (await api.get("judy", Surface.ADMIN, path)).json()
    assert sorted(v["vehicle_id"] for v in document["vehicles"]) == sorted(typed)
