"""The real server on loopback: readiness follows the store, logs are JSON and redacted."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from fleetward.cli.runtime import server_config
from support.server import fleetward_env, run_cli, running


def test_readiness_follows_migration(tmp_path: Path, free_port: int) -> None:
    env = fleetward_env(tmp_path / "var", free_port)
    base = f"http://127.0.0.1:{free_port}"
    with running("serve", env=env, port=free_port) as process:
        before = httpx.get(f"{base}/readyz")
        assert before.status_code == 503  # an unmigrated store is not ready
        assert before.json()["store"] == "store schema is not migrated"
        migrated = run_cli("migrate", env=env)
        assert migrated.returncode == 0, migrated.stderr
        after = httpx.get(
            f"{base}/readyz", headers={"authorization": "Bearer eyJhbGciOi.eyJzdWIi.c2ln"}
        )
        assert after.status_code == 200
        ready = after.json()
        assert {k: ready[k] for k in ("status", "store")} == {"status": "ready", "store": "ok"}
        assert len(ready["policy_version"]) == 64  # the SHA-256 of the policy set
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        document = httpx.get(f"{base}/openapi.json").json()
        assert document["paths"]["/readyz"]["get"]["x-fleetward-owner"] == "platform-team"
        assert httpx.get(f"{base}/docs").status_code == 404  # uncatalogued framework routes are off
        process.terminate()
        _out, err = process.communicate(timeout=15)
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert lines, "the server writes JSON log lines"
    assert "eyJhbGciOi.eyJzdWIi.c2ln" not in err


def test_invalid_settings_stop_the_command(tmp_path: Path, free_port: int) -> None:
    env = fleetward_env(tmp_path / "var", free_port, {"FLEETWARD_PORT": "0"})
    result = run_cli("serve", env=env, timeout=30)
    assert result.returncode == 2
    assert "FLEETWARD_PORT" in result.stderr
    assert "Traceback" not in result.stderr


async def test_a_stop_is_bounded_by_the_graceful_timeout() -> None:
    # A connection that never closes (a request that never answers) does not keep a stopping
    # server: past the graceful timeout its work is cancelled and the server shuts down.
    hanging = asyncio.Event()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = (await receive())["type"]
                await send({"type": f"{message}.complete"})  # startup, then shutdown
                if message == "lifespan.shutdown":
                    return
        hanging.set()
        await asyncio.Event().wait()  # never answers

    config = server_config(app, host="127.0.0.1", port=0, lifespan="on", graceful_shutdown_s=1)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        assert not serving.done(), "the server stopped during start-up"
        await asyncio.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    async with httpx.AsyncClient() as client:
        request = asyncio.create_task(client.get(f"http://127.0.0.1:{port}/"))
        await asyncio.wait_for(hanging.wait(), timeout=10)
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)  # without the bound: waits for ever
        request.cancel()
