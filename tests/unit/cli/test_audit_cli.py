"""``fleetward audit`` (seal, verify, export) and ``fleetward investigate`` on an embedded
store: the commands an operator runs, end to end, through the real CLI."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path

import pytest
from sqlalchemy import func, select, update
from typer.testing import CliRunner

from fleetward.audit import investigate as investigate_module
from fleetward.audit.events import EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor, Target
from fleetward.cli.main import app
from fleetward.core.context import RequestContext, set_request
from fleetward.platform import Platform
from fleetward.settings import Settings
from support.secrets_samples import ES256_JWT

REQUEST_ID = "req-cli-0001"
VEHICLES = ("veh_cli_a", "veh_cli_b")


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEETWARD_DATA_DIR", str(tmp_path / "var"))
    result = CliRunner().invoke(app, ["migrate"])
    assert result.exit_code == 0, result.output
    asyncio.run(_events(Settings()))
    return tmp_path


async def _events(settings: Settings) -> None:
    platform = Platform.build(settings)
    set_request(RequestContext(request_id=REQUEST_ID, trace_id="a" * 32, source_ip="192.0.2.7"))
    try:
        async with platform.services() as (uow, ctx):
            for vehicle in VEHICLES:
                ctx.audit.record(
                    ctx.session,
                    EventName.COMMAND_REQUESTED,
                    actor=Actor.user("usr_cli"),
                    target=Target("vehicle", vehicle),
                    details={"job_id": f"job_{vehicle}", "command": "unlock", "token_id": "jti_1"},
                )
            await uow.commit()
    finally:
        set_request(None)
        await platform.close()


async def _tamper(settings: Settings) -> None:
    platform = Platform.build(settings)
    try:
        async with platform.unit_of_work() as uow:
            await uow.session.execute(
                update(AuditRecord)
                .where(AuditRecord.object_id == VEHICLES[1])
                .values(object_id="veh_cli_z")
            )
            await uow.commit()
    finally:
        await platform.close()


async def _count(settings: Settings, name: EventName) -> int:
    platform = Platform.build(settings)
    try:
        async with platform.unit_of_work() as uow:
            return (
                await uow.session.scalar(select(func.count()).where(AuditRecord.name == name.value))
            ) or 0
    finally:
        await platform.close()


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_seal_verify_then_tamper(env: Path) -> None:
    code, out, _ = _invoke("audit", "seal", "--lag", "0")
    assert code == 0 and json.loads(out) == {"sealed": 2, "late": 0}
    code, out, _ = _invoke("audit", "verify")
    assert code == 0 and json.loads(out)["ok"] is True
    asyncio.run(_tamper(Settings()))
    code, out, err = _invoke("audit", "verify")
    assert code == 1
    assert json.loads(out)["problems"][0]["kind"] == "modified"
    assert "first problem: modified" in err


def test_export_writes_json_lines_and_is_audited(env: Path) -> None:
    _invoke("audit", "seal", "--lag", "0")
    target = env / "audit.jsonl"
    code, out, _ = _invoke("audit", "export", "-o", str(target), "--since", "2000-01-01T00:00Z")
    assert code == 0 and json.loads(out)["exported"] == 2
    lines = [json.loads(line) for line in target.read_text("utf-8").splitlines()]
    assert [line["vehicle_id"] for line in lines] == list(VEHICLES)
    assert all(line["seal"]["chain_hash"] for line in lines)
    assert asyncio.run(_count(Settings(), EventName.AUDIT_EXPORTED)) == 1


def test_export_refuses_a_naive_time(env: Path) -> None:
    code, _, _ = _invoke("audit", "export", "-o", str(env / "x"), "--since", "2026-01-01T00:00")
    assert code == 2


def test_blast_radius_as_csv_and_json(env: Path) -> None:
    code, out, _ = _invoke("investigate", "blast-radius", "token", "jti_1", "--format", "csv")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["vehicle_id"] for r in rows] == list(VEHICLES)
    code, out, _ = _invoke("investigate", "blast-radius", "user", "usr_cli", "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["counts"]["commands_sent"] == 2
    assert {c["job_id"] for c in document["commands"]} == {f"job_{v}" for v in VEHICLES}
    assert asyncio.run(_count(Settings(), EventName.INVESTIGATION_RUN)) == 2


def test_blast_radius_window_needs_a_bound(env: Path) -> None:
    code, _, _ = _invoke("investigate", "blast-radius", "window")
    assert code == 2


def test_request_chain(env: Path) -> None:
    code, out, _ = _invoke("investigate", "request", REQUEST_ID)
    assert code == 0
    document = json.loads(out)
    assert document["users"] == ["usr_cli"]
    assert document["source_ips"] == ["192.0.2.7"]
    assert [v["vehicle_id"] for v in document["vehicles"]] == list(VEHICLES)
    code, _, err = _invoke("investigate", "request", "req-unknown-1")
    assert code == 1 and "no audit event" in err


def test_governance_figures(env: Path) -> None:
    code, out, _ = _invoke("investigate", "figures")
    assert code == 0, out
    document = json.loads(out)
    assert document["routes"]["share_inventoried"] == 1.0
    # unlock, remote_start and immobilize are in the Cedar group:step_up.
    assert set(document["commands"]["commands_requiring_step_up"]) == {
        "unlock",
        "remote_start",
        "immobilize",
    }


def test_blast_radius_of_a_source_address(env: Path) -> None:
    # The records were written by the recorder from 192.0.2.7: the address, and its network,
    # find them; a fishing network or something that is no address is refused (exit 2).
    for value in ("192.0.2.7", "192.0.2.0/24", "::ffff:192.0.2.7"):
        code, out, _ = _invoke(
            "investigate", "blast-radius", "source-ip", value, "--format", "json"
        )
        assert code == 0, (value, out)
        document = json.loads(out)
        assert [v["vehicle_id"] for v in document["vehicles"]] == list(VEHICLES)
        assert document["principals"] == [{"type": "user", "id": "usr_cli"}]
        assert document["tokens"] == ["jti_1"] and document["source_ips"] == ["192.0.2.7"]
    code, out, _ = _invoke(
        "investigate", "blast-radius", "source-ip", "192.0.3.7", "--format", "json"
    )
    assert code == 0 and json.loads(out)["vehicles"] == []
    runs = asyncio.run(_count(Settings(), EventName.INVESTIGATION_RUN))
    for value in ("10.0.0.0/8", "192.0.2.7/24", "veh_cli_a"):
        code, _, _ = _invoke("investigate", "blast-radius", "source-ip", value)
        assert code == 2, value
    assert asyncio.run(_count(Settings(), EventName.INVESTIGATION_RUN)) == runs


def test_blast_radius_pages_its_vehicles(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(investigate_module, "_VEHICLES_LISTED", 1)
    code, out, _ = _invoke("investigate", "blast-radius", "user", "usr_cli", "--format", "json")
    assert code == 0
    first = json.loads(out)
    assert [v["vehicle_id"] for v in first["vehicles"]] == [VEHICLES[0]]
    cursor = first["lists"]["vehicles"]["next_cursor"]
    assert first["lists"]["vehicles"]["total"] == 2 and cursor
    code, out, _ = _invoke("investigate", "blast-radius", "user", "usr_cli")
    assert code == 0 and f"--vehicles-cursor {cursor}" in out  # the table says so
    code, out, err = _invoke("investigate", "blast-radius", "user", "usr_cli", "--format", "csv")
    assert code == 0 and f"--vehicles-cursor {cursor}" in err  # the CSV too, aside
    code, out, _ = _invoke(
        "investigate",
        "blast-radius",
        "user",
        "usr_cli",
        "--vehicles-cursor",
        cursor,
        "--format",
        "json",
    )
    assert code == 0
    rest = json.loads(out)
    assert [v["vehicle_id"] for v in rest["vehicles"]] == [VEHICLES[1]]
    assert rest["lists"]["vehicles"]["next_cursor"] is None
    for bad in ("x", "2.1", "0.9999999999999999999"):
        code, _, _ = _invoke(
            "investigate", "blast-radius", "user", "usr_cli", "--vehicles-cursor", bad
        )
        assert code == 2, bad


@pytest.mark.parametrize("bound", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_a_time_utc_cannot_hold_is_a_usage_error(env: Path, bound: str) -> None:
    # Aware, but before 0001-01-01 or after 9999-12-31 in UTC: refused as the option it is
    # (exit 2), as the admin API refuses it (422), not a traceback from the store (exit 1).
    for args in (
        ("investigate", "blast-radius", "window", "--since", bound),
        ("investigate", "blast-radius", "user", "usr_cli", "--until", bound),
        ("audit", "export", "-o", str(env / "out.jsonl"), "--since", bound),
    ):
        code, _, err = _invoke(*args)
        assert code == 2, (args, err)
        assert "UTC" in err, err
    assert not (env / "out.jsonl").exists()


def test_a_credential_given_as_the_subject_is_refused_and_never_recorded(env: Path) -> None:
    # Threat: in an incident the responder holds the stolen token itself and pastes it as
    # the token subject. The investigation is audited with "the value as asked": the live
    # bearer token would be written into the tamper-evident log (kept, exported, read by
    # every platform admin) and the query, on token ids, would find nothing. The CLI takes
    # what the admin API takes: an id (a token's is its jti), at most 128 characters.
    for args in (
        ("token", ES256_JWT),
        ("token-family", "fam_" + "a" * 200),
        ("user", "usr cli"),
        ("window", "usr_cli", "--since", "2026-01-01T00:00Z"),  # a window takes no id
    ):
        code, _, err = _invoke("investigate", "blast-radius", *args)
        assert code == 2, (args, err)
    assert "jti" in _invoke("investigate", "blast-radius", "token", ES256_JWT)[2]
    assert asyncio.run(_count(Settings(), EventName.INVESTIGATION_RUN)) == 0
    assert ES256_JWT not in json.dumps(asyncio.run(_all_details(Settings())))
    code, _, _ = _invoke("investigate", "blast-radius", "token", "jti_1")
    assert code == 0


async def _all_details(settings: Settings) -> list[object]:
    platform = Platform.build(settings)
    try:
        async with platform.unit_of_work() as uow:
            return list(await uow.session.scalars(select(AuditRecord.details)))
    finally:
        await platform.close()
