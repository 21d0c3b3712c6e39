"""How the form pages answer an outcome: redirect on progress, re-render with a generic
message on refusal. Messages never say which part was wrong (username or password), and
the stable reason stays in the audit trail, not on the page."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from fleetward.identity.login import cookies, pending
from fleetward.identity.login.outcomes import Failure, Refused, SecondFactorNeeded, SignedIn
from fleetward.identity.login.request import LoginRequest
from fleetward.identity.login.runtime import LoginRuntime
from fleetward.identity.login.second_factor import SecondFactor

MFA_PAGE = "/login/mfa"

BAD_CREDENTIALS = "The username or password is not correct."
BAD_CODE = "That code was not accepted. Try again."
FORM_EXPIRED = "This form has expired. Please try again."
SIGN_IN_EXPIRED = "Your sign-in has expired. Please start again."

_SECOND_STEP: dict[Failure, str] = {
    Failure.BAD_TOTP: BAD_CODE,
    Failure.TOTP_REPLAYED: BAD_CODE,  # a replay looks like any wrong code to the person
    Failure.BAD_RECOVERY_CODE: BAD_CODE,
    Failure.FACTOR_NOT_AVAILABLE: "That method cannot be used for this sign-in.",
    Failure.RECOVERY_COOLDOWN: (
        "A recovery code was already used for this account in the last 24 hours."
    ),
}
_CANNOT_SIGN_IN: dict[Failure, str] = {
    Failure.MFA_NOT_ENROLLED: (
        "This account must use a second factor, and none is set up. "
        "Ask your administrator to enrol one."
    ),
    Failure.ACR_UNATTAINABLE: (
        "This application needs a security key or passkey, and none is registered."
    ),
}


def throttled_message(seconds: int) -> str:
    minutes = max(1, (seconds + 59) // 60)
    return f"Too many attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."


def page(
    request: Request, rt: LoginRuntime, template: str, *, status: int = 200, **context: Any
) -> Response:
    value, new = cookies.csrf_value(request, rt)
    response = rt.pages.render(
        template, status=status, csrf_token=rt.csrf.token_for(value), **context
    )
    if new:
        cookies.set_csrf(response, rt, value)
    return response


def login_page(
    request: Request,
    rt: LoginRuntime,
    login: LoginRequest,
    *,
    message: str | None = None,
    status: int = 200,
) -> Response:
    return page(request, rt, "login.html", status=status, login=login, message=message)


def message_page(
    request: Request, rt: LoginRuntime, heading: str, message: str, *, status: int
) -> Response:
    return page(request, rt, "message.html", status=status, heading=heading, message=message)


async def mfa_page(
    request: Request, rt: LoginRuntime, *, message: str | None = None, status: int = 200
) -> Response:
    offer = await SecondFactor(rt).offer(request.cookies.get(pending.COOKIE_NAME))
    if offer is None:
        return message_page(request, rt, "Sign in", SIGN_IN_EXPIRED, status=403)
    return page(request, rt, "mfa.html", status=status, offer=offer, message=message)


def signed_in(rt: LoginRuntime, outcome: SignedIn) -> Response:
    response = RedirectResponse(outcome.return_to, status_code=303)
    cookies.set_session(response, rt, outcome.session_cookie)
    cookies.clear_pending(response, rt)
    return response


def second_factor_needed(rt: LoginRuntime, outcome: SecondFactorNeeded) -> Response:
    response = RedirectResponse(MFA_PAGE, status_code=303)
    cookies.set_pending(response, rt, outcome.pending_cookie)
    return response


def with_retry_after(response: Response, refused: Refused) -> Response:
    if refused.retry_after is not None:
        response.headers["Retry-After"] = str(refused.retry_after)
    return response


async def refused_password(
    request: Request, rt: LoginRuntime, login: LoginRequest, refused: Refused
) -> Response:
    if refused.reason is Failure.THROTTLED:
        message = throttled_message(refused.retry_after or 60)
        response = login_page(request, rt, login, message=message, status=429)
        return with_retry_after(response, refused)
    if refused.reason in _CANNOT_SIGN_IN:
        return message_page(
            request, rt, "Cannot sign in", _CANNOT_SIGN_IN[refused.reason], status=403
        )
    return login_page(request, rt, login, message=BAD_CREDENTIALS, status=403)


async def refused_second_step(request: Request, rt: LoginRuntime, refused: Refused) -> Response:
    if refused.reason is Failure.NO_PENDING_LOGIN:
        return message_page(request, rt, "Sign in", SIGN_IN_EXPIRED, status=403)
    if refused.reason is Failure.THROTTLED:
        message = throttled_message(refused.retry_after or 60)
        return with_retry_after(await mfa_page(request, rt, message=message, status=429), refused)
    status = 429 if refused.reason is Failure.RECOVERY_COOLDOWN else 403
    message = _SECOND_STEP.get(refused.reason, BAD_CODE)
    return with_retry_after(await mfa_page(request, rt, message=message, status=status), refused)
