"""Governance figures computed from real data: the route catalog, the command families and
the Cedar schema, an optional probe report, the credential tables and the audit log.

Each figure says where it comes from; a figure that cannot be computed is ``None`` with a
note, never a guess.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any, Final

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.alerts import Alert
from fleetward.audit.events import Decision, EventName
from fleetward.audit.models import AuditRecord
from fleetward.authz.decision import Reason
from fleetward.catalog.entry import Lifecycle, PublicMarker
from fleetward.catalog.inventory import CatalogItem
from fleetward.commands.families import COMMANDS
from fleetward.identity.oauth_models import RefreshToken

_CROSS_TENANT: Final = tuple(
    r.value
    for r in (
        Reason.TOKEN_TENANT_MISMATCH,
        Reason.TENANT_MISMATCH,
        Reason.TENANT_MISMATCH_FLEET,
        Reason.TENANT_MISMATCH_OWN_FLEET,
    )
)
# Probe families that exercise object-level authorization (one object, several callers).
_OBJECT_FAMILIES: Final = frozenset({"matrix", "object-id", "property"})
_REVOCATIONS: Final = (EventName.OAUTH_TOKENS_REVOKED.value, EventName.DEVICE_REVOKED.value)
_ACTION_GROUPS: Final = re.compile(r'action\s+((?:"[^"]+"\s*,\s*)*"[^"]+")\s+in\s+\[([^\]]*)\]')
LONG_LIVED: Final = timedelta(days=30)


def step_up_actions() -> frozenset[str]:
    """Actions the Cedar schema puts in ``group:step_up`` (the policy's own answer)."""
    text = files("fleetward.authz.policy").joinpath("schema.cedarschema").read_text("utf-8")
    actions: set[str] = set()
    for names, groups in _ACTION_GROUPS.findall(text):
        if '"group:step_up"' in groups:
            actions.update(re.findall(r'"([^"]+)"', names))
    return frozenset(actions)


def _share(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def route_figures(items: Sequence[CatalogItem], probe_report: Path | None) -> dict[str, Any]:
    total = len(items)
    owned = sum(1 for i in items if i.entry.owner.strip())
    object_routes = [
        i for i in items if i.entry.objects and not isinstance(i.entry.permission, PublicMarker)
    ]
    tested: int | None = None
    if probe_report is not None:
        document = json.loads(probe_report.read_text("utf-8"))
        covered = {
            r.get("route_id")
            for r in document.get("results", [])
            if r.get("family") in _OBJECT_FAMILIES
        }
        tested = sum(1 for i in object_routes if i.name in covered)
    deprecated = sorted(
        {f"{i.entry.version} {i.path}" for i in items if i.entry.lifecycle is Lifecycle.DEPRECATED}
    )
    return {
        "routes": total,
        # The app refuses to start with an uncatalogued route, so every served route is here.
        "share_inventoried": _share(total, total),
        "share_owned": _share(owned, total),
        "object_routes": len(object_routes),
        "share_object_level_tested": None if tested is None else _share(tested, len(object_routes)),
        "object_level_note": None if probe_report else "no probe report given (--probe-report)",
        "deprecated_routes": deprecated,
    }


def command_figures() -> dict[str, Any]:
    step_up = step_up_actions()
    needing = sorted(name for name, spec in COMMANDS.items() if spec.permission.value in step_up)
    return {
        "commands": len(COMMANDS),
        "commands_requiring_step_up": needing,
        "share_requiring_step_up": _share(len(needing), len(COMMANDS)),
    }


async def data_figures(
    session: AsyncSession,
    items: Sequence[CatalogItem],
    *,
    now: datetime,
    window: timedelta = timedelta(days=30),
) -> dict[str, Any]:
    since = now - window
    in_window = AuditRecord.occurred_at >= since
    deprecated_names = [i.name for i in items if i.entry.lifecycle is Lifecycle.DEPRECATED]
    deprecated_in_use = 0
    if deprecated_names:
        deprecated_in_use = (
            await session.scalar(
                select(func.count(func.distinct(AuditRecord.endpoint))).where(
                    in_window, AuditRecord.endpoint.in_(deprecated_names)
                )
            )
            or 0
        )
    cross_tenant = (
        await session.scalar(
            select(func.count())
            .select_from(AuditRecord)
            .where(
                in_window,
                AuditRecord.decision == Decision.DENIED,
                AuditRecord.reason.in_(_CROSS_TENANT),
            )
        )
        or 0
    )
    # A token used from more than one address is shared (or stolen).
    shared_tokens = (
        await session.scalar(
            select(func.count()).select_from(
                select(AuditRecord.token_id)
                .where(in_window, AuditRecord.token_id.is_not(None))
                .group_by(AuditRecord.token_id)
                .having(func.count(func.distinct(AuditRecord.source_ip)) > 1)
                .subquery()
            )
        )
        or 0
    )
    long_lived = (
        await session.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(
                RefreshToken.revoked_at.is_(None),
                RefreshToken.used_at.is_(None),
                RefreshToken.expires_at > now,
                RefreshToken.created_at < now - LONG_LIVED,
            )
        )
        or 0
    )
    investigations = (
        await session.scalars(
            select(AuditRecord.details).where(
                in_window, AuditRecord.name == EventName.INVESTIGATION_RUN.value
            )
        )
    ).all()
    elapsed = [
        float(d["elapsed_ms"])
        for d in investigations
        if isinstance(d.get("elapsed_ms"), int | float)
    ]
    return {
        "window_days": window.days,
        "deprecated_versions_in_use": deprecated_in_use,
        "cross_tenant_denials": cross_tenant,
        "tokens_used_from_several_addresses": shared_tokens,
        "refresh_tokens_older_than_30_days": long_lived,
        "mean_time_to_revoke_seconds": await _time_to_revoke(session, since),
        "mean_time_to_list_affected_vehicles_ms": (
            round(sum(elapsed) / len(elapsed), 3) if elapsed else None
        ),
        "investigations": len(elapsed),
    }


async def _time_to_revoke(session: AsyncSession, since: datetime) -> float | None:
    """Mean time from an alert's first sighting to the first revocation of its subject."""
    rows = (
        await session.execute(
            select(Alert.first_seen, func.min(AuditRecord.occurred_at))
            .join(AuditRecord, AuditRecord.object_id == Alert.subject_id)
            .where(
                Alert.first_seen >= since,
                AuditRecord.name.in_(_REVOCATIONS),
                AuditRecord.occurred_at >= Alert.first_seen,
            )
            .group_by(Alert.id, Alert.first_seen)
        )
    ).all()
    delays = [(revoked - seen).total_seconds() for seen, revoked in rows if revoked is not None]
    return round(sum(delays) / len(delays), 3) if delays else None
