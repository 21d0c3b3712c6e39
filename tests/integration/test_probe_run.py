"""The probe end to end: a real server over a demo-seeded data dir, the probe world seeded
in-process through the documented hook, tokens through the real OAuth flows, every family of
cases sent over HTTP. The real platform must pass every case; a platform with one route's
object check removed must be flagged.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request as HttpRequest

import fleetward.api.vehicles as vehicle_routes
from fleetward.app import build_app
from fleetward.platform import Platform
from fleetward.probe.auth import expired_of, login_of, obtain_tokens, password_only_of, stale_of
from fleetward.probe.generate import generate
from fleetward.probe.manifest import Manifest
from fleetward.probe.model import Family, Result, Verdict
from fleetward.probe.runner import run
from fleetward.probe.seed import seed_probe_world
from fleetward.probe.spec.load import load_demo
from fleetward.settings import Settings
from support.server import PROBED_QUOTAS, fleetward_env, run_cli, running

TESTSERVER = "http://testserver"


def _summary(results: list[Result]) -> str:
    wrong = [r for r in results if r.verdict is not Verdict.PASS]
    lines = [
        f"{r.verdict.value} {r.case.id} {r.case.request.method} {r.case.request.path} "
        f"-> {r.status}: {r.reason} | {r.response_excerpt[:160]}"
        for r in wrong[:40]
    ]
    by_family = Counter(r.case.family.value for r in wrong)
    return f"{len(wrong)} of {len(results)} wrong {dict(by_family)}\n" + "\n".join(lines)


async def _seed(settings: Settings, out: Path) -> Manifest:
    platform = Platform.build(settings)
    try:
        return await seed_probe_world(platform, out=out)
    finally:
        await platform.close()


@pytest.fixture
def live(tmp_path: Path, free_port: int) -> Iterator[tuple[str, Settings]]:
    """A demo deployment: `fleetward demo --no-serve`, then `fleetward serve` on loopback."""
    data = tmp_path / "var"
    # Warnings only: nobody reads the server's pipes, and ten thousand access-log lines
    # would fill them and stall the server.
    env = fleetward_env(data, free_port, {"FLEETWARD_LOG_LEVEL": "WARNING", **PROBED_QUOTAS})
    demo = run_cli("demo", "--no-serve", env=env, timeout=300)
    assert demo.returncode == 0, demo.stderr[-2000:]
    # The server's own address: the seed's tokens name it as their issuer.
    settings = Settings(
        data_dir=data,
        host="127.0.0.1",
        port=free_port,
        password_hash_memory_kib=19_456,
        password_hash_time_cost=2,
    )
    with running("serve", env=env, port=free_port, ready_path="/readyz") as process:
        yield f"http://127.0.0.1:{free_port}", settings
        process.terminate()
        process.communicate(timeout=15)  # closes the pipes


async def test_the_real_platform_passes_every_case(
    live: tuple[str, Settings], tmp_path: Path
) -> None:
    target, settings = live
    manifest = await _seed(settings, tmp_path / "probe-world.json")
    assert (tmp_path / "probe-world.json").stat().st_mode & 0o777 == 0o600
    spec = load_demo()
    async with httpx.AsyncClient() as http:
        openapi: dict[str, Any] = (await http.get(f"{target}/openapi.json")).json()
    tokens = await obtain_tokens(
        target,
        [login_of(actor, manifest) for actor in manifest.actors],
        expired=expired_of(manifest),
        stale=stale_of(manifest),
        password_only=password_only_of(manifest),
    )
    assert set(tokens.actors) == {actor.name for actor in manifest.actors}
    cases = generate(spec, manifest, openapi)
    families = Counter(case.family for case in cases)
    assert set(families) == set(Family)
    assert len(cases) >= 5000
    started = time.perf_counter()
    results = await run(cases, target=target, tokens=tokens, concurrency=16)
    elapsed = time.perf_counter() - started
    print(f"probe: {len(results)} cases in {elapsed:.1f} s = {len(results) / elapsed:.0f} cases/s")
    assert len(results) == len(cases)
    assert all(r.verdict is Verdict.PASS for r in results), _summary(results)
    assert {r.policy_version for r in results} == {manifest.policy_version}


def _object_check_removed_on_mobile_read(patch: pytest.MonkeyPatch) -> None:
    """The mutant: GET /mobile/v1/vehicles/{id} no longer asks the PDP about the vehicle."""
    real = vehicle_routes.authorize

    async def authorize(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        parts = request.url.path.strip("/").split("/")
        if parts[:3] == ["mobile", "v1", "vehicles"] and len(parts) == 4:
            return None  # the route ignores the decision it awaited: no check at all
        return await real(request, *args, **kwargs)

    patch.setattr(vehicle_routes, "authorize", authorize)


async def test_a_missing_object_check_is_flagged(
    platform: Platform, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = await seed_probe_world(platform, out=tmp_path / "probe-world.json")
    spec = load_demo()
    app = build_app(platform.settings, platform=platform)
    transport = httpx.ASGITransport(app=app)
    openapi = app.openapi()
    vehicles = [
        case
        for case in generate(spec, manifest, openapi, families=[Family.MATRIX])
        if case.route_id.startswith("mobile:vehicles:")
    ]
    tokens = await obtain_tokens(
        TESTSERVER,
        [login_of(actor, manifest) for actor in manifest.actors if "mobile" in actor.surfaces],
        expired=expired_of(manifest),
        stale=stale_of(manifest),
        password_only=password_only_of(manifest),
        transport=transport,
        clock=platform.clock,
    )
    mobile = [case for case in vehicles if case.request.actor in tokens.actors]
    # The real platform passes these cases in process too...
    honest = await run(mobile, target=TESTSERVER, tokens=tokens, transport=transport)
    assert all(r.verdict is Verdict.PASS for r in honest), _summary(honest)
    # ...and the mutant is caught on exactly the route it broke, with the data it leaked.
    _object_check_removed_on_mobile_read(monkeypatch)
    mutant = await run(mobile, target=TESTSERVER, tokens=tokens, transport=transport)
    failed = [r for r in mutant if r.verdict is not Verdict.PASS]
    assert failed, "the probe missed a route without its object check"
    assert {r.case.route_id for r in failed} == {"mobile:vehicles:read"}
    assert all(r.status == 200 for r in failed)
    assert any("canary" in r.reason or "refusal" in r.reason for r in failed)
