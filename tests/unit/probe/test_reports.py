"""The probe's reports, from hand-built results: JUnit XML parsed back, JSON checked against
its published schema, HTML self-contained and escaped, the console table, and no secret in any
format."""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from fleetward.probe.model import Case, Expect, Family, Report, Request, Result, Verdict
from fleetward.probe.report import console, html, json_report, junit
from fleetward.probe.report.redact import Scrubber
from support.secrets_samples import EC_PRIVATE_KEY, ES256_JWT, PEM_BODY

POLICY = "policy-2026.01-abc123"
PASSWORD = "correct-horse-battery-9"
TOTP_SECRET = "JBSWY3DPEHPK3PXPJBSWY3DP"
OTP = "914273"
BEARER = "Bearer opaque-7f3a9c1d2e4b5a6f"

# Every secret shape a report could meet; none of these strings may reach any output.
SECRETS = (ES256_JWT, PEM_BODY, PASSWORD, TOTP_SECRET, OTP, "opaque-7f3a9c1d2e4b5a6f")


def _xml(text: str) -> ET.Element:
    return ET.fromstring(text)  # noqa: S314 - our own report, not untrusted input


def _case(family: Family, n: int, **overrides: Any) -> Case:
    fields: dict[str, Any] = {
        "id": f"{family.value}/mobile:vehicles:status/bob/active/{n}",
        "family": family,
        "route_id": "mobile:vehicles:status",
        "request": Request("GET", f"/mobile/v1/vehicles/veh_{n}/status", "bob"),
        "expect": Expect.DENY_HIDDEN,
        "why": "a driver outside the window reads the status (BOLA)",
    }
    fields.update(overrides)
    return Case(**fields)


def _results() -> list[Result]:
    """For every Family one passing and one failing case; plus an error and secret-laden ones."""
    results: list[Result] = []
    for n, family in enumerate(Family):
        results.append(Result(_case(family, n), Verdict.PASS, 404, "", 3.5, policy_version=POLICY))
        results.append(
            Result(
                _case(family, n + 100),
                Verdict.FAIL,
                200,
                "expected 404 with the unknown-id body, got 200 with the canary",
                4.25,
                policy_version=POLICY,
                response_excerpt='{"label": "canary-x1"}',
            )
        )
    results.append(
        Result(
            _case(Family.REPLAY, 900, request=Request("GET", "/x", None, credential="expired")),
            Verdict.ERROR,
            None,
            "transport error: connection refused",
            0.0,
            policy_version=None,  # the report's version stands in
        )
    )
    leaky = _case(
        Family.PROPERTY,
        901,
        route_id="mobile:accounts:update",
        request=Request(
            "PATCH",
            f"/mobile/v1/me?access_token={ES256_JWT}&otp={OTP}",
            "alice",
            headers=(("Authorization", BEARER), ("X-HTTP-Method-Override", "DELETE")),
            body={"password": PASSWORD, "otp": OTP, "role": "admin", "note": ES256_JWT},
        ),
        expect=Expect.DENY,
        why=f"mass assignment of role; Authorization: {BEARER}",
        read_back=Request("GET", f"/mobile/v1/me?token={ES256_JWT}", "alice"),
    )
    results.append(
        Result(
            leaky,
            Verdict.FAIL,
            200,
            f"role changed; the response echoed {BEARER} and password={PASSWORD}",
            7.0,
            policy_version=POLICY,
            response_excerpt=(
                f'{{"access_token": "{ES256_JWT}", "key": "{EC_PRIVATE_KEY}", '
                f'"totp_secret": "{TOTP_SECRET}", "hint": "{PASSWORD}"}}'
            ),
        )
    )
    hostile = _case(
        Family.INVENTORY,
        902,
        route_id="shadow:<script>alert(1)</script>",
        request=Request("GET", '/"><script>alert(1)</script>?a=1&b=<img src=x>', None),
        expect=Expect.UNAUTHENTICATED,
        why="a route served but absent from OpenAPI",
    )
    results.append(
        Result(
            hostile,
            Verdict.FAIL,
            200,
            "<b>served</b> & not in the catalog\x00\x1b",
            1.0,
            policy_version=POLICY,
            response_excerpt="<html><script src='https://evil.example/x.js'></script>",
        )
    )
    return results


def _report(results: list[Result] | None = None) -> Report:
    return Report(
        target="http://127.0.0.1:8000",
        spec_name="demo",
        started_at="2026-01-05T10:00:00Z",
        finished_at="2026-01-05T10:00:42Z",
        policy_version=POLICY,
        results=_results() if results is None else results,
    )


SCRUBBER = Scrubber([PASSWORD, TOTP_SECRET])


def _console_text(report: Report) -> str:
    out = io.StringIO()
    console.print_summary(Console(file=out, width=200, color_system=None), report, SCRUBBER)
    return out.getvalue()


RENDERERS: dict[str, Callable[[Report], str]] = {
    "json": lambda r: json_report.render(r, SCRUBBER),
    "junit": lambda r: junit.render(r, SCRUBBER),
    "html": lambda r: html.render(r, SCRUBBER),
    "console": _console_text,
}


# --- JUnit -----------------------------------------------------------------------------------


def test_junit_has_one_suite_per_family_and_one_testcase_per_case() -> None:
    report = _report()
    root = _xml(junit.render(report, SCRUBBER))
    assert root.tag == "testsuites"
    suites = {s.get("name"): s for s in root.findall("testsuite")}
    assert set(suites) == {f"probe.{f.value}" for f in Family}
    assert sum(len(s.findall("testcase")) for s in suites.values()) == len(report.results)
    assert int(root.get("tests", "")) == len(report.results)
    assert int(root.get("failures", "")) == sum(r.verdict is Verdict.FAIL for r in report.results)
    assert int(root.get("errors", "")) == 1
    assert root.get("time") == "42.000"  # the run's wall time: cases run concurrently
    for suite in suites.values():
        cases = suite.findall("testcase")
        assert int(suite.get("tests", "")) == len(cases)
        assert int(suite.get("failures", "")) == len(suite.findall("testcase/failure"))
        assert int(suite.get("errors", "")) == len(suite.findall("testcase/error"))


def test_junit_failure_message_names_request_status_and_why() -> None:
    root = _xml(junit.render(_report(), SCRUBBER))
    by_name = {c.get("name"): c for c in root.iter("testcase")}
    failing = by_name["matrix/mobile:vehicles:status/bob/active/100"]
    failure = failing.find("failure")
    assert failure is not None
    assert failure.get("message") == (
        "GET /mobile/v1/vehicles/veh_100/status as bob -> 200, expected deny-hidden: "
        "expected 404 with the unknown-id body, got 200 with the canary"
    )
    assert "threat covered: a driver outside the window" in (failure.text or "")
    error = by_name["replay/mobile:vehicles:status/bob/active/900"].find("error")
    assert error is not None
    assert error.get("message", "").startswith("GET /x as anonymous (expired credential) -> no")
    passing = by_name["matrix/mobile:vehicles:status/bob/active/0"]
    assert passing.find("failure") is None and passing.find("error") is None


def test_junit_every_testcase_carries_route_id_and_policy_version() -> None:
    root = _xml(junit.render(_report(), SCRUBBER))
    for testcase in root.iter("testcase"):
        props = {p.get("name"): p.get("value") for p in testcase.iter("property")}
        assert props["route_id"]
        # The errored case saw no version itself: the run's version is its evidence.
        assert props["policy_version"] == POLICY
        assert props["route_id"] in (testcase.get("classname") or "")


def test_junit_drops_characters_xml_cannot_hold(tmp_path: Path) -> None:
    path = tmp_path / "reports" / "junit.xml"
    junit.write(path, _report(), SCRUBBER)
    text = path.read_text(encoding="utf-8")
    assert "\x00" not in text and "\x1b" not in text
    _xml(text)  # the file CI reads parses


def test_junit_of_an_empty_run_is_valid() -> None:
    root = _xml(junit.render(_report([]), SCRUBBER))
    assert root.get("tests") == "0" and not root.findall("testsuite")


# --- JSON ------------------------------------------------------------------------------------


def _validate(instance: Any, schema: dict[str, Any], where: str = "$") -> None:
    """The subset of JSON Schema 2020-12 the report's schema uses, checked strictly
    (jsonschema is not a dependency of the project)."""
    known = {
        "$schema", "$id", "title", "description", "type", "const", "enum", "required",
        "additionalProperties", "properties", "items", "minItems", "maxItems", "minimum",
        "maximum", "minLength", "oneOf",
    }  # fmt: skip
    assert set(schema) <= known, f"{where}: the validator does not know {set(schema) - known}"
    if "oneOf" in schema:
        matches = 0
        for option in schema["oneOf"]:
            try:
                _validate(instance, option, where)
            except AssertionError:
                continue
            matches += 1
        assert matches == 1, f"{where}: matches {matches} of oneOf"
    if "const" in schema:
        assert instance == schema["const"], where
    if "enum" in schema:
        assert instance in schema["enum"], where
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        checks = {
            "object": lambda v: isinstance(v, dict),
            "array": lambda v: isinstance(v, list),
            "string": lambda v: isinstance(v, str),
            "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
            "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
            "null": lambda v: v is None,
        }
        assert any(checks[t](instance) for t in types), f"{where}: not {types}"
    if isinstance(instance, dict):
        for key in schema.get("required", []):
            assert key in instance, f"{where}: {key} missing"
        properties = schema.get("properties", {})
        if schema.get("additionalProperties") is False:
            assert set(instance) <= set(properties), f"{where}: {set(instance) - set(properties)}"
        for key, value in instance.items():
            if key in properties:
                _validate(value, properties[key], f"{where}.{key}")
    if isinstance(instance, list):
        assert len(instance) >= schema.get("minItems", 0), where
        assert len(instance) <= schema.get("maxItems", len(instance)), where
        if "items" in schema:
            for i, item in enumerate(instance):
                _validate(item, schema["items"], f"{where}[{i}]")
    if isinstance(instance, str):
        assert len(instance) >= schema.get("minLength", 0), where
    if isinstance(instance, int | float) and not isinstance(instance, bool):
        assert instance >= schema.get("minimum", instance), where
        assert instance <= schema.get("maximum", instance), where


def test_json_report_matches_its_schema() -> None:
    document = json.loads(json_report.render(_report(), SCRUBBER))
    _validate(document, json_report.JSON_SCHEMA)
    assert document["schema"] == "fleetward-probe/1"
    assert document["summary"]["total"] == len(_results())
    assert set(document["summary"]["by_family"]) == {f.value for f in Family}
    for result in document["results"]:
        assert result["route_id"] and result["policy_version"] == POLICY


@pytest.mark.parametrize(
    ("mutate", "why"),
    [
        (lambda d: d.update(schema="fleetward-probe/2"), "another schema version"),
        (lambda d: d["results"][0].pop("route_id"), "a result without its route id"),
        (lambda d: d["results"][0].pop("policy_version"), "a result without a policy version"),
        (lambda d: d["results"][0].update(verdict="maybe"), "a verdict outside the enum"),
        (lambda d: d["results"][0].update(status=42), "a status that is not HTTP"),
        (lambda d: d["summary"]["by_family"].pop("matrix"), "a family missing in the summary"),
        (lambda d: d.update(extra=1), "an unknown top-level field"),
        (lambda d: d["results"][0]["request"].update(headers=[["a"]]), "a header without value"),
    ],
)
def test_json_schema_rejects_broken_documents(
    mutate: Callable[[dict[str, Any]], object], why: str
) -> None:
    document = json.loads(json_report.render(_report(), SCRUBBER))
    mutate(document)
    with pytest.raises(AssertionError):
        _validate(document, json_report.JSON_SCHEMA)


def test_json_summary_counts(tmp_path: Path) -> None:
    path = tmp_path / "out" / "probe.json"
    json_report.write(path, _report(), SCRUBBER)
    summary = json.loads(path.read_text(encoding="utf-8"))["summary"]
    assert (summary["passed"], summary["failed"], summary["errors"]) == (6, 8, 1)
    assert summary["by_family"]["replay"] == {"total": 3, "passed": 1, "failed": 1, "errors": 1}
    assert json.loads(json_report.schema_text()) == json_report.JSON_SCHEMA


# --- HTML ------------------------------------------------------------------------------------


class _Markup(HTMLParser):
    """Collects the tags and attributes a browser would see."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.styles: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            self.styles.append(data)


def test_html_is_self_contained_and_escaped() -> None:
    page = html.render(_report(), SCRUBBER)
    markup = _Markup()
    markup.feed(page)
    # The hostile route id, path, reason and excerpt are text, not markup.
    assert markup.tags <= {
        "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "dl", "dt",
        "dd", "table", "thead", "tbody", "tr", "th", "td", "code", "pre", "article",
    }  # fmt: skip
    assert markup.attributes <= {"lang", "charset", "http-equiv", "content", "name", "class"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x&gt;" in page
    styles = "".join(markup.styles)
    assert styles and "url(" not in styles and "@import" not in styles
    assert "default-src 'none'" in page.replace("&#x27;", "'")


def test_html_lists_each_failing_case_with_request_status_and_why() -> None:
    report = _report()
    page = html.render(report, SCRUBBER)
    assert page.count("<article") == len(report.failures)
    assert "GET /mobile/v1/vehicles/veh_103/status as bob" in page
    assert "expected 404 with the unknown-id body, got 200 with the canary" in page
    assert "<dt>response status</dt><dd>200</dd>" in page
    assert f"<dt>policy version</dt><dd>{POLICY}</dd>" in page
    assert "<dt>catalog route id</dt><dd>mobile:accounts:update</dd>" in page
    # A passing case is counted, not listed.
    assert "veh_0/status" not in page


def test_html_of_a_clean_run_says_so() -> None:
    passing = [r for r in _results() if r.verdict is Verdict.PASS]
    page = html.render(_report(passing))
    assert "Every case had the expected outcome." in page and "<article" not in page


# --- console ---------------------------------------------------------------------------------


def test_console_summary_table_and_failures() -> None:
    text = _console_text(_report())
    rows = {line.split()[1]: line.split()[2:] for line in text.splitlines() if "│" in line}
    for family in Family:
        expected = ["3", "1", "1", "1"] if family is Family.REPLAY else ["2", "1", "1", "0"]
        if family is Family.PROPERTY or family is Family.INVENTORY:
            expected = ["3", "1", "2", "0"]
        assert [cell for cell in rows[family.value] if cell != "│"] == expected, family
    assert "policy version " + POLICY in text
    assert "[mobile:accounts:update] PATCH /mobile/v1/me" in text


def test_console_progress_counts_results() -> None:
    out = io.StringIO()
    results = _results()
    with console.ConsoleProgress(
        Console(file=out, width=120, color_system=None, force_terminal=False), len(results)
    ) as progress:
        for result in results:
            progress.on_result(result)
    assert f"{len(results)}/{len(results)}" in out.getvalue()
    assert "9 failed" in out.getvalue()


def test_console_says_when_nothing_ran() -> None:
    assert "nothing was proven" in _console_text(_report([]))


# --- redaction, every format -----------------------------------------------------------------


@pytest.mark.parametrize("fmt", sorted(RENDERERS))
def test_no_secret_reaches_any_report(fmt: str) -> None:
    output = RENDERERS[fmt](_report())
    for secret in SECRETS:
        assert secret not in output, f"{fmt} leaks {secret[:12]}..."
    assert "eyJ" not in output  # no fragment of a JWT either
    assert "[redacted]" in output or fmt == "console"


def test_scrubber_keeps_what_is_not_secret() -> None:
    scrub = Scrubber([PASSWORD, "short"])
    assert scrub.text("status_code=404 kid=fleet-2026-01 short") == (
        "status_code=404 kid=fleet-2026-01 short"
    )
    assert scrub.headers([("X-HTTP-Method-Override", "DELETE"), ("Cookie", "s=1")]) == [
        ("X-HTTP-Method-Override", "DELETE"),
        ("Cookie", "[redacted]"),
    ]
    assert scrub.body({"role": "admin", "pin": "1234"}) == '{"pin": "[redacted]", "role": "admin"}'
