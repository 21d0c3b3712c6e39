"""The device page (``/oauth/device``): a logged-in person approves or denies a user code.

The page needs a login session strong enough for the requested surface (the same floor as
the authorization endpoint). The code is looked up only among pending, unexpired requests;
an unknown code and someone else's used code answer the same. Every lookup is counted
against the signed-in person and their network before it runs, and given back when the code
was a pending one (RFC 8628 section 5.1: wrong codes are guesses; the counters and their
blocks are the login throttle's, ``identity.login.limits``). The POST carries a CSRF token
bound to the login session and to that one device request; a refused one is audited
(``oauth:device:denied``, reason ``request-forgery``) and changes nothing. Approving records
who approved, in which tenant, and the login's acr/amr/auth_time, which the polling client's
tokens carry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError
from starlette.requests import Request
from starlette.responses import Response

from fleetward.audit.events import Decision, EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.surfaces import Surface
from fleetward.identity.credential_models import LoginSession
from fleetward.identity.login import trail
from fleetward.identity.login.limits import Factor, client_network, keys_for
from fleetward.identity.login.throttle import Blocked, Reservation, Throttle
from fleetward.identity.models import User
from fleetward.identity.oauth.authorize import login_redirect, session_satisfies
from fleetward.identity.oauth.clients import load_client
from fleetward.identity.oauth.consent import ConsentSubject, record_consent
from fleetward.identity.oauth.csrf import CsrfGuard
from fleetward.identity.oauth.exchange import AuditNote, Exchange
from fleetward.identity.oauth.http import BadForm, read_form
from fleetward.identity.oauth.pages import Outcome, Page, message_page, respond
from fleetward.identity.oauth.policy import SURFACE_MIN_ACR
from fleetward.identity.oauth.running import csrf_guard, new_exchange, settle
from fleetward.identity.oauth.targets import person_tenant
from fleetward.identity.oauth.urls import DEVICE_PATH
from fleetward.identity.oauth_models import DeviceAuthorization, DeviceAuthorizationStatus
from fleetward.identity.sessions import COOKIE_NAME, LoginSessions
from fleetward.platform import Platform
from fleetward.services import ServiceContext

DEVICE_PURPOSE: Final = "device"
USER_CODE_ALPHABET: Final = frozenset("BCDFGHJKLMNPQRSTVWXZ")  # Authlib's, no vowels
_TITLE: Final = "Device sign-in"


def normalise_user_code(raw: object) -> str | None:
    """``bcdf ghjk``, ``BCDF-GHJK`` and ``bcdfghjk`` all mean ``BCDF-GHJK``."""
    if not isinstance(raw, str) or len(raw) > 16:
        return None
    letters = "".join(ch for ch in raw.upper() if ch not in "- ")
    if len(letters) != 8 or not set(letters) <= USER_CODE_ALPHABET:
        return None
    return f"{letters[:4]}-{letters[4:]}"


@dataclass(frozen=True, slots=True)
class DeviceAnswer:
    csrf_token: str
    approve: bool


class DevicePage:
    """One visit to the device page, inside a synchronous run on the request's session."""

    def __init__(self, exchange: Exchange, csrf: CsrfGuard) -> None:
        self.exchange = exchange
        self.csrf = csrf
        # Whether the code looked up was a pending, unexpired request (not a guess).
        self.matched = False

    def run(self, raw_code: str | None, answer: DeviceAnswer | None) -> Outcome:
        code = normalise_user_code(raw_code) if raw_code is not None else None
        back = DEVICE_PATH + (f"?{urlencode({'user_code': code})}" if code else "")
        login = self.exchange.login
        if login is None:
            return login_redirect(back, max_age=None, acr=None)
        if raw_code is None:
            return Page("device_enter.html", {"title": _TITLE, "action": DEVICE_PATH})
        row = self._pending(code)
        if row is None:
            return message_page(_TITLE, "unknown_user_code")
        surface = Surface(row.surface)
        floor = SURFACE_MIN_ACR.get(surface)
        acr = None if floor is None else floor.value
        if not session_satisfies(login, acr=acr, max_age=None, now=self.exchange.now):
            return login_redirect(back, max_age=None, acr=acr)
        if answer is None:
            return self._confirm_page(row, login.id, login.user_id)
        if not self.csrf.verify(
            answer.csrf_token,
            purpose=DEVICE_PURPOSE,
            session_id=login.id,
            binding=row.id,
            now=self.exchange.now,
        ):
            self._note(
                EventName.OAUTH_DEVICE_DENIED,
                row,
                login.user_id,
                Decision.DENIED,
                reason="request-forgery",
            )
            return message_page(_TITLE, "request_forgery", status=403)
        client = load_client(self.exchange.session, row.client_id)
        tenant = (
            None
            if client is None
            else person_tenant(
                self.exchange.session, login.user_id, surface, client, self.exchange.now
            )
        )
        if not answer.approve or client is None or tenant is None:
            row.status = DeviceAuthorizationStatus.DENIED
            self._note(EventName.OAUTH_DEVICE_DENIED, row, login.user_id, Decision.DENIED)
            return message_page(_TITLE, "access_denied", status=200)
        row.status = DeviceAuthorizationStatus.APPROVED
        row.user_id = login.user_id
        row.tenant_id = tenant.id
        row.auth_time = login.auth_time
        row.acr = login.acr
        row.amr = list(login.amr)
        record_consent(
            self.exchange.session,
            ConsentSubject(login.user_id, row.client_id, surface, tenant.id),
            scopes=row.scope.split(),
            now=self.exchange.now,
        )
        self._note(EventName.OAUTH_DEVICE_APPROVED, row, login.user_id, Decision.ALLOWED)
        return Page(
            "message.html",
            {
                "title": "Device connected",
                "message": "You can return to your device now.",
                "code": "",
            },
        )

    def _pending(self, code: str | None) -> DeviceAuthorization | None:
        if code is None:
            return None
        row = self.exchange.session.scalar(
            select(DeviceAuthorization).where(DeviceAuthorization.user_code == code)
        )
        if (
            row is None
            or row.status is not DeviceAuthorizationStatus.PENDING
            or row.expires_at <= self.exchange.now
        ):
            return None
        self.matched = True
        return row

    def _confirm_page(self, row: DeviceAuthorization, session_id: str, user_id: str) -> Page:
        client = load_client(self.exchange.session, row.client_id)
        user = self.exchange.session.get(User, user_id)
        return Page(
            "device_confirm.html",
            {
                "title": _TITLE,
                "client_name": client.row.name if client else row.client_id,
                "user_code": row.user_code,
                "user_name": user.display_name if user else "you",
                "surface": row.surface,
                "scopes": row.scope.split(),
                "action": DEVICE_PATH,
                "csrf_token": self.csrf.issue(
                    purpose=DEVICE_PURPOSE,
                    session_id=session_id,
                    binding=row.id,
                    now=self.exchange.now,
                ),
            },
        )

    def _note(
        self,
        name: EventName,
        row: DeviceAuthorization,
        user_id: str,
        decision: Decision,
        *,
        reason: str | None = None,
    ) -> None:
        self.exchange.note(
            AuditNote(
                name,
                actor=Actor.user(user_id, row.tenant_id),
                target=Target("device_authorization", row.id, row.tenant_id),
                decision=decision,
                reason=reason,
                details={"client_id": row.client_id},
            )
        )


async def _visit(
    platform: Platform, request: Request, raw_code: str | None, answer: DeviceAnswer | None
) -> Response:
    guard = csrf_guard(platform)
    cookie = request.cookies.get(COOKIE_NAME)
    # The lookup is counted in a transaction of its own, committed before the code is looked
    # up (as a password attempt is): parallel guesses each pay, whatever the visit does next.
    async with platform.services() as (uow, ctx):
        login = await LoginSessions(ctx).current(cookie)
        reserved = await _count_lookup(ctx, request, login, raw_code)
        await uow.commit()
    if isinstance(reserved, Blocked):
        return _throttled(reserved)
    try:
        async with platform.services() as (uow, ctx):
            exchange = new_exchange(platform)
            exchange.login = await LoginSessions(ctx).current(cookie)

            def run(session: Session) -> tuple[Outcome, bool]:
                page = DevicePage(exchange.bind(session), guard)
                return page.run(raw_code, answer), page.matched

            outcome, matched = await ctx.session.run_sync(run)
            if reserved is not None and matched:
                await Throttle(ctx).refund(reserved, ends_streak=False)
            await settle(platform, ctx, exchange)
            await uow.commit()
    except StaleDataError:
        # The code was used, denied or revoked between this visit's read and its write:
        # nothing of the visit is written, and the code is no longer one to approve.
        return respond(message_page(_TITLE, "unknown_user_code"))
    return respond(outcome)


async def _count_lookup(
    ctx: ServiceContext, request: Request, login: LoginSession | None, raw_code: str | None
) -> Reservation | Blocked | None:
    """Count the lookup a visit is about to make (a signed-in person submitting a well-formed
    code), or refuse it when a counter is blocked; None when no code will be looked up."""
    if login is None or raw_code is None or normalise_user_code(raw_code) is None:
        return None
    network = client_network(request.client.host if request.client else None)
    keys = keys_for(Factor.USER_CODE, account=login.user_id, network=network)
    reserved = await Throttle(ctx).reserve(keys)
    if isinstance(reserved, Reservation):
        # A block this lookup started is an audit event, as a login lockout is.
        for key in reserved.started_lockout:
            trail.locked_out(ctx, Target("user", login.user_id), key)
    return reserved


def _throttled(blocked: Blocked) -> Response:
    response = respond(message_page(_TITLE, "too_many_codes", status=429))
    response.headers["Retry-After"] = str(blocked.retry_after)
    return response


async def device_get(platform: Platform, request: Request) -> Response:
    codes = request.query_params.getlist("user_code")
    if len(codes) > 1:
        return respond(message_page(_TITLE, "invalid_request"))
    return await _visit(platform, request, codes[0] if codes else None, None)


async def device_post(platform: Platform, request: Request) -> Response:
    try:
        fields: dict[str, list[str]] = {}
        for name, value in await read_form(request):
            fields.setdefault(name, []).append(value)
        (raw_code,) = fields.get("user_code", [])
        (csrf_token,) = fields.get("csrf_token", [])
        (decision,) = fields.get("decision", [])
    except (BadForm, ValueError):
        return respond(message_page(_TITLE, "invalid_request"))
    if decision not in ("approve", "deny"):
        return respond(message_page(_TITLE, "invalid_request"))
    answer = DeviceAnswer(csrf_token=csrf_token, approve=decision == "approve")
    return await _visit(platform, request, raw_code, answer)
