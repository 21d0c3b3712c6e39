"""What every object route shares: the platform, catalog entries, cursor pagination.

Lists are keyset-paginated on the object id with an opaque cursor and a server-side cap
(``max_page_size``): the page is cut in the query, after the query's own filtering, so a
page never holds rows the caller may not see and never needs loading everything first.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Final, Generic, TypeVar

from fastapi import Query, Request
from pydantic import AfterValidator, AwareDatetime, BaseModel

from fleetward.authz.permissions import Permission
from fleetward.catalog.entry import CallerType, CatalogEntry, DataClass, Impact
from fleetward.core.clock import in_utc
from fleetward.core.errors import InvalidInput
from fleetward.core.surfaces import Surface
from fleetward.platform import Platform

MAX_CURSOR: Final = 128
DEFAULT_PAGE: Final = 50

T = TypeVar("T")

# The query parameters of every list route: a page size (capped by ``page_size``) and the
# opaque cursor of the previous page.
Limit = Annotated[int, Query(ge=1)]
Cursor = Annotated[str | None, Query(max_length=MAX_CURSOR)]


# A time filter: with its offset (a naive time is refused, never guessed) and one UTC can
# hold (0001-01-01T00:00+05:00 is not), so the store is never handed what it cannot compare.
Instant = Annotated[AwareDatetime, AfterValidator(in_utc)]


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None


def platform_of(request: Request) -> Platform:
    platform: Platform = request.app.state.platform
    return platform


def object_entry(
    surface: Surface,
    purpose: str,
    permission: Permission,
    data_class: DataClass,
    *,
    owner: str,
    objects: tuple[str, ...],
    tags: tuple[str, ...],
    caller: CallerType = CallerType.USER,
    impact: frozenset[Impact] = frozenset({Impact.PRIVACY}),
    rate: int = 60,
) -> CatalogEntry:
    """The catalog entry of an object route: who calls it, what it needs, what it touches."""
    return CatalogEntry(
        surface=surface,
        owner=owner,
        purpose=purpose,
        callers=frozenset({caller}),
        permission=permission,
        data_class=data_class,
        objects=objects,
        impact=impact,
        expected_rate_per_minute=rate,
        tags=tags,
    )


def page_size(platform: Platform, limit: int) -> int:
    return min(limit, platform.settings.max_page_size)


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(last_id.encode("utf-8")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The last id of the previous page; a forged or malformed cursor is a 422."""
    if cursor is None:
        return None
    if len(cursor) > MAX_CURSOR:
        raise InvalidInput("the cursor is not valid", reason="cursor")
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        last_id = raw.decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raise InvalidInput("the cursor is not valid", reason="cursor") from None
    if not last_id or not last_id.isprintable():
        raise InvalidInput("the cursor is not valid", reason="cursor")
    return last_id


def cut_page(rows: Sequence[T], size: int) -> tuple[list[T], bool]:
    """Rows fetched with ``limit(size + 1)``: the page, and whether another follows."""
    return list(rows[:size]), len(rows) > size


__all__ = [
    "DEFAULT_PAGE",
    "MAX_CURSOR",
    "Cursor",
    "Limit",
    "Page",
    "cut_page",
    "decode_cursor",
    "encode_cursor",
    "object_entry",
    "page_size",
    "platform_of",
]
