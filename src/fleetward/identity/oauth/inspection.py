"""Validating a presented access token before Authlib runs (revocation, introspection).

The validator is async (its revocation check may do I/O), so it cannot run inside Authlib's
synchronous call. The only thing read before the signature is checked is ``aud``, and only
to choose which surface to validate against; the validator then checks everything,
including that very audience.
"""

from __future__ import annotations

from fleetward.core.surfaces import Surface
from fleetward.identity.tokens import AccessTokenClaims, AccessTokenValidator, InvalidToken
from fleetward.identity.tokens.compact import CompactError, split_compact

_BY_AUDIENCE = {surface.audience: surface for surface in Surface}


def _unverified_surface(raw: str) -> Surface | None:
    try:
        unverified_payload = split_compact(raw).decode_payload()
    except CompactError:
        return None
    aud = unverified_payload.get("aud")
    if isinstance(aud, list) and len(aud) == 1:
        aud = aud[0]
    return _BY_AUDIENCE.get(aud) if isinstance(aud, str) else None


async def validated_access_token(
    validator: AccessTokenValidator, raw: str | None
) -> AccessTokenClaims | None:
    """The verified claims of ``raw`` if it is a live access token of ours, else None."""
    if not raw or raw.count(".") != 2:
        return None
    surface = _unverified_surface(raw)
    if surface is None:
        return None
    try:
        return await validator.validate(raw, surface=surface)
    except InvalidToken:
        return None
