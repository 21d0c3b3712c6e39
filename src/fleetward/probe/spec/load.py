"""Reading a spec: TOML in, a checked ``Spec`` out, or a ``SpecError`` that says what is wrong
and where (``roles[2].states: ...``). Also the spec's JSON Schema (``fleetward probe schema``).
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from fleetward.core.errors import InvalidInput
from fleetward.probe.spec.models import Spec

DEMO_SPEC = "demo.toml"
SCHEMA_ID = "urn:fleetward:probe:spec:1"


class SpecError(InvalidInput):
    """The spec cannot be used. ``problems`` lists each one as ``where: what``."""

    code = "invalid-probe-spec"
    title = "Invalid probe spec"

    def __init__(self, source: str, problems: list[str]) -> None:
        super().__init__(
            f"{source}: " + "; ".join(problems), reason="spec", extra={"errors": list(problems)}
        )
        self.source = source
        self.problems = problems


def _where(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(spec)"


def _describe(error: Any) -> str:
    kind = error.get("type", "")
    loc = tuple(error.get("loc", ()))
    if kind == "extra_forbidden":
        return f"{_where(loc)}: unknown field"
    if kind == "missing":
        return f"{_where(loc)}: required field is missing"
    message = str(error.get("msg", "invalid"))
    message = message.removeprefix("Value error, ")
    return f"{_where(loc)}: {message}"


def parse(data: dict[str, Any], *, source: str = "spec") -> Spec:
    """Check a decoded spec document."""
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(error) for error in exc.errors()]
        raise SpecError(source, problems) from None


def loads(text: str, *, source: str = "spec") -> Spec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(source, [f"not valid TOML: {exc}"]) from None
    return parse(data, source=source)


def load(path: Path) -> Spec:
    """Read a spec file (TOML)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(str(path), [f"cannot be read: {type(exc).__name__}"]) from None
    return loads(text, source=str(path))


def demo_text() -> str:
    return resources.files("fleetward.probe.spec").joinpath(DEMO_SPEC).read_text("utf-8")


def load_demo() -> Spec:
    """The spec of the demo world, shipped with Fleetward (the default)."""
    return loads(demo_text(), source=f"fleetward:{DEMO_SPEC}")


def json_schema() -> dict[str, Any]:
    """The spec format as a JSON Schema (draft 2020-12)."""
    schema = Spec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "Fleetward probe spec"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
