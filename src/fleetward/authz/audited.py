"""Decisions asked in a caller's transaction and recorded there, failing closed.

The one place where "ask the PDP about these requests, deny all of them if it cannot answer,
and audit every answer" is written: routes (``api.authorize``) and the command dispatcher's
delivery re-check use it alike.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from fleetward.audit.recorder import AuditRecorder
from fleetward.authz.decision import AuthzRequest, Decision, Reason, audit_decision
from fleetward.authz.entities import SessionRelations
from fleetward.authz.pdp import CedarPdp
from fleetward.observability.logging import get_logger
from fleetward.store.busy import StoreBusy

logger = get_logger(__name__)


async def decide_audited(
    pdp: CedarPdp, session: AsyncSession, audit: AuditRecorder, asks: Sequence[AuthzRequest]
) -> list[Decision]:
    """One decision per ask, in order, with relations read in ``session``'s transaction and
    each decision recorded there (the caller commits). A decision the PDP cannot make denies
    every ask (``pdp-error``); one it could not make in time (the store too slow to read the
    relations) raises :class:`StoreBusy` instead, since the transaction is then unusable."""
    if not asks:
        return []
    try:
        decisions = await pdp.bind(SessionRelations(session)).decide_many(asks)
    except Exception as exc:  # fail closed; the PDP should never raise, but a bug denies
        logger.warning("authz.decide_error", error=type(exc).__name__)
        decisions = [Decision.deny(Reason.PDP_ERROR, pdp.policy_version) for _ in asks]
    if any(decision.reason is Reason.PDP_TIMEOUT for decision in decisions):
        # The relations' read was cut off mid-statement: this transaction can go on neither
        # to act nor to record. Nothing was decided and nothing will be written: a
        # retryable 503 (the route's unit of work rolls back), never a 500 at its commit.
        raise StoreBusy()
    for ask, decision in zip(asks, decisions, strict=True):
        audit_decision(audit, session, ask, decision)
    return decisions
