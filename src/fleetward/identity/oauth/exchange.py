"""Per-request state for one call into Authlib's synchronous server.

An :class:`Exchange` is built by the async flow before the synchronous run (it carries what
only async code can find out: the verified DPoP key, the login session, pre-validated access
token claims) and read back after it (audit notes, revocations to carry out). Inside the run,
grants only record what must happen; the async side then records the audit events and calls
the revocation service in the same transaction. Not thread-safe: one request, one exchange.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.orm import Session

from fleetward.audit.events import Decision, EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import JsonValue
from fleetward.identity.credential_models import LoginSession
from fleetward.identity.oauth.urls import OAuthUrls
from fleetward.identity.oauth_models import RevocationKind
from fleetward.identity.tokens import AccessTokenClaims, AccessTokenIssuer


@dataclass(frozen=True, slots=True)
class AuditNote:
    name: EventName
    actor: Actor
    target: Target
    decision: Decision = Decision.ALLOWED
    reason: str | None = None
    details: dict[str, JsonValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    kind: RevocationKind
    subject: str
    reason: str
    # For a single access token: its expiry, after which the entry can be forgotten.
    until: datetime | None = None


@dataclass(slots=True)
class Exchange:
    urls: OAuthUrls
    now: datetime
    tokens: AccessTokenIssuer
    # RFC 9449: the thumbprint of a DPoP proof that already verified for this request.
    dpop_jkt: str | None = None
    # The browser's live login session, read (async) before the run; None if absent.
    login: LoginSession | None = None
    # The presented access token's claims, if it validated (revocation and introspection).
    presented_access: AccessTokenClaims | None = None
    notes: list[AuditNote] = field(default_factory=list)
    revocations: list[RevocationRequest] = field(default_factory=list)
    _session: Session | None = None

    @property
    def session(self) -> Session:
        if self._session is None:
            raise RuntimeError("the exchange is only usable inside its synchronous run")
        return self._session

    def bind(self, session: Session) -> Exchange:
        self._session = session
        return self

    def note(self, note: AuditNote) -> None:
        self.notes.append(note)

    def revoke(self, request: RevocationRequest) -> None:
        self.revocations.append(request)
