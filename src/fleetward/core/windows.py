"""Validity windows for relationships (ownership, delegation, assignment, consent)."""

from __future__ import annotations

from datetime import datetime, timedelta

from fleetward.core.clock import in_utc
from fleetward.core.errors import Conflict, InvalidInput


class InvalidWindow(InvalidInput):
    code = "invalid-window"
    title = "Invalid validity window"


class OverlappingWindow(Conflict):
    code = "overlapping-window"
    title = "Overlapping relationship"


def check_window(
    start: datetime,
    end: datetime | None,
    *,
    now: datetime,
    max_length: timedelta | None = None,
    max_lead: timedelta | None = None,
    open_end_allowed: bool = False,
    past_tolerance: timedelta = timedelta(minutes=5),
) -> None:
    """Refuse naive, inverted, back-dated, open-ended (unless allowed), over-long windows and
    (with ``max_lead``) windows starting more than ``max_lead`` after ``now``: a cap on the
    length alone let a grant be parked arbitrarily far in the future (year 9999)."""
    if start.tzinfo is None or (end is not None and end.tzinfo is None):
        raise InvalidWindow("window times must carry a time zone", reason="naive")
    try:
        in_utc(start)
        if end is not None:
            in_utc(end)
    except ValueError:
        raise InvalidWindow("window times are out of range", reason="out-of-range") from None
    if start < now - past_tolerance:
        raise InvalidWindow("a window cannot start in the past", reason="back-dated")
    if max_lead is not None and start - now > max_lead:
        days = max_lead.days
        raise InvalidWindow(
            f"the window may start at most {days} days from now", reason="too-far-ahead"
        )
    if end is None:
        if not open_end_allowed:
            raise InvalidWindow("this relationship needs an end time", reason="open-ended")
        return
    if end <= start:
        raise InvalidWindow("the window ends before it starts", reason="inverted")
    if max_length is not None and end - start > max_length:
        days = max_length.days
        raise InvalidWindow(f"the window may last at most {days} days", reason="too-long")


def overlaps(
    a_start: datetime, a_end: datetime | None, b_start: datetime, b_end: datetime | None
) -> bool:
    """Half-open intervals [start, end); ``None`` is an open end."""
    a_before_b_ends = b_end is None or a_start < b_end
    b_before_a_ends = a_end is None or b_start < a_end
    return a_before_b_ends and b_before_a_ends


def is_active(start: datetime, end: datetime | None, at: datetime) -> bool:
    return start <= at and (end is None or at < end)
