"""``fleetward token`` end to end: a real server process, the real CLI, real HTTP."""

from __future__ import annotations

import json
from pathlib import Path

from fleetward.core.surfaces import Surface
from fleetward.platform import Platform
from fleetward.settings import Settings
from support.server import fleetward_env, run_cli, running


async def test_fleetward_token_obtains_valid_tokens(tmp_path: Path, free_port: int) -> None:
    data_dir = tmp_path / "var"
    env = fleetward_env(data_dir, free_port)
    setup = run_cli("demo", "--no-serve", env=env)
    assert setup.returncode == 0, setup.stderr
    with running("serve", env=env, port=free_port, ready_path="/readyz") as server:
        mobile = run_cli(
            "token", "--user", "alice", "--client", "fleetward-mobile", "--json", env=env
        )
        # Another person: each TOTP code is accepted once, so no one logs in twice here.
        plain = run_cli("token", "--user", "dave", env=env)
        console = run_cli(
            "token",
            "--user",
            "erin",
            "--client",
            "fleet-console",
            "--scope",
            "vehicle:read_status",
            env=env,
        )
        unknown = run_cli("token", "--user", "nobody", env=env)
        server.terminate()
        server_out, server_err = server.communicate(timeout=15)
    assert mobile.returncode == 0, mobile.stderr
    assert plain.returncode == 0, plain.stderr
    assert console.returncode == 0, console.stderr
    assert unknown.returncode == 1 and "nobody" in unknown.stderr
    body = json.loads(mobile.stdout)
    assert body["token_type"] == "DPoP" and "d" in body["dpop_private_jwk"]

    # The tokens validate with the server's own keys and issuer.
    settings = Settings(data_dir=data_dir, port=free_port, password_hash_memory_kib=19_456)
    platform = Platform.build(settings)
    try:
        claims = await platform.identity.validator.validate(
            body["access_token"], surface=Surface.MOBILE
        )
        assert claims.cnf_jkt is not None
        default = await platform.identity.validator.validate(
            plain.stdout.strip(), surface=Surface.MOBILE
        )
        assert default.client_id == "fleetward-cli"  # dave is a customer: the mobile surface
        fleet = await platform.identity.validator.validate(
            console.stdout.strip(), surface=Surface.FLEET
        )
        # A confidential client (private_key_jwt) for a fleet admin who passed TOTP.
        assert (fleet.client_id, fleet.scope, "otp" in fleet.amr) == (
            "fleet-console",
            "vehicle:read_status",
            True,
        )
        # No token reaches the server's logs.
        assert body["access_token"] not in server_out + server_err
        for printed in (plain.stdout.strip(), console.stdout.strip()):
            assert printed not in server_out + server_err
    finally:
        await platform.close()
