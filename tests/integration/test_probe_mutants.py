"""Proving the prober (issue #5): every deliberately broken variant of the platform is
flagged by the probe, on the route it broke, and the real platform passes the same cases.

The mutants (tests/support/mutants.py) are applied in test code only. Each is probed with the
families and routes relevant to it, in process (httpx.ASGITransport), against one probe world
seeded through the documented hook, with tokens from the real OAuth flows. Writes the oracle
allows are left out of the selection: they consume the world's spare objects, and every
mutant is probed against the same world.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import httpx
import pytest

from fleetward.app import build_app
from fleetward.platform import Platform
from fleetward.probe.auth import (
    TokenBook,
    expired_of,
    login_of,
    obtain_tokens,
    password_only_of,
    stale_of,
)
from fleetward.probe.generate import generate
from fleetward.probe.model import Case, Expect, Result, Verdict
from fleetward.probe.runner import run
from fleetward.probe.seed import seed_probe_world
from fleetward.probe.spec.load import load_demo
from fleetward.settings import Settings
from support.mutants import MUTANTS, Mutant
from support.server import PROBED_QUOTAS

TESTSERVER = "http://testserver"
# In process, the probe and the app share one event loop and one core: at the runner's
# default width, relation loads queue behind each other past the PDP's time budget and the
# platform (rightly) fails closed. Four at a time keeps every decision a real one.
CONCURRENCY = 4


def _wrong(results: Iterable[Result]) -> list[Result]:
    return [r for r in results if r.verdict is not Verdict.PASS]


def _summary(results: list[Result]) -> str:
    return "\n".join(
        f"  {r.verdict.value} {r.case.id} {r.case.request.method} {r.case.request.path} "
        f"-> {r.status}: {r.reason}"
        for r in _wrong(results)[:20]
    )


def _selection(cases: list[Case], mutant: Mutant) -> list[Case]:
    return [
        case
        for case in cases
        if case.family in mutant.families
        and case.route_id in mutant.routes
        and not (case.request.method != "GET" and case.expect is Expect.ALLOW)
    ]


class Probe:
    def __init__(self, transport: httpx.ASGITransport, tokens: TokenBook, cases: list[Case]):
        self.transport = transport
        self.tokens = tokens
        self.cases = cases

    async def run(self, cases: list[Case]) -> list[Result]:
        return await run(
            cases,
            target=TESTSERVER,
            tokens=self.tokens,
            transport=self.transport,
            concurrency=CONCURRENCY,
        )


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The probed deployment's raised limits (support.server.PROBED_QUOTAS)."""
    for name, value in PROBED_QUOTAS.items():
        monkeypatch.setenv(name, value)
    return Settings(
        data_dir=tmp_path / "var", password_hash_memory_kib=19_456, password_hash_time_cost=2
    )


@pytest.fixture
async def probe(platform: Platform, tmp_path: Path) -> Probe:
    manifest = await seed_probe_world(platform, out=tmp_path / "probe-world.json")
    app = build_app(platform.settings, platform=platform)
    transport = httpx.ASGITransport(app=app)
    tokens = await obtain_tokens(
        TESTSERVER,
        [login_of(actor, manifest) for actor in manifest.actors],
        expired=expired_of(manifest),
        stale=stale_of(manifest),
        password_only=password_only_of(manifest),
        transport=transport,
        clock=platform.clock,
    )
    return Probe(transport, tokens, generate(load_demo(), manifest, app.openapi()))


async def test_every_mutant_is_flagged_and_the_real_platform_is_not(
    probe: Probe, monkeypatch: pytest.MonkeyPatch
) -> None:
    missed: list[str] = []
    for mutant in MUTANTS:
        cases = _selection(probe.cases, mutant)
        assert cases, f"{mutant.name}: no case in the selection"
        honest = await probe.run(cases)
        assert not _wrong(honest), f"{mutant.name}: the real platform fails\n{_summary(honest)}"
        with monkeypatch.context() as patch:
            mutant.apply(patch)
            broken = await probe.run(cases)
        wrong = _wrong(broken)
        failed = {r.case.route_id for r in wrong}
        print(f"{mutant.name}: {len(cases)} cases, flagged {sorted(failed)}")
        # Caught: on the route it broke, never elsewhere, and at least once by what the
        # route let through (a mutant that only crashed the platform would prove nothing).
        through = {r.case.route_id for r in wrong if r.status is not None and r.status < 500}
        if not through & mutant.flagged or not failed <= mutant.routes:
            missed.append(f"{mutant.name} ({mutant.breaks}): flagged {sorted(failed)}")
        if mutant.exact is not None:
            # Exactly the cases the broken check guards: no more, no fewer.
            expected = {case.id for case in cases if mutant.exact(case.id)}
            got = {r.case.id for r in wrong}
            if not expected or got != expected:
                missed.append(
                    f"{mutant.name}: missed {sorted(expected - got)}, "
                    f"beyond it {sorted(got - expected)}"
                )
    assert not missed, "\n".join(missed)
