"""What a new user does: `make run` runs `fleetward demo`; the platform answers /readyz."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import httpx

from fleetward.demo.world import PEOPLE
from support.server import fleetward_env, run_cli, running


def test_demo_first_run_and_rerun(tmp_path: Path, free_port: int) -> None:
    data_dir = tmp_path / "var"
    env = fleetward_env(data_dir, free_port)
    with running("demo", env=env, port=free_port, ready_path="/readyz", timeout=120) as process:
        ready = httpx.get(f"http://127.0.0.1:{free_port}/readyz")
        assert ready.status_code == 200
        # A stop may take a while on a loaded machine (the simulated fleet's sessions close,
        # the lifespan's tasks end); one that hangs fails with the log's end.
        out, _err = process.stop()
    credentials = data_dir / "demo-credentials.json"
    assert str(credentials) in out  # its path is printed
    assert f"http://127.0.0.1:{free_port}/readyz" in out
    assert stat.S_IMODE(credentials.stat().st_mode) == 0o600
    logins = json.loads(credentials.read_text(encoding="utf-8"))
    assert set(logins) == {name for name, _, _ in PEOPLE}
    assert all(len(entry["password"]) >= 20 for entry in logins.values())
    # Everyone has a TOTP seed: base32, enough for a 160-bit secret.
    assert all(len(entry["totp_secret"]) >= 32 for entry in logins.values())
    assert (data_dir / "fleetward.db").exists()

    # A second run reuses the world and keeps the logins it printed the first time.
    again = run_cli("demo", "--no-serve", env=env)
    assert again.returncode == 0, again.stderr
    assert json.loads(credentials.read_text(encoding="utf-8")) == logins

    # If the logins file is lost, the next run issues new passwords rather than none.
    credentials.unlink()
    third = run_cli("demo", "--no-serve", env=env)
    assert third.returncode == 0, third.stderr
    renewed = json.loads(credentials.read_text(encoding="utf-8"))
    assert set(renewed) == set(logins)
    assert renewed["alice"]["password"] != logins["alice"]["password"]
