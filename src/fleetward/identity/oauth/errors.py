"""Errors of the authorization server.

Protocol errors are Authlib ``OAuth2Error`` subclasses: each owns its RFC wire code and
status, and Authlib renders them as RFC 6749 JSON (or a redirect to the client). Descriptions
are fixed text: never the rejected input, which Authlib would echo to the caller.
Registration errors are ordinary problem errors (RFC 9457) raised by the client registry.
"""

from __future__ import annotations

from authlib.oauth2.rfc6749.errors import OAuth2Error

from fleetward.core.errors import InvalidInput


class InvalidTargetError(OAuth2Error):  # type: ignore[misc]  # authlib is untyped
    """RFC 8707 section 2: the ``resource`` is unknown, repeated or not allowed to the client."""

    error = "invalid_target"


class InvalidDpopProofError(OAuth2Error):  # type: ignore[misc]
    """RFC 9449 section 5: the DPoP proof is missing (where required), invalid or for another
    key than the one the grant is bound to."""

    error = "invalid_dpop_proof"


class InvalidClientRegistration(InvalidInput):
    code = "invalid-client-registration"
    title = "Invalid client registration"
