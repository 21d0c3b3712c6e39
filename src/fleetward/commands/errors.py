"""Problems a command request can end in. A rejected job is a problem response that names
the job and the failing link of its authorization chain; the job itself is stored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from fleetward.commands.chain import Link
from fleetward.core.errors import FleetwardError, JsonValue


class IdempotencyKeyRequired(FleetwardError):
    code = "idempotency-key-required"
    status = 400
    title = "Idempotency-Key header required"


class IdempotencyKeyReused(FleetwardError):
    code = "idempotency-key-reused"
    status = 409
    title = "Idempotency key already used for another request"


class BadCommandParameters(FleetwardError):
    code = "invalid-input"
    status = 422
    title = "Invalid input"


class JobNotCancellable(FleetwardError):
    code = "job-not-cancellable"
    status = 409
    title = "The job can no longer be cancelled"


class CommandRejected(FleetwardError):
    """The job was created and rejected at a link of its chain (403 unless a subclass)."""

    code = "command-rejected"
    status = 403
    title = "Command rejected"


class CommandRejectedStepUp(CommandRejected):
    status = 401


class CommandRejectedConflict(CommandRejected):
    status = 409


class CommandRejectedQuota(CommandRejected):
    status = 429


class BulkRejected(FleetwardError):
    code = "bulk-command-rejected"
    status = 422
    title = "Bulk command rejected"


_BY_LINK: Final[Mapping[Link, type[CommandRejected]]] = {
    Link.STEP_UP: CommandRejectedStepUp,
    Link.VEHICLE_STATE: CommandRejectedConflict,
    Link.CONFLICT: CommandRejectedConflict,
    Link.QUOTA: CommandRejectedQuota,
}


def rejection(
    job_id: str,
    link: Link,
    reason: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> CommandRejected:
    cls = _BY_LINK.get(link, CommandRejected)
    extra: dict[str, JsonValue] = {"job_id": job_id, "state": "rejected", "link": link.value}
    return cls(
        f"the command was rejected at the {link.value} link",
        reason=reason,
        extra=extra,
        headers=headers,
    )
