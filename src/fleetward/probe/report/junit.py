"""JUnit XML for CI: one ``<testsuite>`` per Family, one ``<testcase>`` per case.

The layout is the one CI tools read (Jenkins, GitLab, GitHub test reporters): a failing
case has ``<failure message="...">`` whose message holds the request line, the status and why
it is wrong; a case that could not be run has ``<error>``. Each testcase carries the catalog
route id (as ``classname`` and as a property) and the policy version (a property).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Final

from fleetward.probe.model import Family, Report, Result, Verdict
from fleetward.probe.report.redact import Scrubber
from fleetward.probe.report.summary import by_family, policy_version_of

# XML 1.0 cannot carry these code points at all, not even escaped: a response excerpt holding
# one would make the whole file unreadable to CI.
_XML_INVALID: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
NO_POLICY_VERSION: Final = "unknown"


def _clean(text: str) -> str:
    return _XML_INVALID.sub("\ufffd", text)


def failure_message(result: Result, scrub: Scrubber) -> str:
    """``GET /p as bob -> 200, expected deny-hidden: <reason>``: the request line, the status
    and why it is wrong, in one line."""
    status = "no response" if result.status is None else str(result.status)
    return scrub.text(
        f"{scrub.request_line(result.case.request)} -> {status}, "
        f"expected {result.case.expect.value}: {result.reason}"
    )


def _details(result: Result, report: Report, scrub: Scrubber) -> str:
    case = result.case
    lines = [
        f"case: {case.id}",
        f"route: {case.route_id}",
        f"policy version: {policy_version_of(result, report) or NO_POLICY_VERSION}",
        f"request: {scrub.request_line(case.request)}",
    ]
    lines += [f"header: {name}: {value}" for name, value in scrub.headers(case.request.headers)]
    body = scrub.body(case.request.body)
    if body is not None:
        lines.append(f"body: {body}")
    status = "no response" if result.status is None else str(result.status)
    lines += [
        f"expected: {case.expect.value}",
        f"status: {status}",
        f"why it is wrong: {result.reason}",
        f"threat covered: {case.why}",
    ]
    if result.response_excerpt:
        lines.append(f"response: {result.response_excerpt}")
    return scrub.text("\n".join(lines))


def _testcase(parent: ET.Element, result: Result, report: Report, scrub: Scrubber) -> None:
    case = result.case
    element = ET.SubElement(
        parent,
        "testcase",
        name=_clean(scrub.text(case.id)),
        classname=_clean(f"probe.{case.family.value}.{case.route_id}"),
        time=f"{result.elapsed_ms / 1000:.3f}",
    )
    properties = ET.SubElement(element, "properties")
    ET.SubElement(properties, "property", name="route_id", value=_clean(case.route_id))
    ET.SubElement(
        properties,
        "property",
        name="policy_version",
        value=_clean(policy_version_of(result, report) or NO_POLICY_VERSION),
    )
    ET.SubElement(properties, "property", name="expect", value=case.expect.value)
    if result.verdict is Verdict.PASS:
        return
    tag = "failure" if result.verdict is Verdict.FAIL else "error"
    outcome = ET.SubElement(
        element,
        tag,
        message=_clean(failure_message(result, scrub)),
        type=f"probe.{result.verdict.value}",
    )
    outcome.text = _clean(_details(result, report, scrub))


def to_element(report: Report, scrubber: Scrubber | None = None) -> ET.Element:
    scrub = scrubber or Scrubber()
    root = ET.Element("testsuites", name=_clean(f"fleetward probe {scrub.text(report.target)}"))
    totals = {"tests": 0, "failures": 0, "errors": 0}
    elapsed = 0.0
    for family, results in by_family(report.results).items():
        if not results:
            continue
        failures = sum(r.verdict is Verdict.FAIL for r in results)
        errors = sum(r.verdict is Verdict.ERROR for r in results)
        seconds = sum(r.elapsed_ms for r in results) / 1000
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"probe.{family.value}",
            tests=str(len(results)),
            failures=str(failures),
            errors=str(errors),
            skipped="0",
            time=f"{seconds:.3f}",
            timestamp=_clean(report.started_at),
        )
        _suite_properties(suite, report, scrub, family)
        for result in results:
            _testcase(suite, result, report, scrub)
        totals["tests"] += len(results)
        totals["failures"] += failures
        totals["errors"] += errors
        elapsed += seconds
    for key, value in totals.items():
        root.set(key, str(value))
    # Cases run concurrently: the run's wall time, when known, says more than the sum.
    root.set("time", f"{_wall_seconds(report) or elapsed:.3f}")
    return root


def _wall_seconds(report: Report) -> float | None:
    try:
        started = datetime.fromisoformat(report.started_at)
        finished = datetime.fromisoformat(report.finished_at)
    except ValueError:
        return None
    seconds = (finished - started).total_seconds()
    return seconds if seconds >= 0 else None


def _suite_properties(suite: ET.Element, report: Report, scrub: Scrubber, family: Family) -> None:
    properties = ET.SubElement(suite, "properties")
    for name, value in (
        ("target", scrub.text(report.target)),
        ("spec", scrub.text(report.spec_name)),
        ("policy_version", report.policy_version or NO_POLICY_VERSION),
        ("family", family.value),
    ):
        ET.SubElement(properties, "property", name=name, value=_clean(value))


def render(report: Report, scrubber: Scrubber | None = None) -> str:
    root = to_element(report, scrubber)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write(path: Path, report: Report, scrubber: Scrubber | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report, scrubber), encoding="utf-8")
