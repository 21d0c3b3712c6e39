"""One self-contained HTML file: a summary, then every failing case with its request, the
response status and why it is wrong.

Self-contained means inline CSS and nothing else: no script, no external stylesheet, font or
image, and a Content-Security-Policy that forbids them, so the file can be archived as
evidence and opened offline. Every value is escaped: a response may hold hostile markup.
"""

from __future__ import annotations

from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import Final

from fleetward.probe.model import Report, Result, Verdict
from fleetward.probe.report.redact import Scrubber
from fleetward.probe.report.summary import Tally, policy_version_of, summarize

_CSS: Final = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem;color:#1b1f24;background:#fff}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:2rem 0 .5rem}
table{border-collapse:collapse;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37}.bad{color:#cf222e;font-weight:600}.err{color:#9a6700;font-weight:600}
.meta{color:#57606a}
article{border:1px solid #d0d7de;border-left:4px solid #cf222e;margin:1rem 0;padding:.5rem 1rem}
article.error{border-left-color:#9a6700}
article h3{font-size:1rem;margin:.25rem 0;word-break:break-all}
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:.5rem 0}
dt{font-weight:600}dd{margin:0;word-break:break-word}
code,pre{font:12px/1.4 ui-monospace,monospace;background:#f6f8fa}
pre{padding:.5rem;white-space:pre-wrap;word-break:break-all;margin:0}
"""
_CSP: Final = "default-src 'none'; style-src 'unsafe-inline'; img-src 'none'; form-action 'none'"


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _tally_cells(tally: Tally) -> str:
    failed = f'<td class="n{" bad" if tally.failed else ""}">{tally.failed}</td>'
    errors = f'<td class="n{" err" if tally.errors else ""}">{tally.errors}</td>'
    return f'<td class="n">{tally.total}</td><td class="n ok">{tally.passed}</td>{failed}{errors}'


def _summary(report: Report) -> str:
    summary = summarize(report)
    rows = [
        f"<tr><th>{_e(family.value)}</th>{_tally_cells(tally)}</tr>"
        for family, tally in summary.by_family.items()
    ]
    rows.append(f"<tr><th>all</th>{_tally_cells(summary.overall)}</tr>")
    return (
        "<table><thead><tr><th>family</th><th>cases</th><th>passed</th><th>failed</th>"
        "<th>errors</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _routes(failures: Iterable[Result]) -> str:
    counts: dict[str, int] = {}
    for result in failures:
        counts[result.case.route_id] = counts.get(result.case.route_id, 0) + 1
    if not counts:
        return ""
    rows = "".join(
        f'<tr><td><code>{_e(route)}</code></td><td class="n">{count}</td></tr>'
        for route, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    )
    return (
        "<h2>Failing routes</h2><table><thead><tr><th>catalog route id</th>"
        f"<th>failing cases</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _item(term: str, value: str, *, pre: bool = False) -> str:
    body = f"<pre>{_e(value)}</pre>" if pre else _e(value)
    return f"<dt>{_e(term)}</dt><dd>{body}</dd>"


def _failure(result: Result, report: Report, scrub: Scrubber) -> str:
    case = result.case
    status = "no response" if result.status is None else str(result.status)
    items = [
        _item("request", scrub.request_line(case.request)),
        _item("response status", status),
        _item("expected", case.expect.value),
        _item("why it is wrong", scrub.text(result.reason)),
        _item("threat covered", scrub.text(case.why)),
        _item("family", case.family.value),
        _item("catalog route id", case.route_id),
        _item("policy version", policy_version_of(result, report) or "unknown"),
    ]
    headers = scrub.headers(case.request.headers)
    if headers:
        items.append(_item("headers", "\n".join(f"{n}: {v}" for n, v in headers), pre=True))
    body = scrub.body(case.request.body)
    if body is not None:
        items.append(_item("request body", body, pre=True))
    if case.read_back is not None:
        items.append(_item("read back", scrub.request_line(case.read_back)))
    if result.response_excerpt:
        items.append(_item("response excerpt", scrub.text(result.response_excerpt), pre=True))
    kind = "error" if result.verdict is Verdict.ERROR else "failure"
    return (
        f'<article class="{kind}"><h3>{_e(kind.upper())}: <code>{_e(scrub.text(case.id))}'
        f"</code></h3><dl>{''.join(items)}</dl></article>"
    )


def render(report: Report, scrubber: Scrubber | None = None) -> str:
    scrub = scrubber or Scrubber()
    failures = report.failures
    verdict = (
        '<p class="ok">Every case had the expected outcome.</p>'
        if not failures
        else f'<p class="bad">{len(failures)} case(s) did not have the expected outcome.</p>'
    )
    meta = "".join(
        _item(term, value)
        for term, value in (
            ("target", scrub.text(report.target)),
            ("spec", scrub.text(report.spec_name)),
            ("policy version", report.policy_version or "unknown"),
            ("started", report.started_at),
            ("finished", report.finished_at),
        )
    )
    cases = "".join(_failure(r, report, scrub) for r in failures)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_e(_CSP)}">'
        '<meta name="referrer" content="no-referrer">'
        f"<title>fleetward probe: {_e(scrub.text(report.target))}</title>"
        f"<style>{_CSS}</style></head><body>"
        f'<h1>fleetward probe</h1><dl class="meta">{meta}</dl>{verdict}'
        f"<h2>Summary</h2>{_summary(report)}{_routes(failures)}"
        f"<h2>Failing cases</h2>{cases or '<p>None.</p>'}"
        "</body></html>\n"
    )


def write(path: Path, report: Report, scrubber: Scrubber | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report, scrubber), encoding="utf-8")
