"""Counts every report shows: per Family and in total, in a fixed order."""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetward.probe.model import Family, Report, Result, Verdict


@dataclass(slots=True)
class Tally:
    total: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0

    def add(self, verdict: Verdict) -> None:
        self.total += 1
        if verdict is Verdict.PASS:
            self.passed += 1
        elif verdict is Verdict.FAIL:
            self.failed += 1
        else:
            self.errors += 1


@dataclass(slots=True)
class Summary:
    overall: Tally = field(default_factory=Tally)
    # Every Family, in declaration order, even those with no case (a family that produced
    # nothing is a fact the reader should see).
    by_family: dict[Family, Tally] = field(default_factory=lambda: {f: Tally() for f in Family})
    elapsed_ms: float = 0.0


def summarize(report: Report) -> Summary:
    summary = Summary()
    for result in report.results:
        summary.overall.add(result.verdict)
        summary.by_family[result.case.family].add(result.verdict)
        summary.elapsed_ms += result.elapsed_ms
    return summary


def by_family(results: list[Result]) -> dict[Family, list[Result]]:
    grouped: dict[Family, list[Result]] = {f: [] for f in Family}
    for result in results:
        grouped[result.case.family].append(result)
    return grouped


def policy_version_of(result: Result, report: Report) -> str | None:
    """The version the result saw, else the one the deployment reported for the whole run."""
    return result.policy_version or report.policy_version
