"""``fleetward probe``: the command line's forms, its usage errors (exit 2), its exit status
from the results (0 / 1), and the reports it writes. The run itself (tokens, cases, HTTP) is
replaced at one seam, ``_execute``; the live probe is tested end to end elsewhere."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from fleetward.cli import probe as probe_cli
from fleetward.cli.main import app
from fleetward.probe.manifest import LoginClient, Manifest, ManifestActor
from fleetward.probe.model import Case, Expect, Family, Request, Result, Verdict
from fleetward.probe.spec.load import json_schema, load_demo
from support.server import fleetward_env, run_cli, running

TARGET = "http://127.0.0.1:8000"
PASSWORD = "probe-password-4f9e1a"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DP"
REAL_FETCH = probe_cli._fetch_openapi


def _xml(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314 - our own report, not untrusted input


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FLEETWARD_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _manifest(spec_name: str | None = None) -> Manifest:
    return Manifest(
        run_id="run-1",
        created_at="2026-01-05T10:00:00Z",
        spec_name=spec_name or load_demo().probe.name,
        policy_version="pv-manifest",
        login_client=LoginClient(
            client_id="probe-cli", redirect_uri="http://127.0.0.1/cb", surfaces=["mobile"]
        ),
        actors=[
            ManifestActor(
                name="owner:active:home",
                role="owner",
                state="active",
                side="home",
                kind="user",
                tenant_id="ten_1",
                tenant_slug="home",
                surfaces=["mobile"],
                username="probe-owner",
                password=PASSWORD,
                totp_secret=TOTP_SECRET,
            )
        ],
        objects=[],
    )


@pytest.fixture(autouse=True)
def no_openapi_fetch(monkeypatch: pytest.MonkeyPatch) -> None:
    async def openapi(target: str) -> dict[str, object]:
        return {}

    monkeypatch.setattr(probe_cli, "_fetch_openapi", openapi)


@pytest.fixture
def world(env: Path) -> Path:
    path = env / "world.json"
    _manifest().write(path)
    return path


def _result(family: Family, verdict: Verdict, n: int) -> Result:
    case = Case(
        id=f"{family.value}/mobile:vehicles:status/{n}",
        family=family,
        route_id="mobile:vehicles:status",
        request=Request("GET", f"/mobile/v1/vehicles/v{n}/status", "owner:active:home"),
        expect=Expect.DENY_HIDDEN,
        why="another tenant's owner reads the status",
    )
    failed = verdict is not Verdict.PASS
    return Result(
        case,
        verdict,
        200 if failed else 404,
        f"echoed password={PASSWORD}" if failed else "",
        2.0,
        policy_version="pv-run",
        response_excerpt=f"totp {TOTP_SECRET}" if failed else "",
    )


Execute = Callable[..., object]


def _fake_execute(results: list[Result], seen: list[list[Case]]) -> Execute:
    async def execute(
        options: object, manifest: object, cases: list[Case], console: object
    ) -> list[Result]:
        seen.append(cases)
        return results

    return execute


def _invoke(args: list[str]) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["probe", *args])
    return result.exit_code, result.stdout, result.stderr


# -- forms and usage --------------------------------------------------------------------------


def test_schema_prints_the_spec_json_schema(env: Path) -> None:
    code, out, _ = _invoke(["schema"])
    assert code == 0
    assert json.loads(out) == json_schema()


def test_schema_report_prints_the_report_schema(env: Path) -> None:
    code, out, _ = _invoke(["schema", "--report"])
    assert code == 0
    assert json.loads(out)["properties"]["schema"] == {"const": "fleetward-probe/1"}


@pytest.mark.parametrize(
    ("args", "message", "why"),
    [
        ([], "--target URL is required", "no target: nothing to probe"),
        (["run"], "Missing option '--target'", "run without a target"),
        (["--target", "ftp://host"], "http(s) base URL", "a scheme the probe cannot speak"),
        (["--target", "http://h/?x=1"], "http(s) base URL", "a query in the base URL"),
        (["--target", TARGET, "--family", "fuzz"], "fuzz", "an unknown family"),
        (["--target", TARGET, "--concurrency", "0"], "concurrency", "no request in flight"),
        (["--target", TARGET, "schema"], "not before `schema`", "run options on a subcommand"),
        (["--target", TARGET, "--world", "missing.json"], "probe seed", "no world manifest"),
    ],
)
def test_usage_errors_exit_2(env: Path, args: list[str], message: str, why: str) -> None:
    code, out, err = _invoke(args)
    assert code == 2, why
    # Click's usage errors come in a Rich box: compare the words, not the layout.
    words = " ".join(re.sub("[│╭╮╰╯─]", " ", out + err).split())
    assert message in words, why


def test_bad_spec_exits_2_and_says_where(env: Path) -> None:
    spec = env / "bad.toml"
    spec.write_text('[probe]\nname = "x"\nsurprise = 1\n', encoding="utf-8")
    code, _, err = _invoke(["--target", TARGET, "--spec", str(spec)])
    assert code == 2
    assert "probe.surprise: unknown field" in err


def test_unreadable_or_foreign_world_exits_2(env: Path) -> None:
    garbage = env / "garbage.json"
    garbage.write_text("{}", encoding="utf-8")
    code, _, err = _invoke(["--target", TARGET, "--world", str(garbage)])
    assert code == 2 and "cannot be used" in err
    foreign = env / "foreign.json"
    _manifest("another-spec").write(foreign)
    code, _, err = _invoke(["--target", TARGET, "--world", str(foreign)])
    assert code == 2 and "seeded for spec 'another-spec'" in err


# -- runs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", [[], ["run"]], ids=["probe --target", "probe run --target"])
def test_all_pass_exits_0(world: Path, monkeypatch: pytest.MonkeyPatch, form: list[str]) -> None:
    seen: list[list[Case]] = []
    results = [_result(f, Verdict.PASS, i) for i, f in enumerate(Family)]
    monkeypatch.setattr(probe_cli, "_execute", _fake_execute(results, seen))
    code, out, _ = _invoke([*form, "--target", TARGET, "--world", str(world)])
    assert code == 0, out
    assert "every case had the expected outcome" in out
    assert seen and seen[0], "the generated cases reach the run"


@pytest.mark.parametrize("verdict", [Verdict.FAIL, Verdict.ERROR])
def test_any_failure_or_error_exits_1_and_writes_every_report(
    world: Path, env: Path, monkeypatch: pytest.MonkeyPatch, verdict: Verdict
) -> None:
    results = [_result(f, Verdict.PASS, i) for i, f in enumerate(Family)]
    results.append(_result(Family.OBJECT_ID, verdict, 99))
    monkeypatch.setattr(probe_cli, "_execute", _fake_execute(results, []))
    out_dir = env / "reports"
    junit_path = env / "ci" / "junit.xml"
    code, out, _ = _invoke(
        [
            "--target",
            TARGET,
            "--world",
            str(world),
            "--out",
            str(out_dir),
            "--junit",
            str(junit_path),
        ]
    )
    assert code == 1, out
    root = _xml(junit_path.read_text(encoding="utf-8"))
    assert int(root.get("tests", "")) == len(results)
    assert not (out_dir / "probe-junit.xml").exists(), "--junit overrides --out"
    document = json.loads((out_dir / "probe.json").read_text(encoding="utf-8"))
    assert document["schema"] == "fleetward-probe/1"
    assert document["policy_version"] == "pv-run"
    assert {r["policy_version"] for r in document["results"]} == {"pv-run"}
    assert "<article" in (out_dir / "probe.html").read_text(encoding="utf-8")
    # The manifest's secrets never reach a report or the console.
    written = [
        p.read_text(encoding="utf-8")
        for p in (junit_path, out_dir / "probe.json", out_dir / "probe.html")
    ]
    for text in [*written, out]:
        assert PASSWORD not in text and TOTP_SECRET not in text


def test_no_case_run_exits_1(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe_cli, "_execute", _fake_execute([], []))
    code, out, _ = _invoke(["--target", TARGET, "--world", str(world)])
    assert code == 1
    assert "nothing was proven" in out


def test_family_filter_narrows_the_cases(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[Case]] = []
    monkeypatch.setattr(
        probe_cli, "_execute", _fake_execute([_result(Family.REPLAY, Verdict.PASS, 1)], seen)
    )
    code, _, _ = _invoke(
        ["--target", TARGET, "--world", str(world), "--family", "replay", "--family", "inventory"]
    )
    assert code == 0
    assert seen[0] and {c.family for c in seen[0]} <= {Family.REPLAY, Family.INVENTORY}


def test_unreachable_target_exits_1(world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The real OpenAPI fetch, against a closed loopback port.
    monkeypatch.setattr(probe_cli, "_fetch_openapi", REAL_FETCH)
    code, _, err = _invoke(["--target", "http://127.0.0.1:1", "--world", str(world)])
    assert code == 1
    assert "cannot be reached" in err


# -- live -------------------------------------------------------------------------------------


def test_a_new_user_seeds_and_probes_a_live_deployment(tmp_path: Path, free_port: int) -> None:
    """The documented steps as commands: migrate, `probe seed` on the host, serve, then
    `fleetward probe --target URL` (narrowed to two families to keep the test short; the
    whole matrix runs in tests/integration/test_probe_run.py)."""
    # WARNING: the server's output goes to a pipe nobody reads while the probe runs; at INFO
    # (one line per request) it would fill the pipe and stall the server.
    env = fleetward_env(tmp_path / "var", free_port, {"FLEETWARD_LOG_LEVEL": "WARNING"})
    world = tmp_path / "probe-world.json"
    reports = tmp_path / "reports"
    migrated = run_cli("migrate", env=env)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    seeded = run_cli("probe", "seed", "--out", str(world), env=env, timeout=300)
    assert seeded.returncode == 0, seeded.stderr[-2000:]
    assert world.stat().st_mode & 0o777 == 0o600
    target = f"http://127.0.0.1:{free_port}"
    with running("serve", env=env, port=free_port, ready_path="/readyz") as server:
        policy_version = httpx.get(f"{target}/readyz").json()["policy_version"]
        probed = run_cli(
            "probe", "--target", target, "--world", str(world), "--out", str(reports),
            "--family", "replay", "--family", "inventory",
            env=env, timeout=300,
        )  # fmt: skip
        server.terminate()
        server.communicate(timeout=15)  # and its pipes are closed
    assert probed.returncode == 0, probed.stdout[-4000:] + probed.stderr[-2000:]
    root = _xml((reports / "probe-junit.xml").read_text(encoding="utf-8"))
    assert {s.get("name") for s in root.findall("testsuite")} == {
        "probe.replay",
        "probe.inventory",
    }
    assert int(root.get("tests", "")) > 0 and root.get("failures") == "0"
    versions = {p.get("value") for p in root.iter("property") if p.get("name") == "policy_version"}
    assert versions == {policy_version}
    document = json.loads((reports / "probe.json").read_text(encoding="utf-8"))
    assert document["summary"]["total"] == int(root.get("tests", ""))
    manifest = Manifest.read(world)
    written = "".join(p.read_text(encoding="utf-8") for p in reports.iterdir())
    for actor in manifest.actors:
        for secret in (actor.password, actor.totp_secret):
            assert secret is None or secret not in written
