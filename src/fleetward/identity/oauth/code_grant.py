"""The authorization code grant (RFC 6749 section 4.1) with PKCE, as OAuth 2.1 profiles it.

Authlib validates the authorization request (client, response type, scope) and the token
request (client authentication, code lookup, redirect URI equality, PKCE through
:class:`S256CodeChallenge`). Added here: an exact redirect URI is always required; one
surface per code (``resource``); step-up parameters; the optional ``dpop_jkt``; DPoP at the
token endpoint; codes stored hashed and spent with a conditional UPDATE, so exactly one
exchange wins; a replayed or lost-race code revokes everything its first use issued (the
code's id is the family id of those tokens).
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2.rfc6749.errors import InvalidRequestError, OAuth2Error
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from sqlalchemy import select, update

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth import hashing
from fleetward.identity.oauth.adapters import CodeRecord, OAuthClient
from fleetward.identity.oauth.exchange import AuditNote, Exchange
from fleetward.identity.oauth.grant_checks import (
    parse_dpop_jkt,
    parse_max_age,
    person_principal,
    require_dpop_binding,
    required_acr,
    reuse_detected,
)
from fleetward.identity.oauth.pkce import S256
from fleetward.identity.oauth.policy import AUTH_NONE, CODE_LIFETIME, PRIVATE_KEY_JWT
from fleetward.identity.oauth.principal import Principal
from fleetward.identity.oauth.rows import changed_rows
from fleetward.identity.oauth.targets import check_same_surface, requested_surface
from fleetward.identity.oauth_models import AuthorizationCode


class CodeGrant(AuthorizationCodeGrant):  # type: ignore[misc]  # authlib is untyped
    # Confidential clients prove their key; public clients (mobile, CLI) rely on PKCE + DPoP.
    TOKEN_ENDPOINT_AUTH_METHODS = [PRIVATE_KEY_JWT, AUTH_NONE]

    def __init__(self, request: Any, server: Any) -> None:
        super().__init__(request, server)
        self.exchange: Exchange = server.exchange

    # --- authorization endpoint --------------------------------------------------------------

    @staticmethod
    def validate_authorization_redirect_uri(request: Any, client: OAuthClient) -> str:
        uri = request.payload.redirect_uri
        if not uri or not client.check_redirect_uri(uri):
            # Fixed text: Authlib would echo the rejected URI back to the caller.
            raise InvalidRequestError("redirect_uri is missing or not registered.")
        return str(uri)

    def validate_authorization_request(self) -> str:
        redirect_uri = str(super().validate_authorization_request())
        request = self.request
        data = request.payload.data
        try:
            surface = requested_surface(
                request.payload.datalist.get("resource", []), request.client
            )
            request.facts.surface = surface
            acr = required_acr(data.get("acr_values"), surface)
            request.facts.required_acr = None if acr is None else acr.value
            request.facts.max_age = parse_max_age(data.get("max_age"))
            request.facts.dpop_jkt = parse_dpop_jkt(data.get("dpop_jkt"))
        except OAuth2Error as error:
            # The redirect URI is validated by now: errors go back to the client.
            error.redirect_uri = redirect_uri
            raise
        return redirect_uri

    def save_authorization_code(self, code: str, request: Any) -> None:
        principal: Principal = request.user
        exchange = self.exchange
        row = AuthorizationCode(
            id=new_id("azc"),
            code_hash=hashing.digest(code),
            client_id=request.client.get_client_id(),
            user_id=principal.subject,
            tenant_id=principal.tenant_id,
            redirect_uri=request.payload.redirect_uri,
            # The consented scopes: Authlib re-validates the request just before this call
            # and resets request.scope to everything the client asked for.
            scope=" ".join(principal.granted_scopes),
            surface=principal.surface.value,
            code_challenge=request.payload.data["code_challenge"],
            code_challenge_method=S256,
            dpop_jkt=request.facts.dpop_jkt,
            auth_time=principal.auth_time,
            acr=principal.acr,
            amr=list(principal.amr),
            created_at=exchange.now,
            expires_at=exchange.now + CODE_LIFETIME,
            used_at=None,
        )
        exchange.session.add(row)
        exchange.note(
            AuditNote(
                EventName.OAUTH_CODE_ISSUED,
                actor=Actor.user(principal.subject, principal.tenant_id),
                target=Target("authorization_code", row.id, principal.tenant_id),
                details={"client_id": row.client_id, "surface": row.surface, "scope": row.scope},
            )
        )

    # --- token endpoint ----------------------------------------------------------------------

    def query_authorization_code(self, code: object, client: OAuthClient) -> CodeRecord | None:
        if not hashing.plausible(code):
            return None
        exchange = self.exchange
        row = exchange.session.scalar(
            select(AuthorizationCode).where(
                AuthorizationCode.code_hash == hashing.digest(str(code))
            )
        )
        # A code of another client is "no such code": nothing about it is revealed or revoked.
        if row is None or row.client_id != client.get_client_id():
            return None
        if row.used_at is not None:
            raise self._reused(row, "code-reused")
        if row.expires_at <= exchange.now:
            return None
        return CodeRecord(row)

    def validate_token_request(self) -> None:
        super().validate_token_request()  # client, grant type, code, redirect URI, then PKCE
        record: CodeRecord = self.request.authorization_code
        check_same_surface(
            self.request.payload.datalist.get("resource", []), Surface(record.row.surface)
        )
        require_dpop_binding(self.exchange, self.request.client, record.row.dpop_jkt)

    def create_token_response(self) -> Any:
        record: CodeRecord = self.request.authorization_code
        exchange = self.exchange
        spent = changed_rows(
            exchange.session,
            update(AuthorizationCode)
            .where(AuthorizationCode.id == record.row.id, AuthorizationCode.used_at.is_(None))
            .values(used_at=exchange.now),
        )
        if spent != 1:
            # Another exchange spent it between our read and this write.
            raise self._reused(record.row, "code-race-lost")
        return super().create_token_response()

    def authenticate_user(self, record: CodeRecord) -> Principal | None:
        row = record.row
        return person_principal(self.exchange, self.request.client, row, family_id=row.id)

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        # Kept, spent: a replay must still be recognised so that it revokes the family.
        return None

    def _reused(self, row: AuthorizationCode, reason: str) -> Exception:
        return reuse_detected(
            self.exchange,
            family_id=row.id,
            event=EventName.OAUTH_CODE_REUSED,
            actor=Actor.user(row.user_id, row.tenant_id),
            target=Target("authorization_code", row.id, row.tenant_id),
            reason=reason,
        )
