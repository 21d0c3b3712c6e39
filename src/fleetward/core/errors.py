"""Problem errors.

Every error a caller can see is a subclass of :class:`FleetwardError`. Each class owns its
stable problem ``code`` (the last part of the RFC 9457 ``type``), its HTTP status and its
title; one handler in ``fleetward.api.problems`` renders all of them. ``detail`` is written
for the caller and must never carry secrets, stack traces or internals.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

JsonScalar = str | int | float | bool | None
JsonValue = JsonScalar | list["JsonValue"] | dict[str, "JsonValue"]

PROBLEM_TYPE_PREFIX = "urn:fleetward:problem:"


class FleetwardError(Exception):
    """Base of every caller-visible error; defaults to an opaque internal error."""

    code: ClassVar[str] = "internal-error"
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal error"

    def __init__(
        self,
        detail: str,
        *,
        reason: str | None = None,
        extra: Mapping[str, JsonValue] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        # A stable machine-readable reason, e.g. "check-digit" for a bad VIN.
        self.reason = reason
        self.extra: dict[str, JsonValue] = dict(extra or {})
        # Response headers the problem needs (WWW-Authenticate, Retry-After).
        self.headers: dict[str, str] = dict(headers or {})

    @classmethod
    def problem_type(cls) -> str:
        return PROBLEM_TYPE_PREFIX + cls.code

    def to_problem(self, instance: str | None = None) -> dict[str, JsonValue]:
        body: dict[str, JsonValue] = {
            "type": self.problem_type(),
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if self.reason is not None:
            body["reason"] = self.reason
        if instance is not None:
            body["instance"] = instance
        for key, value in self.extra.items():
            body.setdefault(key, value)
        return body


class InvalidInput(FleetwardError):
    code = "invalid-input"
    status = 422
    title = "Invalid input"


class Unauthenticated(FleetwardError):
    code = "unauthenticated"
    status = 401
    title = "Authentication required"


class Forbidden(FleetwardError):
    code = "forbidden"
    status = 403
    title = "Forbidden"


class NotFound(FleetwardError):
    code = "not-found"
    status = 404
    title = "Not found"


class Conflict(FleetwardError):
    code = "conflict"
    status = 409
    title = "Conflict"


class TooManyRequests(FleetwardError):
    code = "too-many-requests"
    status = 429
    title = "Too many requests"


class ServiceUnavailable(FleetwardError):
    code = "service-unavailable"
    status = 503
    title = "Service unavailable"
