"""Request bodies: every body model forbids unknown fields (a test walks the app for it)."""

from __future__ import annotations

from typing import Annotated, Final

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from fleetward.core.text import is_printable_text
from fleetward.store.base import ID_LENGTH


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


# An object id in a body. No id is longer than the store's id column: a longer one (on
# PostgreSQL) did not fit the audit record of the decision about it (a 500, the records
# lost), so it is invalid input before any store sees it. ``ObjectId``: shaped like the ids
# the platform issues (whether it names an object is the service's question); ``LooseId``:
# any printable id (a bulk command's vehicles, decided one by one, a wrong one denied).
ObjectId = Annotated[
    str, StringConstraints(min_length=1, max_length=ID_LENGTH, pattern=r"^[a-z0-9_]+$")
]
LooseId = Annotated[str, Field(min_length=1, max_length=ID_LENGTH), PRINTABLE]
