"""The console view: a Rich progress bar while the cases run, then a summary table per Family
and the first failing cases (the files hold all of them)."""

from __future__ import annotations

from types import TracebackType
from typing import Final

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from fleetward.probe.model import Report, Result, Verdict
from fleetward.probe.report.junit import failure_message
from fleetward.probe.report.redact import Scrubber
from fleetward.probe.report.summary import Tally, summarize

FAILURES_SHOWN: Final = 20


class ConsoleProgress:
    """A progress bar fed one result at a time (``on_result`` is the runner's callback).

    Not thread-safe: call it from the event loop that runs the cases.
    """

    def __init__(self, console: Console, total: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]probe"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self._task: TaskID = self._progress.add_task("cases", total=total, failed=0)
        self._failed = 0

    def __enter__(self) -> ConsoleProgress:
        self._progress.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._progress.stop()

    def on_result(self, result: Result) -> None:
        if result.verdict is not Verdict.PASS:
            self._failed += 1
        self._progress.update(self._task, advance=1, failed=self._failed)


def _row(name: str, tally: Tally) -> tuple[str, str, str, Text, Text]:
    return (
        name,
        str(tally.total),
        str(tally.passed),
        Text(str(tally.failed), style="bold red" if tally.failed else ""),
        Text(str(tally.errors), style="bold yellow" if tally.errors else ""),
    )


def summary_table(report: Report) -> Table:
    summary = summarize(report)
    table = Table(title="fleetward probe", title_justify="left")
    table.add_column("family")
    for column in ("cases", "passed", "failed", "errors"):
        table.add_column(column, justify="right")
    for family, tally in summary.by_family.items():
        table.add_row(*_row(family.value, tally))
    table.add_section()
    table.add_row(*_row("all", summary.overall))
    return table


def print_summary(console: Console, report: Report, scrubber: Scrubber | None = None) -> None:
    scrub = scrubber or Scrubber()
    console.print(summary_table(report))
    # soft_wrap: a failing request stays on one line in a CI log, whole and copyable.
    console.print(
        Text(
            f"target {scrub.text(report.target)}, spec {scrub.text(report.spec_name)}, "
            f"policy version {report.policy_version or 'unknown'}"
        ),
        soft_wrap=True,
    )
    failures = report.failures
    for result in failures[:FAILURES_SHOWN]:
        # Text, not markup: a reason may quote a response holding "[...]".
        line = Text(f"{result.verdict.value.upper()} ", style="bold red")
        line.append(f"[{result.case.route_id}] {failure_message(result, scrub)}")
        console.print(line, soft_wrap=True)
    if len(failures) > FAILURES_SHOWN:
        console.print(Text(f"... and {len(failures) - FAILURES_SHOWN} more (see the reports)"))
    if not report.results:
        console.print(Text("no case was run: nothing was proven", style="bold red"))
    elif not failures:
        console.print(Text("every case had the expected outcome", style="bold green"))
