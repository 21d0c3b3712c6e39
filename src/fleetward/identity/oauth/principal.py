"""Who a token is for: the facts a grant establishes and the minter turns into a token.

Authlib passes a "user" object from the grant to the token generator; ours is a
:class:`Principal`, so the generator never has to look anything up again and cannot mix the
facts of two grants.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fleetward.core.surfaces import Surface
from fleetward.identity.tokens import SubjectType


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    subject_type: SubjectType
    tenant_id: str
    surface: Surface
    auth_time: datetime
    acr: str
    amr: tuple[str, ...]
    # The family every token of this grant belongs to: the id of the code or device
    # authorization that started it (None for client credentials, which have no family).
    family_id: str | None
    # Everything the grant allows; a refresh may narrow the access token, never the grant.
    granted_scopes: tuple[str, ...]
    # Refresh tokens of this grant must be presented with a DPoP proof of this key.
    refresh_jkt: str | None = None
