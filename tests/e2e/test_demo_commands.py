"""The issue's "done when", as a person would do it: `make run` (`fleetward demo`) serves the
demo world with its simulated fleet; alice signs in through the real login with TOTP
(`fleetward token`), unlocks ALICE-1 and follows the job to `confirmed` while the car's
reported lock state changes; bob, who drives ALICE-1 but may not unlock it, is refused."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx

from support.server import fleetward_env, run_cli, running


def _token(user: str, env: dict[str, str]) -> str:
    result = run_cli("token", "--user", user, env=env)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _locked(client: httpx.Client, vehicle: str, headers: dict[str, str]) -> bool | None:
    status = client.get(f"/mobile/v1/vehicles/{vehicle}/status", headers=headers).json()
    signals = (status.get("state") or {}).get("signals", {})
    value = signals.get("Vehicle.Cabin.Door.Row1.DriverSide.IsLocked")
    return value if isinstance(value, bool) else None


def test_alice_unlocks_alice_1_in_the_demo(tmp_path: Path, free_port: int) -> None:
    env = fleetward_env(tmp_path / "var", free_port)
    base = f"http://127.0.0.1:{free_port}"
    with (
        running("demo", env=env, port=free_port, ready_path="/readyz", timeout=120) as server,
        httpx.Client(base_url=base, timeout=30) as client,
    ):
        alice = {"authorization": f"Bearer {_token('alice', env)}"}
        cars = client.get("/mobile/v1/vehicles", headers=alice).json()["items"]
        vehicle = next(c["id"] for c in cars if c["label"] == "ALICE-1")
        deadline = time.monotonic() + 60
        while _locked(client, vehicle, alice) is not True:  # the parked car has reported
            assert time.monotonic() < deadline, "ALICE-1 never reported itself locked"
            time.sleep(0.5)

        bob = {"authorization": f"Bearer {_token('bob', env)}", "idempotency-key": "bob-1"}
        refused = client.post(
            f"/mobile/v1/vehicles/{vehicle}/commands/unlock", json={}, headers=bob
        )
        assert refused.status_code == 403 and refused.json()["link"] == "permission"

        asked = client.post(
            f"/mobile/v1/vehicles/{vehicle}/commands/unlock",
            json={},
            headers={**alice, "idempotency-key": "alice-unlock-1"},
        )
        assert asked.status_code == 202, asked.text
        job = asked.json()
        states: list[str] = []
        with client.stream(
            "GET", f"/mobile/v1/vehicles/{vehicle}/commands/{job['id']}/events", headers=alice
        ) as events:
            for line in events.iter_lines():
                if line.startswith("data: "):
                    states.append(json.loads(line.removeprefix("data: "))["state"])
        assert states[-1] == "confirmed", states
        assert _locked(client, vehicle, alice) is False
        server.terminate()
        server.communicate(timeout=15)
