"""Checks every token grant shares: DPoP binding, step-up parameters, entitlement, reuse.

Reuse (a spent code, refresh token or device code presented again, or a lost race to spend
one) means the secret leaked or a client misbehaves; RFC 9700 asks to revoke what the grant
issued. Grants only *request* the family revocation here; the flow carries it out through the
revocation service after Authlib returns, in the same transaction as the refusal's audit
event, which is committed even though the response is an error.
"""

from __future__ import annotations

from datetime import datetime

from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidRequestError
from sqlalchemy.orm import Session

from fleetward.audit.events import Decision, EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.surfaces import Surface
from fleetward.identity.acr import Acr
from fleetward.identity.oauth.adapters import OAuthClient
from fleetward.identity.oauth.errors import InvalidDpopProofError
from fleetward.identity.oauth.exchange import AuditNote, Exchange, RevocationRequest
from fleetward.identity.oauth.policy import SURFACE_MIN_ACR
from fleetward.identity.oauth.principal import Principal
from fleetward.identity.oauth.targets import person_tenant
from fleetward.identity.oauth_models import AuthorizationCode, RefreshToken, RevocationKind

_MAX_AGE_DIGITS = 9
_MAX_AGE_LIMIT = 31 * 24 * 3600
_JKT_LENGTH = 43  # base64url of a SHA-256 thumbprint


def require_dpop_binding(exchange: Exchange, client: OAuthClient, bound_jkt: str | None) -> None:
    if client.requires_dpop and exchange.dpop_jkt is None:
        raise InvalidDpopProofError("A DPoP proof is required for this client.")
    if bound_jkt is not None and exchange.dpop_jkt != bound_jkt:
        # The grant is bound to one key; a proof by any other key (or none) proves nothing.
        raise InvalidDpopProofError("The DPoP key does not match the grant.")


def parse_dpop_jkt(value: str | None) -> str | None:
    """The optional ``dpop_jkt`` authorization request parameter (RFC 9449 section 10)."""
    if value is None:
        return None
    # isalnum() alone also takes non-ASCII letters and digits ("é", "٣"): base64url is ASCII.
    if len(value) != _JKT_LENGTH or not all(
        c.isascii() and (c.isalnum() or c in "-_") for c in value
    ):
        raise InvalidRequestError("dpop_jkt must be a base64url SHA-256 thumbprint.")
    return value


def parse_max_age(value: str | None) -> int | None:
    if value is None:
        return None
    if not value.isascii() or not value.isdigit() or len(value) > _MAX_AGE_DIGITS:
        raise InvalidRequestError("max_age must be a number of seconds.")
    seconds = int(value)
    # No login session lives this long, so a larger max_age constrains nothing (and the
    # login page, which receives it, accepts at most this much).
    return None if seconds > _MAX_AGE_LIMIT else seconds


def required_acr(acr_values: str | None, surface: Surface) -> Acr | None:
    """The weakest requested acr (meeting any listed value satisfies the request), raised to
    the surface's floor. Unknown values are refused rather than ignored."""
    requested: Acr | None = None
    if acr_values is not None:
        try:
            values = [Acr(v) for v in acr_values.split()]
        except ValueError:
            raise InvalidRequestError("acr_values names an unknown authentication class.") from None
        if not values:
            raise InvalidRequestError("acr_values is empty.")
        requested = min(values, key=lambda acr: acr.strength)
    floor = SURFACE_MIN_ACR.get(surface)
    if floor is None:
        return requested
    if requested is None or requested.strength < floor.strength:
        return floor
    return requested


def still_entitled(
    session: Session,
    *,
    user_id: str,
    tenant_id: str,
    surface: Surface,
    client: OAuthClient,
    now: datetime,
) -> bool:
    """Whether the person still acts in that tenant on that surface (a membership that ended
    since the grant ends what the grant can still mint)."""
    tenant = person_tenant(session, user_id, surface, client, now)
    return tenant is not None and tenant.id == tenant_id


def person_principal(
    exchange: Exchange,
    client: OAuthClient,
    row: AuthorizationCode | RefreshToken,
    *,
    family_id: str,
) -> Principal | None:
    """The person a code or refresh token speaks for, or None when they no longer act in the
    grant's tenant on its surface (what both grants mint from)."""
    surface = Surface(row.surface)
    if not still_entitled(
        exchange.session,
        user_id=row.user_id,
        tenant_id=row.tenant_id,
        surface=surface,
        client=client,
        now=exchange.now,
    ):
        return None
    return Principal(
        subject=row.user_id,
        subject_type="user",
        tenant_id=row.tenant_id,
        surface=surface,
        auth_time=row.auth_time,
        acr=row.acr,
        amr=tuple(row.amr),
        family_id=family_id,
        granted_scopes=tuple(row.scope.split()),
    )


def reuse_detected(
    exchange: Exchange,
    *,
    family_id: str,
    event: EventName,
    actor: Actor,
    target: Target,
    reason: str,
) -> Exception:
    """Request the family's revocation, note the audit event, return the error to raise."""
    exchange.revoke(RevocationRequest(RevocationKind.FAMILY, family_id, reason))
    exchange.note(AuditNote(event, actor, target, decision=Decision.DENIED, reason=reason))
    error: Exception = InvalidGrantError(
        description="The grant was already used; its tokens are revoked."
    )
    return error
