"""``fleetward probe``: prove the authorization matrix and the abuse cases against a running
deployment (issue #5).

* ``fleetward probe --target URL`` (the same as ``fleetward probe run --target URL``) probes a
  deployment over HTTP with the spec (default: the shipped demo spec) and the world manifest
  the seed wrote; it prints a progress bar and a summary and writes the JSON, JUnit and HTML
  reports asked for.
* ``fleetward probe seed --out FILE`` runs on the deployment host, with the platform's
  settings, and creates the probe world (the one place the probe touches the store).
* ``fleetward probe schema`` prints the spec format's JSON Schema.

Exit status: 0 every case had the expected outcome; 1 any case did not, could not be run, or
no case was run at all; 2 bad usage, a bad spec or an unusable world manifest.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, NoReturn

import httpx
import typer
from pydantic import ValidationError
from rich.console import Console

from fleetward.cli.runtime import load_or_exit
from fleetward.platform import Platform
from fleetward.probe import runner
from fleetward.probe.auth import (
    OTHER_SURFACE,
    TokenError,
    expired_of,
    login_of,
    obtain_tokens,
    password_only_of,
    stale_of,
)
from fleetward.probe.generate import generate
from fleetward.probe.manifest import Manifest, ManifestActor
from fleetward.probe.model import Case, Family, Report, Result, Verdict
from fleetward.probe.report import html, json_report, junit
from fleetward.probe.report.console import ConsoleProgress, print_summary
from fleetward.probe.report.redact import Scrubber
from fleetward.probe.seed import seed_probe_world
from fleetward.probe.spec.load import SpecError, json_schema_text, load, load_demo
from fleetward.probe.spec.models import Spec

EXIT_PASS: Final = 0
EXIT_FAIL: Final = 1
EXIT_USAGE: Final = 2
DEFAULT_CONCURRENCY: Final = 16

app = typer.Typer(
    help="Prove the authorization matrix and the abuse cases against a running deployment.",
    invoke_without_command=True,
)

# The options of a run, shared by `fleetward probe` and `fleetward probe run`.
Target = Annotated[
    str | None,
    typer.Option("--target", help="base URL of the deployment, e.g. http://127.0.0.1:8000"),
]
SpecFile = Annotated[
    Path | None,
    typer.Option("--spec", help="the probe spec (TOML); default: the shipped demo spec"),
]
WorldFile = Annotated[
    Path | None,
    typer.Option("--world", help="the world manifest from `probe seed`; default: the spec's"),
]
OutDir = Annotated[
    Path | None,
    typer.Option("--out", help="write probe.json, probe-junit.xml and probe.html here"),
]
Concurrency = Annotated[
    int, typer.Option("--concurrency", min=1, max=256, help="requests in flight")
]
Families = Annotated[
    list[Family] | None,
    typer.Option("--family", help="run only this family (repeat for several); default: all"),
]
JunitFile = Annotated[Path | None, typer.Option("--junit", help="JUnit XML report file")]
HtmlFile = Annotated[Path | None, typer.Option("--html", help="self-contained HTML report file")]
JsonFile = Annotated[
    Path | None, typer.Option("--json", help="JSON report file (schema fleetward-probe/1)")
]


@dataclass(frozen=True, slots=True)
class RunOptions:
    target: str
    spec: Path | None
    world: Path | None
    concurrency: int
    families: frozenset[Family]
    json_path: Path | None
    junit_path: Path | None
    html_path: Path | None


def _exit(message: str, code: int) -> NoReturn:
    typer.echo(f"fleetward probe: {message}", err=True)
    sys.exit(code)


@app.callback()
def probe(
    ctx: typer.Context,
    target: Target = None,
    spec: SpecFile = None,
    world: WorldFile = None,
    out: OutDir = None,
    concurrency: Concurrency = DEFAULT_CONCURRENCY,
    family: Families = None,
    junit_file: JunitFile = None,
    html_file: HtmlFile = None,
    json_file: JsonFile = None,
) -> None:
    """Without a subcommand: the same as `probe run` (`fleetward probe --target URL`)."""
    given = [target, spec, world, out, family, junit_file, html_file, json_file]
    if ctx.invoked_subcommand is not None:
        if any(value is not None for value in given) or concurrency != DEFAULT_CONCURRENCY:
            raise typer.BadParameter(
                "run options go after `run` or without a subcommand, not before "
                f"`{ctx.invoked_subcommand}`"
            )
        return
    if target is None:
        typer.echo(ctx.get_help(), err=True)
        _exit("--target URL is required", EXIT_USAGE)
    _run(_options(target, spec, world, out, concurrency, family, junit_file, html_file, json_file))


@app.command("run")
def run_command(
    target: Annotated[
        str, typer.Option("--target", help="base URL of the deployment, e.g. http://127.0.0.1:8000")
    ],
    spec: SpecFile = None,
    world: WorldFile = None,
    out: OutDir = None,
    concurrency: Concurrency = DEFAULT_CONCURRENCY,
    family: Families = None,
    junit_file: JunitFile = None,
    html_file: HtmlFile = None,
    json_file: JsonFile = None,
) -> None:
    """Probe a deployment: every case of the spec, judged by the spec's oracle."""
    _run(_options(target, spec, world, out, concurrency, family, junit_file, html_file, json_file))


@app.command("seed")
def seed_command(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="where to write the world manifest (mode 0600)"),
    ] = None,
    spec: Annotated[
        Path | None,
        typer.Option("--spec", help="the spec the world is for (its name and default path)"),
    ] = None,
) -> None:
    """On the deployment host: create the probe world and write its manifest (mode 0600)."""
    the_spec = _load_spec(spec)
    path = out or Path(the_spec.probe.world)
    settings = load_or_exit()

    async def seed() -> Manifest:
        platform = Platform.build(settings)
        try:
            return await seed_probe_world(platform, out=path, spec_name=the_spec.probe.name)
        finally:
            await platform.close()

    manifest = asyncio.run(seed())
    typer.echo(
        f"probe world {manifest.run_id}: {len(manifest.actors)} actors, "
        f"{len(manifest.objects)} objects; manifest written to {path} (mode 0600)"
    )


@app.command("schema")
def schema_command(
    report: Annotated[
        bool,
        typer.Option("--report", help="print the JSON report's schema instead of the spec's"),
    ] = False,
) -> None:
    """Print the JSON Schema of the spec format (or, with --report, of the JSON report)."""
    typer.echo(json_report.schema_text() if report else json_schema_text(), nl=False)


# -- a run ------------------------------------------------------------------------------------


def _options(
    target: str,
    spec: Path | None,
    world: Path | None,
    out: Path | None,
    concurrency: int,
    family: list[Family] | None,
    junit_file: Path | None,
    html_file: Path | None,
    json_file: Path | None,
) -> RunOptions:
    return RunOptions(
        target=_checked_target(target),
        spec=spec,
        world=world,
        concurrency=concurrency,
        families=frozenset(family or Family),
        json_path=json_file or (out / "probe.json" if out else None),
        junit_path=junit_file or (out / "probe-junit.xml" if out else None),
        html_path=html_file or (out / "probe.html" if out else None),
    )


def _checked_target(target: str) -> str:
    try:
        url = httpx.URL(target)
    except httpx.InvalidURL:
        _exit(f"--target {target!r} is not a URL", EXIT_USAGE)
    if url.scheme not in {"http", "https"} or not url.host or url.query or url.fragment:
        _exit(
            f"--target {target!r} must be an http(s) base URL such as http://127.0.0.1:8000",
            EXIT_USAGE,
        )
    return str(url).rstrip("/")


def _load_spec(path: Path | None) -> Spec:
    try:
        return load_demo() if path is None else load(path)
    except SpecError as error:
        typer.echo(f"fleetward probe: invalid spec {error.source}:", err=True)
        for problem in error.problems:
            typer.echo(f"  {problem}", err=True)
        sys.exit(EXIT_USAGE)


def _load_manifest(path: Path, spec: Spec) -> Manifest:
    try:
        manifest = Manifest.read(path)
    except FileNotFoundError:
        _exit(
            f"no world manifest at {path}: run `fleetward probe seed --out {path}` on the "
            "deployment host first, or pass --world",
            EXIT_USAGE,
        )
    except (OSError, ValidationError) as error:
        _exit(f"the world manifest {path} cannot be used: {type(error).__name__}", EXIT_USAGE)
    if manifest.spec_name != spec.probe.name:
        _exit(
            f"the world manifest {path} was seeded for spec {manifest.spec_name!r}, "
            f"not {spec.probe.name!r}: seed it again with this spec",
            EXIT_USAGE,
        )
    return manifest


def _secrets(manifest: Manifest) -> list[str]:
    """Every secret the manifest holds: none may appear in a report."""
    found: list[str] = list(manifest.expired_tokens.values())
    for actor in manifest.actors:
        found += [s for s in (actor.password, actor.totp_secret) if s]
        if actor.client is not None:
            found += [v for v in actor.client.private_jwk.values() if isinstance(v, str)]
    return found


def _policy_version(results: list[Result], manifest: Manifest) -> str | None:
    seen = Counter(r.policy_version for r in results if r.policy_version)
    return seen.most_common(1)[0][0] if seen else manifest.policy_version


async def _fetch_openapi(target: str) -> dict[str, Any]:
    """The deployment's OpenAPI document: the replay and inventory families walk it."""
    async with httpx.AsyncClient(timeout=30.0, follow_redirects=False) as http:
        try:
            response = await http.get(f"{target}/openapi.json")
        except httpx.HTTPError as error:
            _exit(f"{target} cannot be reached: {type(error).__name__}", EXIT_FAIL)
    if response.status_code != 200:
        _exit(f"{target}/openapi.json answered {response.status_code}", EXIT_FAIL)
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        _exit(f"{target}/openapi.json is not a JSON object", EXIT_FAIL)
    return document


def _cases(options: RunOptions, spec: Spec, manifest: Manifest) -> list[Case]:
    openapi = asyncio.run(_fetch_openapi(options.target))
    families = [f for f in Family if f in options.families]  # a stable order
    try:
        return generate(spec, manifest, openapi, families)
    except KeyError as error:
        _exit(f"the spec and the world manifest disagree: nothing for {error}", EXIT_USAGE)


def _actors_needed(cases: list[Case], manifest: Manifest) -> list[ManifestActor]:
    """The actors the cases send as: only they sign in (each sign-in is a real login, and the
    platform rightly throttles many of them). A credential for another surface without an
    actor is any actor at home on that surface (``TokenBook.resolve``)."""
    named: set[str] = set()
    surfaces: set[str] = set()
    for case in cases:
        for request in (case.request, case.read_back, case.hidden_reference):
            if request is None:
                continue
            if request.actor is not None:
                named.add(request.actor)
            elif request.credential and request.credential.startswith(OTHER_SURFACE):
                surfaces.add(request.credential.removeprefix(OTHER_SURFACE))
    chosen = [actor for actor in manifest.actors if actor.name in named]
    for surface in sorted(surfaces):
        at_home = [a for a in manifest.actors if a.surfaces and a.surfaces[0] == surface]
        if at_home and not any(a in chosen for a in at_home):
            chosen.append(at_home[0])
    return chosen


async def _execute(
    options: RunOptions, manifest: Manifest, cases: list[Case], console: Console
) -> list[Result]:
    logins = [login_of(actor, manifest) for actor in _actors_needed(cases, manifest)]
    tokens = await obtain_tokens(
        options.target,
        logins,
        expired=expired_of(manifest),
        stale=stale_of(manifest),
        password_only=password_only_of(manifest),
    )
    with ConsoleProgress(console, len(cases)) as progress:
        return await runner.run(
            cases,
            target=options.target,
            tokens=tokens,
            concurrency=options.concurrency,
            progress=progress.on_result,
        )


def _run(options: RunOptions) -> NoReturn:
    spec = _load_spec(options.spec)
    manifest = _load_manifest(options.world or Path(spec.probe.world), spec)
    scrubber = Scrubber(_secrets(manifest))
    report = Report(
        target=options.target,
        spec_name=spec.probe.name,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    cases = _cases(options, spec, manifest)
    started = time.perf_counter()
    try:
        report.results = asyncio.run(_execute(options, manifest, cases, Console(stderr=True)))
    except TokenError as error:
        _exit(f"could not sign the probe's actors in: {scrubber.text(str(error))}", EXIT_FAIL)
    seconds = time.perf_counter() - started
    typer.echo(
        f"{len(report.results)} cases in {seconds:.1f} s "
        f"({len(report.results) / max(seconds, 1e-9):.0f} cases/s, sign-in included)",
        err=True,
    )
    report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
    report.policy_version = _policy_version(report.results, manifest)
    _write_reports(options, report, scrubber)
    print_summary(Console(), report, scrubber)
    passed = bool(report.results) and all(r.verdict is Verdict.PASS for r in report.results)
    sys.exit(EXIT_PASS if passed else EXIT_FAIL)


def _write_reports(options: RunOptions, report: Report, scrubber: Scrubber) -> None:
    for path, write in (
        (options.json_path, json_report.write),
        (options.junit_path, junit.write),
        (options.html_path, html.write),
    ):
        if path is None:
            continue
        try:
            write(path, report, scrubber)
        except OSError as error:
            _exit(f"cannot write {path}: {type(error).__name__}", EXIT_FAIL)
        typer.echo(f"report written: {path}", err=True)
