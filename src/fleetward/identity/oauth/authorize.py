"""The authorization endpoint: GET shows consent (or redirects), POST takes the decision.

Order of checks, each failing closed:

1. Authlib validates the request (client, exact redirect URI, response type, scope, S256
   PKCE; our grant adds resource, acr_values, max_age, dpop_jkt). Errors before the redirect
   URI is trusted are shown as a page; after, they go back to the client (RFC 6749 4.1.2.1).
2. A login session strong and fresh enough (``acr_values``, the surface's floor,
   ``max_age``), else a redirect to the login page, which comes back here when done.
3. On POST, the CSRF token: bound to this login session and this exact request (a refused
   one is audited as a denied consent, reason ``request-forgery``).
4. The tenant: exactly one active membership of the kind the surface needs, else
   ``access_denied``.
5. Consent: remembered consent covering every requested scope skips the screen; otherwise
   the screen, whose answer (possibly fewer scopes) is remembered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from authlib.oauth2.rfc6749.errors import OAuth2Error
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from fleetward.audit.events import Decision, EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.identity.acr import Acr
from fleetward.identity.credential_models import LoginSession
from fleetward.identity.models import Tenant, User
from fleetward.identity.oauth.adapters import OAuthClient
from fleetward.identity.oauth.consent import ConsentSubject, consented_scopes, record_consent
from fleetward.identity.oauth.csrf import CsrfGuard, binding_of
from fleetward.identity.oauth.exchange import AuditNote
from fleetward.identity.oauth.http import (
    BadForm,
    FleetwardRequest,
    Pairs,
    parse_pairs,
    read_form,
    repeated,
)
from fleetward.identity.oauth.pages import Outcome, Page, Redirect, message_page, origin_of, respond
from fleetward.identity.oauth.principal import Principal
from fleetward.identity.oauth.running import csrf_guard, new_exchange, run_authlib, settle
from fleetward.identity.oauth.server import FleetwardAuthorizationServer
from fleetward.identity.oauth.targets import person_tenant
from fleetward.identity.oauth.urls import AUTHORIZE_PATH, LOGIN_PATH, OAuthUrls
from fleetward.identity.sessions import COOKIE_NAME, LoginSessions, satisfies
from fleetward.platform import Platform

CONSENT_PURPOSE = "consent"
_TITLE = "Sign-in request refused"


@dataclass(frozen=True, slots=True)
class ConsentAnswer:
    csrf_token: str
    approve: bool
    scopes: frozenset[str]


def login_redirect(return_to: str, *, max_age: int | None, acr: str | None) -> Redirect:
    """To the login page, which sends the browser back to ``return_to`` (a path of ours)."""
    params = [("return_to", return_to)]
    if max_age is not None:
        params.append(("max_age", str(max_age)))
    if acr is not None:
        params.append(("acr", acr))
    return Redirect(f"{LOGIN_PATH}?{urlencode(params)}", status=303)


def session_satisfies(
    login: LoginSession, *, acr: str | None, max_age: int | None, now: datetime
) -> bool:
    try:
        required = None if acr is None else Acr(acr)
        return satisfies(login, required_acr=required, max_age=max_age, now=now)
    except ValueError:  # a session with an acr we no longer know satisfies nothing
        return False


class AuthorizationStep:
    """One pass through the endpoint, inside Authlib's synchronous run."""

    def __init__(
        self, server: FleetwardAuthorizationServer, csrf: CsrfGuard, request_string: str
    ) -> None:
        self.server = server
        self.exchange = server.exchange
        self.csrf = csrf
        self.request_string = request_string

    @property
    def session(self) -> Session:
        return self.exchange.session

    def run(self, request: FleetwardRequest, answer: ConsentAnswer | None) -> Outcome:
        try:
            grant = self.server.get_consent_grant(request, end_user=None)
        except OAuth2Error as error:
            return self._error(request, error)
        facts = request.facts
        login = self.exchange.login
        if login is None or not session_satisfies(
            login, acr=facts.required_acr, max_age=facts.max_age, now=self.exchange.now
        ):
            return self._to_login(request)
        client: OAuthClient = request.client
        binding = binding_of(self.request_string)
        if answer is not None and not self.csrf.verify(
            answer.csrf_token,
            purpose=CONSENT_PURPOSE,
            session_id=login.id,
            binding=binding,
            now=self.exchange.now,
        ):
            self._note_denied(login, client, "request-forgery")
            return message_page(_TITLE, "request_forgery", status=403)
        if facts.surface is None:
            raise RuntimeError("the grant did not resolve a surface")
        tenant = person_tenant(
            self.session, login.user_id, facts.surface, client, self.exchange.now
        )
        if tenant is None:
            self._note_denied(login, client, "no-single-tenant")
            return self._decide(request, grant, None)
        requested = tuple(request.scope.split())
        subject = ConsentSubject(login.user_id, client.id, facts.surface, tenant.id)
        if answer is None:
            remembered = consented_scopes(self.session, subject)
            if not set(requested) <= remembered:
                return self._consent_page(request, login, tenant, requested, binding)
            granted = requested
        elif answer.approve:
            granted = tuple(s for s in requested if s in answer.scopes)
            if not granted:
                self._note_denied(login, client, "nothing-consented")
                return self._decide(request, grant, None)
            record_consent(
                self.session,
                subject,
                scopes=granted,
                now=self.exchange.now,
                withheld=[s for s in requested if s not in granted],
            )
            self.exchange.note(
                AuditNote(
                    EventName.OAUTH_CONSENT_GRANTED,
                    actor=Actor.user(login.user_id, tenant.id),
                    target=Target("oauth_client", client.id, tenant.id),
                    details={"scopes": list(granted)},
                )
            )
        else:
            self._note_denied(login, client, "consent-denied")
            return self._decide(request, grant, None)
        principal = Principal(
            subject=login.user_id,
            subject_type="user",
            tenant_id=tenant.id,
            surface=facts.surface,
            auth_time=login.auth_time,
            acr=login.acr,
            amr=tuple(login.amr),
            family_id=None,
            granted_scopes=granted,
        )
        return self._decide(request, grant, principal)

    def _decide(
        self, request: FleetwardRequest, grant: object, principal: Principal | None
    ) -> Outcome:
        # Authlib issues the code (or access_denied) and adds RFC 9207's iss.
        response = self.server.create_authorization_response(
            request, grant_user=principal, grant=grant
        )
        return Redirect(response.location or "/", status=302)

    def _error(self, request: FleetwardRequest, error: OAuth2Error) -> Outcome:
        if not error.redirect_uri:
            # The client or its redirect URI is not trusted: never redirect there.
            return message_page(_TITLE, str(error.error))
        response = self.server.handle_error_response(request, error)
        self.server.issuer_parameter.add_issuer_parameter(self.server, response)
        return Redirect(response.location or "/", status=302)

    def _to_login(self, request: FleetwardRequest) -> Redirect:
        facts = request.facts
        # max_age is handed to the login page, not kept in the way back: the fresh login it
        # forces satisfies it, and keeping it could loop when max_age is 0.
        back = [
            (name, value)
            for name, values in request.payload.datalist.items()
            if name != "max_age"
            for value in values
        ]
        return login_redirect(
            f"{AUTHORIZE_PATH}?{urlencode(back)}", max_age=facts.max_age, acr=facts.required_acr
        )

    def _consent_page(
        self,
        request: FleetwardRequest,
        login: LoginSession,
        tenant: Tenant,
        requested: tuple[str, ...],
        binding: str,
    ) -> Page:
        client: OAuthClient = request.client
        user = self.session.get(User, login.user_id)
        surface = request.facts.surface
        context = {
            "title": f"Allow {client.row.name}?",
            "client_name": client.row.name,
            "client_id": client.id,
            "user_name": user.display_name if user else "you",
            "tenant_name": tenant.name,
            "surface": surface.value if surface else "",
            "scopes": list(requested),
            "action": AUTHORIZE_PATH,
            "request_string": self.request_string,
            "csrf_token": self.csrf.issue(
                purpose=CONSENT_PURPOSE,
                session_id=login.id,
                binding=binding,
                now=self.exchange.now,
            ),
        }
        redirect_uri = request.payload.redirect_uri
        return Page("consent.html", context, form_targets=(origin_of(redirect_uri),))

    def _note_denied(self, login: LoginSession, client: OAuthClient, reason: str) -> None:
        self.exchange.note(
            AuditNote(
                EventName.OAUTH_CONSENT_DENIED,
                actor=Actor.user(login.user_id),
                target=Target("oauth_client", client.id),
                decision=Decision.DENIED,
                reason=reason,
            )
        )


async def _authorize(
    platform: Platform,
    request: Request,
    request_string: str,
    pairs: Pairs,
    answer: ConsentAnswer | None,
) -> Response:
    if repeated(pairs):
        return respond(message_page(_TITLE, "invalid_request"))
    urls = OAuthUrls(platform.identity.issuer)
    try:
        oauth_request = FleetwardRequest(
            "GET", f"{urls.authorization}?{request_string}", request.headers, pairs, in_body=False
        )
    except OAuth2Error as error:
        return respond(message_page(_TITLE, str(error.error), status=500))
    guard = csrf_guard(platform)
    async with platform.services() as (uow, ctx):
        exchange = new_exchange(platform)
        exchange.login = await LoginSessions(ctx).current(request.cookies.get(COOKIE_NAME))

        def call(server: FleetwardAuthorizationServer) -> Outcome:
            return AuthorizationStep(server, guard, request_string).run(oauth_request, answer)

        outcome = await run_authlib(ctx, exchange, call)
        await settle(platform, ctx, exchange)
        await uow.commit()
    return respond(outcome)


async def authorize_get(platform: Platform, request: Request) -> Response:
    request_string = request.url.query
    try:
        pairs = parse_pairs(request_string)
    except BadForm:
        return respond(message_page(_TITLE, "invalid_request"))
    return await _authorize(platform, request, request_string, pairs, None)


async def authorize_post(platform: Platform, request: Request) -> Response:
    try:
        form = await read_form(request)
        fields: dict[str, list[str]] = {}
        for name, value in form:
            fields.setdefault(name, []).append(value)
        (request_string,) = fields.get("request", [])
        (csrf_token,) = fields.get("csrf_token", [])
        (decision,) = fields.get("decision", [])
        pairs = parse_pairs(request_string)
    except (BadForm, ValueError):
        return respond(message_page(_TITLE, "invalid_request"))
    if decision not in ("approve", "deny"):
        return respond(message_page(_TITLE, "invalid_request"))
    answer = ConsentAnswer(
        csrf_token=csrf_token,
        approve=decision == "approve",
        scopes=frozenset(fields.get("scope", [])),
    )
    return await _authorize(platform, request, request_string, pairs, answer)
