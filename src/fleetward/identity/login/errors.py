"""Login errors. JSON endpoints answer them as RFC 9457 problems; form pages re-render
with a generic message instead (``fleetward.api.login``)."""

from __future__ import annotations

from fleetward.core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    TooManyRequests,
    Unauthenticated,
)


class InvalidLoginRequest(InvalidInput):
    code = "invalid-login-request"
    title = "Invalid login request"


class CsrfRejected(Forbidden):
    code = "csrf-rejected"
    title = "Request not accepted"


class LoginThrottled(TooManyRequests):
    code = "login-throttled"
    title = "Too many attempts"


class NoPendingLogin(Unauthenticated):
    code = "no-pending-login"
    title = "Sign in with your password first"


class SecondFactorRejected(Unauthenticated):
    code = "second-factor-rejected"
    title = "Second factor not accepted"


class FactorNotAvailable(Forbidden):
    code = "factor-not-available"
    title = "This factor cannot be used here"


class NotSignedIn(Unauthenticated):
    code = "not-signed-in"
    title = "Sign in first"


class ReauthenticationRequired(Unauthenticated):
    code = "reauthentication-required"
    title = "Sign in again to do this"


class RegistrationRejected(InvalidInput):
    code = "webauthn-registration-rejected"
    title = "Security key not registered"


class CredentialAlreadyRegistered(Conflict):
    code = "webauthn-credential-exists"
    title = "Security key already registered"
