"""Filling a route's path and body templates from a world manifest's ids.

Placeholders are ``{name}``: a path parameter or id recorded on the object
(``ObjectRecord.ids``), or a built-in: ``{future}`` (now + 2 days, ISO 8601 UTC) and
``{unique}`` (a fresh random suffix, for names that must not collide). A placeholder with no
value is an error (``KeyError``): a case is never sent with a hole in it.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
FUTURE = timedelta(days=2)


def render_path(template: str, ids: Mapping[str, str]) -> str:
    """The path with each ``{param}`` replaced by its id, percent-encoded as one segment."""

    def value(match: re.Match[str]) -> str:
        return quote(ids[match.group(1)], safe="")

    return _PLACEHOLDER.sub(value, template)


def _builtins(now: datetime) -> dict[str, str]:
    return {
        "future": (now + FUTURE).isoformat().replace("+00:00", "Z"),
        "unique": secrets.token_hex(4),
    }


def _fill(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole is not None:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], value)
    if isinstance(value, list):
        return [_fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: _fill(item, values) for key, item in value.items()}
    return value


def render_body(
    template: Mapping[str, Any] | None, ids: Mapping[str, str], *, now: datetime | None = None
) -> dict[str, Any] | None:
    """A JSON body from ``template`` (``None`` stays ``None``)."""
    if template is None:
        return None
    values = {**_builtins(now or datetime.now(UTC)), **ids}
    body: dict[str, Any] = _fill(dict(template), values)
    return body
