"""A scripted incident through the real routes: a stolen fleet token is used against three
vehicles among thousands; the blast radius names exactly those three, the request chain
names the token, and the audit columns were filled by the real requests."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, insert, select

from fleetward.audit.events import ActorType, Decision, EventName
from fleetward.audit.investigate import BlastQuery, Subject, blast_radius, trace_request
from fleetward.audit.models import AuditRecord
from fleetward.authz.permissions import Permission
from fleetward.core.surfaces import Surface
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
