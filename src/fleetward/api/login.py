"""Login pages and the signed-in person's own factors (surface ``oauth``).

Form routes render HTML and answer refusals by re-rendering the form with a generic
message; JSON routes (the WebAuthn ceremonies) answer RFC 9457 problems. Every state-changing
route checks the CSRF token first (form field, or ``X-CSRF-Token`` for JSON). The logic
lives in ``fleetward.identity.login``; this module only translates HTTP.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from fleetward.api.bodies import StrictBody
from fleetward.api.routing import infrastructure_router
from fleetward.catalog.entry import (
    AUTHENTICATED,
    PUBLIC,
    CallerType,
    CatalogEntry,
    DataClass,
    Impact,
    catalogued,
)
from fleetward.identity.login import answers, cookies, csrf, pending
from fleetward.identity.login.account import Account
from fleetward.identity.login.errors import (
    CsrfRejected,
    FactorNotAvailable,
    InvalidLoginRequest,
    LoginThrottled,
    NoPendingLogin,
    NotSignedIn,
    ReauthenticationRequired,
    SecondFactorRejected,
)
from fleetward.identity.login.flow import PasswordStep
from fleetward.identity.login.limits import client_network
from fleetward.identity.login.outcomes import (
    Failure,
    Refused,
    SecondFactorNeeded,
    SignedIn,
)
from fleetward.identity.login.request import DEFAULT_RETURN_TO, LoginRequest
from fleetward.identity.login.runtime import LoginRuntime
from fleetward.identity.login.second_factor import (
    Method,
    RecoveryMethod,
    SecondFactor,
    TotpMethod,
    WebAuthnMethod,
)
from fleetward.identity.sessions import COOKIE_NAME as SESSION_COOKIE
from fleetward.identity.sessions import satisfies

router = infrastructure_router()

SURFACE = "oauth"
_ANONYMOUS = frozenset({CallerType.ANONYMOUS})
_SELF = frozenset({CallerType.USER})
_IMPACT = frozenset({Impact.PRIVACY, Impact.SAFETY})  # an account reaches its vehicles


def _entry(purpose: str, *, signed_in: bool = False, rate: int = 20) -> CatalogEntry:
    return CatalogEntry(
        surface=SURFACE,
        owner="identity-team",
        purpose=purpose,
        callers=_SELF if signed_in else _ANONYMOUS,
        # Signed-in routes act only on the caller's own account (session cookie).
        permission=AUTHENTICATED if signed_in else PUBLIC,
        data_class=DataClass.CREDENTIAL,
        objects=("user",) if signed_in else (),
        impact=_IMPACT,
        expected_rate_per_minute=rate,
        tags=("login",),
    )


class LoginForm(StrictBody):
    csrf_token: str = ""
    username: str = ""
    password: str = ""
    return_to: str = ""
    client_id: str = ""
    acr: str = ""
    max_age: str = ""


class CodeForm(StrictBody):
    csrf_token: str = ""
    code: str = ""


class CsrfForm(StrictBody):
    csrf_token: str = ""


class WebAuthnResponse(StrictBody):
    # The browser's PublicKeyCredential as JSON; py_webauthn parses and checks its shape.
    credential: dict[str, Any]


def _runtime(request: Request) -> LoginRuntime:
    # Built on first use from the platform the composition root put on app.state.
    state = request.app.state
    runtime = getattr(state, "login_runtime", None)
    if not isinstance(runtime, LoginRuntime):
        runtime = LoginRuntime.build(state.platform)
        state.login_runtime = runtime
    return runtime


def _network(request: Request) -> str:
    return client_network(request.client.host if request.client else None)


def _require_csrf_header(request: Request, rt: LoginRuntime) -> None:
    if not cookies.csrf_ok(request, rt, request.headers.get(csrf.HEADER)):
        raise CsrfRejected("missing or invalid CSRF token", reason="csrf")


async def _finish(request: Request, rt: LoginRuntime, outcome: SignedIn) -> Response:
    # A new login never continues an old session: end whatever the browser held.
    await Account(rt).sign_out(request.cookies.get(SESSION_COOKIE))
    return answers.signed_in(rt, outcome)


@router.get("/login")
@catalogued(_entry("login page: username and password form", rate=30))
async def login_form(request: Request) -> Response:
    rt = _runtime(request)
    query = request.query_params
    try:
        login = LoginRequest.parse(
            return_to=query.get("return_to"),
            client_id=query.get("client_id"),
            acr=query.get("acr"),
            max_age=query.get("max_age"),
        )
    except InvalidLoginRequest:
        return answers.message_page(
            request, rt, "Cannot sign in", "The sign-in request is not valid.", status=400
        )
    session = await Account(rt).current_session(request.cookies.get(SESSION_COOKIE))
    now = rt.platform.clock.now()
    if session is not None and satisfies(
        session, required_acr=login.required_acr, max_age=login.max_age, now=now
    ):
        return RedirectResponse(login.return_to, status_code=303)
    return answers.login_page(request, rt, login)


@router.post("/login")
@catalogued(_entry("password login (first factor)"))
async def login_submit(request: Request, form: Annotated[LoginForm, Form()]) -> Response:
    rt = _runtime(request)
    try:
        login = LoginRequest.parse(
            return_to=form.return_to, client_id=form.client_id, acr=form.acr, max_age=form.max_age
        )
    except InvalidLoginRequest:
        return answers.message_page(
            request, rt, "Cannot sign in", "The sign-in request is not valid.", status=400
        )
    if not cookies.csrf_ok(request, rt, form.csrf_token):
        return answers.login_page(request, rt, login, message=answers.FORM_EXPIRED, status=403)
    outcome = await PasswordStep(rt).attempt(
        form.username, form.password, login, network=_network(request)
    )
    if isinstance(outcome, SignedIn):
        return await _finish(request, rt, outcome)
    if isinstance(outcome, SecondFactorNeeded):
        return answers.second_factor_needed(rt, outcome)
    return await answers.refused_password(request, rt, login, outcome)


@router.get("/login/mfa")
@catalogued(_entry("second-step page: TOTP, security key or recovery code", rate=30))
async def second_step_form(request: Request) -> Response:
    return await answers.mfa_page(request, _runtime(request))


async def _second_step(request: Request, token: str, method: Method) -> Response:
    rt = _runtime(request)
    if not cookies.csrf_ok(request, rt, token):
        return await answers.mfa_page(request, rt, message=answers.FORM_EXPIRED, status=403)
    outcome = await SecondFactor(rt).attempt(
        request.cookies.get(pending.COOKIE_NAME), method, network=_network(request)
    )
    if isinstance(outcome, SignedIn):
        return await _finish(request, rt, outcome)
    return await answers.refused_second_step(request, rt, outcome)


@router.post("/login/totp")
@catalogued(_entry("second factor: one-time code from an authenticator app"))
async def login_totp(request: Request, form: Annotated[CodeForm, Form()]) -> Response:
    return await _second_step(request, form.csrf_token, TotpMethod(_runtime(request), form.code))


@router.post("/login/recovery")
@catalogued(_entry("second factor: single-use recovery code (cool-down 24 h)", rate=5))
async def login_recovery(request: Request, form: Annotated[CodeForm, Form()]) -> Response:
    method = RecoveryMethod(_runtime(request), form.code)
    return await _second_step(request, form.csrf_token, method)


def _problem_for(refused: Refused) -> Exception:
    if refused.reason is Failure.THROTTLED:
        seconds = str(refused.retry_after or 60)
        return LoginThrottled(
            "too many attempts", reason="throttled", headers={"Retry-After": seconds}
        )
    if refused.reason is Failure.NO_PENDING_LOGIN:
        return NoPendingLogin("sign in with your password first", reason="no-pending-login")
    if refused.reason is Failure.FACTOR_NOT_AVAILABLE:
        return FactorNotAvailable("no usable security key", reason="factor-not-available")
    return SecondFactorRejected("the security key was not accepted", reason=refused.reason)


@router.post("/login/webauthn/options")
@catalogued(_entry("second factor: WebAuthn assertion options (challenge)"))
async def login_webauthn_options(request: Request) -> JSONResponse:
    rt = _runtime(request)
    _require_csrf_header(request, rt)
    options = await SecondFactor(rt).webauthn_options(request.cookies.get(pending.COOKIE_NAME))
    if isinstance(options, Refused):
        raise _problem_for(options)
    return JSONResponse(options, headers={"Cache-Control": "no-store"})


@router.post("/login/webauthn/verify")
@catalogued(_entry("second factor: verify a WebAuthn assertion"))
async def login_webauthn_verify(request: Request, body: WebAuthnResponse) -> JSONResponse:
    rt = _runtime(request)
    _require_csrf_header(request, rt)
    outcome = await SecondFactor(rt).attempt(
        request.cookies.get(pending.COOKIE_NAME),
        WebAuthnMethod(rt, body.credential),
        network=_network(request),
    )
    if isinstance(outcome, Refused):
        raise _problem_for(outcome)
    # A new login never continues an old session: end whatever the browser held.
    await Account(rt).sign_out(request.cookies.get(SESSION_COOKIE))
    response = JSONResponse({"redirect": outcome.return_to}, headers={"Cache-Control": "no-store"})
    cookies.set_session(response, rt, outcome.session_cookie)
    cookies.clear_pending(response, rt)
    return response


@router.post("/logout")
@catalogued(_entry("end the browser's login session", signed_in=True))
async def logout(request: Request, form: Annotated[CsrfForm, Form()]) -> Response:
    rt = _runtime(request)
    if not cookies.csrf_ok(request, rt, form.csrf_token):
        return answers.message_page(request, rt, "Sign out", answers.FORM_EXPIRED, status=403)
    await Account(rt).sign_out(request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/login", status_code=303)
    cookies.clear_session(response, rt)
    return response


@router.get("/account")
@catalogued(_entry("the signed-in person's own account page", signed_in=True, rate=30))
async def account_page(request: Request) -> Response:
    rt = _runtime(request)
    try:
        view = await Account(rt).view(request.cookies.get(SESSION_COOKIE))
    except NotSignedIn:
        return RedirectResponse("/login", status_code=303)
    return answers.page(
        request, rt, "account.html", user=view.user, keys=view.keys, codes=view.codes, message=None
    )


@router.post("/account/recovery-codes")
@catalogued(_entry("replace one's recovery codes (shown once)", signed_in=True, rate=5))
async def recovery_codes(request: Request, form: Annotated[CsrfForm, Form()]) -> Response:
    rt = _runtime(request)
    if not cookies.csrf_ok(request, rt, form.csrf_token):
        return answers.message_page(request, rt, "Recovery codes", answers.FORM_EXPIRED, status=403)
    try:
        codes = await Account(rt).new_recovery_codes(request.cookies.get(SESSION_COOKIE))
    except NotSignedIn:
        return RedirectResponse("/login", status_code=303)
    except (ReauthenticationRequired, FactorNotAvailable) as refused:
        return answers.message_page(request, rt, "Recovery codes", refused.detail, status=403)
    return answers.page(request, rt, "codes.html", codes=codes)


@router.post("/account/webauthn/register/options")
@catalogued(_entry("WebAuthn registration options for one's own account", signed_in=True))
async def register_options(request: Request) -> JSONResponse:
    rt = _runtime(request)
    _require_csrf_header(request, rt)
    options = await Account(rt).registration_options(request.cookies.get(SESSION_COOKIE))
    return JSONResponse(options, headers={"Cache-Control": "no-store"})


@router.post("/account/webauthn/register/verify")
@catalogued(_entry("register a security key on one's own account", signed_in=True))
async def register_verify(request: Request, body: WebAuthnResponse) -> JSONResponse:
    rt = _runtime(request)
    _require_csrf_header(request, rt)
    await Account(rt).register(request.cookies.get(SESSION_COOKIE), body.credential)
    return JSONResponse(
        {"registered": True, "next": DEFAULT_RETURN_TO},
        status_code=201,
        headers={"Cache-Control": "no-store"},
    )
