"""``fleetward alerts`` on the embedded store: list, show with evidence, acknowledge once."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from fleetward.audit.events import Decision, EventName
from fleetward.audit.models import AuditRecord
from fleetward.audit.recorder import Actor, Target
from fleetward.cli.main import app
from fleetward.cli.runtime import migrate_store
from fleetward.detection.config import DetectionConfig
from fleetward.detection.runtime import DetectionRuntime
from fleetward.platform import Platform
from fleetward.settings import Settings, load_settings


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FLEETWARD_DATA_DIR", str(tmp_path / "var"))
    settings = load_settings()
    asyncio.run(migrate_store(settings))
    return settings


def _walk(settings: Settings) -> list[str]:
    """A user refused on five vehicles, evaluated: one vin-enumeration alert."""

    async def walk() -> list[str]:
        platform = Platform.build(settings)
        try:
            runtime = DetectionRuntime(platform, DetectionConfig())
            await runtime.evaluator.run_until_idle()
            async with platform.unit_of_work() as uow:
                records = [
                    platform.audit.record(
                        uow.session,
                        EventName.AUTHZ_DECISION_MADE,
                        actor=Actor.user("usr_mallory", "ten_consumer"),
                        target=Target("vehicle", f"veh_{i}"),
                        decision=Decision.DENIED,
                        reason="no-relationship",
                    )
                    for i in range(5)
                ]
                await uow.commit()
            await runtime.evaluator.run_until_idle()
            return [r["id"] for r in records]
        finally:
            await platform.close()

    return asyncio.run(walk())


def _acknowledgments(settings: Settings) -> list[str]:
    async def read() -> list[str]:
        platform = Platform.build(settings)
        try:
            async with platform.unit_of_work() as uow:
                query = select(AuditRecord.actor_id).where(
                    AuditRecord.name == EventName.ALERT_ACKNOWLEDGED.value
                )
                return list(await uow.session.scalars(query))
        finally:
            await platform.close()

    return asyncio.run(read())


def test_list_show_ack(env: Settings) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["alerts", "list"]).stdout.strip() == "no alerts"
    evidence = _walk(env)
    listed = runner.invoke(app, ["alerts", "list", "--json", "--rule", "vin-enumeration"])
    assert listed.exit_code == 0, listed.output
    (alert,) = json.loads(listed.stdout)
    assert alert["status"] == "open" and alert["evidence"] == evidence
    table = runner.invoke(app, ["alerts", "list", "--status", "open"])
    assert alert["id"] in table.stdout and "vin-enumeration" in table.stdout

    shown = runner.invoke(app, ["alerts", "show", alert["id"]])
    assert shown.exit_code == 0, shown.output
    assert [e["id"] for e in json.loads(shown.stdout)["evidence_events"]] == evidence

    acked = runner.invoke(app, ["alerts", "ack", alert["id"]])
    assert acked.exit_code == 0 and acked.stdout.startswith("acknowledged")
    again = runner.invoke(app, ["alerts", "ack", alert["id"]])
    assert again.stdout.startswith("already acknowledged")
    assert _acknowledgments(env) == ["cli:alerts"]
    assert runner.invoke(app, ["alerts", "list", "--status", "open"]).stdout.strip() == "no alerts"


@pytest.mark.parametrize(
    "args",
    [
        ["alerts", "show", "alr_" + "a" * 26],  # no such alert
        ["alerts", "ack", "not-an-id"],  # not even an id
    ],
)
def test_unknown_alert_exits_1(env: Settings, args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "Alert not found" in result.output and "Traceback" not in result.output


def test_bad_status_is_a_usage_error(env: Settings) -> None:
    assert CliRunner().invoke(app, ["alerts", "list", "--status", "closed"]).exit_code == 2


@pytest.mark.parametrize("since", ["0001-01-01T00:00:00+05:00", "9999-12-31T23:00:00-05:00"])
def test_a_time_utc_cannot_hold_is_a_usage_error(env: Settings, since: str) -> None:
    # Refused as the option it is, as the admin API refuses it, not a traceback from the store.
    result = CliRunner().invoke(app, ["alerts", "list", "--since", since])
    assert result.exit_code == 2, result.output
    assert "UTC" in result.output and "Traceback" not in result.output
