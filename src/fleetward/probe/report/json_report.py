"""The JSON report: a stable, versioned document (``"schema": "fleetward-probe/1"``).

Stability contract: within ``fleetward-probe/1`` fields are only ever added, never renamed,
removed or given another meaning; a consumer that ignores unknown fields keeps working. A
change of meaning is a new schema name. :data:`JSON_SCHEMA` describes the document and is
checked against real reports in the tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Final

from fleetward.probe.model import Expect, Family, Report, Request, Result, Verdict
from fleetward.probe.report.redact import Scrubber
from fleetward.probe.report.summary import Tally, policy_version_of, summarize

SCHEMA_NAME: Final = "fleetward-probe/1"


def to_document(report: Report, scrubber: Scrubber | None = None) -> dict[str, Any]:
    scrub = scrubber or Scrubber()
    summary = summarize(report)
    return {
        "schema": SCHEMA_NAME,
        "target": scrub.text(report.target),
        "spec": scrub.text(report.spec_name),
        "started_at": report.started_at,
        "finished_at": report.finished_at,
        "policy_version": report.policy_version,
        "summary": {
            **_tally(summary.overall),
            "by_family": {f.value: _tally(t) for f, t in summary.by_family.items()},
        },
        "results": [_result(r, report, scrub) for r in report.results],
    }


def render(report: Report, scrubber: Scrubber | None = None) -> str:
    return json.dumps(to_document(report, scrubber), indent=2, ensure_ascii=False) + "\n"


def write(path: Path, report: Report, scrubber: Scrubber | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(report, scrubber), encoding="utf-8")


def _tally(tally: Tally) -> dict[str, int]:
    return {
        "total": tally.total,
        "passed": tally.passed,
        "failed": tally.failed,
        "errors": tally.errors,
    }


def _request(request: Request, scrub: Scrubber) -> dict[str, Any]:
    return {
        "method": scrub.text(request.method),
        "path": scrub.text(request.path),
        "actor": scrub.optional(request.actor),
        "credential": scrub.optional(request.credential),
        "headers": [[name, value] for name, value in scrub.headers(request.headers)],
        "body": scrub.body(request.body),
        "line": scrub.request_line(request),
    }


def _result(result: Result, report: Report, scrub: Scrubber) -> dict[str, Any]:
    case = result.case
    return {
        "case_id": scrub.text(case.id),
        "family": case.family.value,
        "route_id": case.route_id,
        "policy_version": policy_version_of(result, report),
        "verdict": result.verdict.value,
        "expect": case.expect.value,
        "status": result.status,
        "reason": scrub.text(result.reason),
        "why": scrub.text(case.why),
        "elapsed_ms": round(result.elapsed_ms, 3),
        "request": _request(case.request, scrub),
        "read_back": None if case.read_back is None else _request(case.read_back, scrub),
        "allowed_fields": None if case.allowed_fields is None else sorted(case.allowed_fields),
        "response_excerpt": scrub.text(result.response_excerpt),
    }


_TALLY: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["total", "passed", "failed", "errors"],
    "properties": {
        k: {"type": "integer", "minimum": 0} for k in ("total", "passed", "failed", "errors")
    },
}
_NULLABLE_STRING: Final[dict[str, Any]] = {"type": ["string", "null"]}
_REQUEST: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["method", "path", "actor", "credential", "headers", "body", "line"],
    "properties": {
        "method": {"type": "string", "minLength": 1},
        "path": {"type": "string"},
        "actor": _NULLABLE_STRING,
        "credential": _NULLABLE_STRING,
        "headers": {
            "type": "array",
            "items": {
                "type": "array",
                "items": {"type": "string"},
                "minItems": 2,
                "maxItems": 2,
            },
        },
        "body": {"description": "the JSON body as sent, redacted, as text", **_NULLABLE_STRING},
        "line": {"description": "METHOD path as actor", "type": "string"},
    },
}

JSON_SCHEMA: Final[dict[str, Any]] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://fleetward.dev/schemas/fleetward-probe-1.json",
    "title": "fleetward probe report",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema",
        "target",
        "spec",
        "started_at",
        "finished_at",
        "policy_version",
        "summary",
        "results",
    ],
    "properties": {
        "schema": {"const": SCHEMA_NAME},
        "target": {"type": "string"},
        "spec": {"type": "string"},
        "started_at": {"type": "string"},
        "finished_at": {"type": "string"},
        "policy_version": _NULLABLE_STRING,
        "summary": {
            "type": "object",
            "additionalProperties": False,
            "required": [*_TALLY["required"], "by_family"],
            "properties": {
                **_TALLY["properties"],
                "by_family": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": [f.value for f in Family],
                    "properties": {f.value: _TALLY for f in Family},
                },
            },
        },
        "results": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": [
                    "case_id",
                    "family",
                    "route_id",
                    "policy_version",
                    "verdict",
                    "expect",
                    "status",
                    "reason",
                    "why",
                    "elapsed_ms",
                    "request",
                    "read_back",
                    "allowed_fields",
                    "response_excerpt",
                ],
                "properties": {
                    "case_id": {"type": "string", "minLength": 1},
                    "family": {"enum": [f.value for f in Family]},
                    "route_id": {"type": "string", "minLength": 1},
                    "policy_version": {
                        "description": "the policy version the deployment reported; null if it"
                        " reported none",
                        **_NULLABLE_STRING,
                    },
                    "verdict": {"enum": [v.value for v in Verdict]},
                    "expect": {"enum": [e.value for e in Expect]},
                    "status": {"type": ["integer", "null"], "minimum": 100, "maximum": 599},
                    "reason": {"type": "string"},
                    "why": {"type": "string"},
                    "elapsed_ms": {"type": "number", "minimum": 0},
                    "request": _REQUEST,
                    "read_back": {"oneOf": [{"type": "null"}, _REQUEST]},
                    "allowed_fields": {
                        "type": ["array", "null"],
                        "items": {"type": "string"},
                    },
                    "response_excerpt": {"type": "string"},
                },
            },
        },
    },
}


def schema_text() -> str:
    return json.dumps(JSON_SCHEMA, indent=2) + "\n"
