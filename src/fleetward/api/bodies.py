"""Request bodies: every body model forbids unknown fields (a test walks the app for it)."""

from __future__ import annotations

from typing import Final

from pydantic import AfterValidator, BaseModel, ConfigDict

from fleetward.core.text import is_printable_text


class StrictBody(BaseModel):
    """Base of every request body. Unknown fields are refused, never ignored, so a client
    cannot slip server-owned fields (owner, tenant, role, status) into a write."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)


def _printable(value: str) -> str:
    if not is_printable_text(value):
        # The value is never repeated: the problem names the field only.
        raise ValueError(
            "must be printable text: no control, format (bidi, zero-width) or separator "
            "characters other than the space"
        )
    return value


# For every free-text field a client sets and others are shown (display names, labels):
# ``Annotated[str, StringConstraints(...), PRINTABLE]``. See fleetward.core.text.
PRINTABLE: Final = AfterValidator(_printable)
