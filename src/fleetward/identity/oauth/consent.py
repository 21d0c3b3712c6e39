"""Remembered consent: what a person has allowed a client (``oauth_consents``).

Consent is per person, client, surface and tenant, for a set of scopes: what a person allowed
a client's mobile app is not what they allow the same client on another surface, nor while
acting for another tenant (scope names repeat across surfaces; their data does not). An
authorization request whose scopes are all covered by remembered consent for its surface and
tenant skips the consent screen; anything new shows it. A new decision supersedes the
earlier rows (they are ended, not deleted), so the current consent is always one row that
says exactly what was allowed. A scope shown on the screen and left unticked is withdrawn
from it. Decisions of one person are taken one at a time (their row is locked), so two at
once cannot each add a row without ending the other's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.identity.models import User
from fleetward.identity.oauth_models import ConsentGrant


@dataclass(frozen=True, slots=True)
class ConsentSubject:
    """Who allowed whom, where: a consent is remembered for exactly this."""

    user_id: str
    client_id: str
    surface: Surface
    tenant_id: str


def _active(session: Session, subject: ConsentSubject) -> list[ConsentGrant]:
    return list(
        session.scalars(
            select(ConsentGrant).where(
                ConsentGrant.user_id == subject.user_id,
                ConsentGrant.client_id == subject.client_id,
                ConsentGrant.surface == subject.surface.value,
                ConsentGrant.tenant_id == subject.tenant_id,
                ConsentGrant.revoked_at.is_(None),
            )
        )
    )


def consented_scopes(session: Session, subject: ConsentSubject) -> frozenset[str]:
    return frozenset(s for grant in _active(session, subject) for s in grant.scopes)


def record_consent(
    session: Session,
    subject: ConsentSubject,
    *,
    scopes: Iterable[str],
    now: datetime,
    withheld: Iterable[str] = (),
) -> ConsentGrant:
    """Remember ``scopes`` on top of what was allowed before, minus ``withheld``: scopes the
    person was shown and left unticked. Their latest answer wins, or a scope they just took
    back would stay remembered and the client would get it on its next silent request."""
    # The person's row is locked until the transaction ends (PostgreSQL; on SQLite the
    # first write takes the store's write lock): a second decision waits here, then reads
    # this one's row as earlier and ends it. Without it, two decisions at once each end only
    # the rows they can see and both stay active. (NO KEY: rows that merely refer to the
    # person are not held up.)
    session.execute(
        select(User.id).where(User.id == subject.user_id).with_for_update(key_share=True)
    )
    earlier = _active(session, subject)
    kept = {s for grant in earlier for s in grant.scopes} - set(withheld)
    allowed = sorted({*scopes, *kept})
    for grant in earlier:
        grant.revoked_at = now
    grant = ConsentGrant(
        id=new_id("ocg"),
        user_id=subject.user_id,
        client_id=subject.client_id,
        surface=subject.surface.value,
        tenant_id=subject.tenant_id,
        scopes=allowed,
        granted_at=now,
        revoked_at=None,
    )
    session.add(grant)
    return grant
