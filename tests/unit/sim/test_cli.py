"""``fleetward sim`` refuses a bad fault plan or transport before it touches the store or the
network."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from fleetward.cli.main import app


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEETWARD_DATA_DIR", str(tmp_path / "var"))
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--faults", "teleport"], "unknown fault"),
        (["--faults", "tamper=3", "--vehicles", "2"], "fleet of 2"),
        (["--faults", "tamper=0"], "positive count"),
        # One broker connection per client id: a clone cannot hold two sessions over MQTT.
        (["--transport", "mqtt", "--broker-ca", "{ca}", "--faults", "clone"], "not over mqtt"),
        (["--transport", "mqtt"], "needs --broker-ca"),
        (["--transport", "mqtt", "--broker-ca", "{missing}"], "no broker CA certificate"),
    ],
)
def test_a_bad_plan_or_transport_exits_2_and_writes_nothing(
    env: Path, args: list[str], message: str
) -> None:
    ca = env / "broker-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    filled = [arg.format(ca=ca, missing=env / "nowhere.pem") for arg in args]
    result = CliRunner().invoke(app, ["sim", *filled])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not (env / "var").exists()  # no store opened, no device file written


def test_fault_every_must_leave_clean_messages(env: Path) -> None:
    result = CliRunner().invoke(app, ["sim", "--fault-every", "1"])
    assert result.exit_code == 2


def test_the_cli_shape_of_the_issue(env: Path) -> None:
    """``fleetward sim --vehicles N [--target URL] [--duration S] [--transport ...]``."""
    result = CliRunner().invoke(app, ["sim", "--help"])
    assert result.exit_code == 0
    for option in ("--vehicles", "--target", "--duration", "--transport", "websocket|mqtt"):
        assert option in result.output
    unknown = CliRunner().invoke(app, ["sim", "--transport", "carrier-pigeon"])
    assert unknown.exit_code == 2
    assert not (env / "var").exists()
