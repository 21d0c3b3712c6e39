"""Remembered consent: what a person has allowed a client (``oauth_consents``).

Consent is per person and client, for a set of scopes. An authorization request whose
scopes are all covered by remembered consent skips the consent screen; anything new shows
it. A new decision supersedes the earlier rows (they are ended, not deleted), so the current
consent is always one row that says exactly what was allowed. A scope shown on the screen and
left unticked is withdrawn from it.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from fleetward.core.ids import new_id
from fleetward.identity.oauth_models import ConsentGrant


def _active(session: Session, user_id: str, client_id: str) -> list[ConsentGrant]:
    return list(
        session.scalars(
            select(ConsentGrant).where(
                ConsentGrant.user_id == user_id,
                ConsentGrant.client_id == client_id,
                ConsentGrant.revoked_at.is_(None),
            )
        )
    )


def consented_scopes(session: Session, user_id: str, client_id: str) -> frozenset[str]:
    return frozenset(s for grant in _active(session, user_id, client_id) for s in grant.scopes)


def record_consent(
    session: Session,
    *,
    user_id: str,
    client_id: str,
    scopes: Iterable[str],
    now: datetime,
    withheld: Iterable[str] = (),
) -> ConsentGrant:
    """Remember ``scopes`` on top of what was allowed before, minus ``withheld``: scopes the
    person was shown and left unticked. Their latest answer wins, or a scope they just took
    back would stay remembered and the client would get it on its next silent request."""
    earlier = _active(session, user_id, client_id)
    kept = {s for grant in earlier for s in grant.scopes} - set(withheld)
    allowed = sorted({*scopes, *kept})
    for grant in earlier:
        grant.revoked_at = now
    grant = ConsentGrant(
        id=new_id("ocg"),
        user_id=user_id,
        client_id=client_id,
        scopes=allowed,
        granted_at=now,
        revoked_at=None,
    )
    session.add(grant)
    return grant
