"""The authorization chain of a command, link by link, as recorded on the job.

approved client -> authenticated user -> active relationship -> role -> command permission ->
recent authentication -> vehicle state and region -> quotas -> trusted command service ->
authenticated vehicle. The first failing link rejects the job and is named on it; the links
after it are not evaluated (and not recorded). The last two are added at delivery (the
envelope was signed by the command service) and on the vehicle's answer (its signature
verified under the device certificate).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final

from fleetward.authz.decision import Reason


class Link(StrEnum):
    CLIENT = "client"
    USER = "user"
    RELATIONSHIP = "relationship"
    ROLE = "role"
    PERMISSION = "permission"
    STEP_UP = "step_up"
    REGION = "region"
    VEHICLE_STATE = "vehicle_state"
    CONFLICT = "conflict"
    QUOTA = "quota"
    # A bulk request above the approval threshold: a second fleet admin's approval.
    APPROVAL = "approval"
    COMMAND_SERVICE = "command_service"
    VEHICLE = "vehicle"
    # Checked again when the job is about to be delivered.
    DELIVERY_RECHECK = "delivery_recheck"


_R = Reason
# Which link a PDP denial breaks. A denial with a reason not listed here is the permission
# link's (fail closed: it still rejects, and the reason is recorded).
_LINK_OF_REASON: Final = {
    _R.UNKNOWN_PRINCIPAL: Link.USER,
    _R.PRINCIPAL_DISABLED: Link.USER,
    _R.NO_RELATIONSHIP: Link.RELATIONSHIP,
    _R.FORMER_OWNER: Link.RELATIONSHIP,
    _R.WINDOW_EXPIRED: Link.RELATIONSHIP,
    _R.WINDOW_NOT_STARTED: Link.RELATIONSHIP,
    _R.REVOKED: Link.RELATIONSHIP,
    _R.CASE_CLOSED: Link.RELATIONSHIP,
    _R.UNASSIGNED: Link.RELATIONSHIP,
    _R.UNKNOWN_RESOURCE: Link.RELATIONSHIP,
    _R.TENANT_MISMATCH: Link.RELATIONSHIP,
    _R.TENANT_MISMATCH_FLEET: Link.RELATIONSHIP,
    _R.TENANT_MISMATCH_OWN_FLEET: Link.RELATIONSHIP,
    _R.TOKEN_TENANT_MISMATCH: Link.RELATIONSHIP,
    _R.SEPARATION_OF_DUTIES: Link.ROLE,
    _R.DEALER_LIMITS: Link.ROLE,
    _R.READ_ONLY_CLIENT: Link.ROLE,
    _R.NO_BULK_IMMOBILIZE: Link.ROLE,
    _R.SCOPE: Link.PERMISSION,
    _R.STEP_UP_REQUIRED: Link.STEP_UP,
    _R.REGION_BARRED: Link.REGION,
}
# The links a PDP allow establishes (in chain order).
PDP_LINKS: Final = (
    Link.USER,
    Link.RELATIONSHIP,
    Link.ROLE,
    Link.PERMISSION,
    Link.STEP_UP,
    Link.REGION,
)


def link_of(reason: Reason) -> Link:
    return _LINK_OF_REASON.get(reason, Link.PERMISSION)


def entry(link: Link, ok: bool, detail: str) -> dict[str, Any]:
    """One link as the job stores it."""
    return {"link": link.value, "ok": ok, "detail": detail}


@dataclass(slots=True)
class Chain:
    """The links established so far; ``failed`` is the first one that did not hold."""

    links: list[dict[str, Any]] = field(default_factory=list)
    failed: Link | None = None
    reason: str | None = None
    # When the quota link failed: seconds until a retry may pass.
    retry_after_s: int = 0

    def ok(self, link: Link, detail: str) -> None:
        self.links.append(entry(link, True, detail))

    def fail(self, link: Link, reason: str) -> None:
        self.links.append(entry(link, False, reason))
        if self.failed is None:
            self.failed, self.reason = link, reason

    @property
    def held(self) -> bool:
        return self.failed is None
