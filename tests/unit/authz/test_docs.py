"""docs/authorization.md quotes the policy files exactly, so the page never drifts from the
policy that decides."""

from __future__ import annotations

from pathlib import Path

from fleetward.authz.pdp import PolicyText

DOC = Path(__file__).resolve().parents[3] / "docs" / "authorization.md"


def test_docs_quote_the_policy() -> None:
    doc = DOC.read_text(encoding="utf-8")
    for name, text in PolicyText.packaged().policies:
        quoted = f"<!-- policy:{name} -->\n```cedar\n{text}```\n<!-- /policy -->"
        assert quoted in doc, f"copy {name} into docs/authorization.md (between the markers)"
