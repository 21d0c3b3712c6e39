"""The device authorization grant (RFC 8628), for the first-party CLI.

Authlib's :class:`DeviceAuthorizationEndpoint` issues the device and user codes and
:class:`DeviceCodeGrant` answers the polling; added here: only clients allowed the grant (a
public client authenticating with ``none``), scopes narrowed to the client's, one surface,
codes stored hashed, ``slow_down`` when a client polls faster than its interval (which then
grows by five seconds, RFC 8628 section 3.5), the person's approval read from our table, and
a single use per device code (a second use revokes the family, like a replayed code).
The approval itself happens on the device page (:mod:`.device_approval`), with a login.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from authlib.oauth2.rfc6749.errors import (
    AccessDeniedError,
    InvalidGrantError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc8628 import (
    AuthorizationPendingError,
    DeviceAuthorizationEndpoint,
    DeviceCodeGrant,
    ExpiredTokenError,
    SlowDownError,
)
from sqlalchemy import select, update

from fleetward.audit.events import EventName
from fleetward.audit.recorder import Actor, Target
from fleetward.core.errors import ServiceUnavailable
from fleetward.core.ids import new_id
from fleetward.core.surfaces import Surface
from fleetward.identity.oauth import hashing
from fleetward.identity.oauth.adapters import DeviceRecord, OAuthClient
from fleetward.identity.oauth.exchange import Exchange
from fleetward.identity.oauth.grant_checks import (
    require_dpop_binding,
    reuse_detected,
    still_entitled,
)
from fleetward.identity.oauth.policy import (
    AUTH_NONE,
    DEVICE_CODE,
    DEVICE_CODE_LIFETIME,
    DEVICE_POLL_INTERVAL,
)
from fleetward.identity.oauth.principal import Principal
from fleetward.identity.oauth.rows import changed_rows
from fleetward.identity.oauth.targets import requested_surface
from fleetward.identity.oauth_models import DeviceAuthorization, DeviceAuthorizationStatus

_SLOW_DOWN_STEP = timedelta(seconds=DEVICE_POLL_INTERVAL)
# Draws of a user code before giving up: a repeat is rare (~34 bits), two in a row rarer.
_USER_CODE_DRAWS = 5


class DeviceAuthorizationStart(DeviceAuthorizationEndpoint):  # type: ignore[misc]
    CLIENT_AUTH_METHODS = [AUTH_NONE]
    EXPIRES_IN = int(DEVICE_CODE_LIFETIME.total_seconds())
    INTERVAL = DEVICE_POLL_INTERVAL

    def __init__(self, server: Any) -> None:
        super().__init__(server)
        self.exchange: Exchange = server.exchange
        self._admitted: tuple[str, Surface] | None = None

    def authenticate_client(self, request: Any) -> OAuthClient:
        # Authlib's first step at this endpoint; our admission checks run right after it, so
        # no code is generated for a client that may not use the flow.
        client: OAuthClient = super().authenticate_client(request)
        if not client.check_grant_type(DEVICE_CODE):
            raise UnauthorizedClientError("This client may not use the device flow.")
        scopes = client.narrow_scopes(request.payload.scope)
        if not scopes:
            raise InvalidScopeError()
        surface = requested_surface(request.payload.datalist.get("resource", []), client)
        self._admitted = (" ".join(scopes), surface)
        return client

    def get_verification_uri(self) -> str:
        return self.exchange.urls.device

    def generate_user_code(self) -> str:
        # The user code has ~34 bits from a 20-letter alphabet, and every stored row keeps its
        # code (used and expired ones too: the unique index covers them all). A code already
        # stored is drawn again, a bounded number of times; two requests that draw the same
        # free code at once still meet the unique index, and one of them fails rather than
        # sharing a code.
        for _ in range(_USER_CODE_DRAWS):
            code: str = super().generate_user_code()
            taken = self.exchange.session.scalar(
                select(DeviceAuthorization.id).where(DeviceAuthorization.user_code == code)
            )
            if taken is None:
                return code
        raise ServiceUnavailable(
            "no free user code was found; try again",
            reason="user-code",
            headers={"Retry-After": "1"},
        )

    def save_device_credential(self, client_id: str, scope: object, data: dict[str, Any]) -> None:
        if self._admitted is None:
            raise RuntimeError("save_device_credential before authenticate_client")
        granted, surface = self._admitted
        exchange = self.exchange
        exchange.session.add(
            DeviceAuthorization(
                id=new_id("dva"),
                device_code_hash=hashing.digest(data["device_code"]),
                user_code=data["user_code"],
                client_id=client_id,
                scope=granted,
                surface=surface.value,
                status=DeviceAuthorizationStatus.PENDING,
                user_id=None,
                tenant_id=None,
                auth_time=None,
                acr=None,
                amr=None,
                interval_seconds=DEVICE_POLL_INTERVAL,
                last_polled_at=None,
                created_at=exchange.now,
                expires_at=exchange.now + DEVICE_CODE_LIFETIME,
            )
        )


class DeviceGrant(DeviceCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [AUTH_NONE]

    def __init__(self, request: Any, server: Any) -> None:
        super().__init__(request, server)
        self.exchange: Exchange = server.exchange

    def query_device_credential(self, device_code: object) -> DeviceRecord | None:
        if not hashing.plausible(device_code):
            return None
        row = self.exchange.session.scalar(
            select(DeviceAuthorization).where(
                DeviceAuthorization.device_code_hash == hashing.digest(str(device_code))
            )
        )
        return None if row is None else DeviceRecord(row, self.exchange.now)

    def validate_token_request(self) -> None:
        super().validate_token_request()  # client, grant type, code of this client, state
        require_dpop_binding(self.exchange, self.request.client, None)

    def validate_device_credential(self, credential: DeviceRecord) -> Principal:
        row = credential.row
        now = self.exchange.now
        if row.status is DeviceAuthorizationStatus.USED:
            raise self._reused(row, "device-code-reused")
        if credential.is_expired():
            raise ExpiredTokenError()
        if row.status is DeviceAuthorizationStatus.DENIED:
            raise AccessDeniedError()
        if row.status is DeviceAuthorizationStatus.PENDING:
            too_soon = row.last_polled_at is not None and now - row.last_polled_at < timedelta(
                seconds=row.interval_seconds
            )
            # These writes are committed with the error response (the flow commits OAuth
            # errors), so the slower interval holds for every later poll. A conditional
            # UPDATE, not the ORM (whose version check on the status would fail the whole
            # request): if the person approved or denied since our read, nothing is written
            # and the next poll reads the new status.
            step = int(_SLOW_DOWN_STEP.total_seconds()) if too_soon else 0
            still_pending = changed_rows(
                self.exchange.session,
                update(DeviceAuthorization)
                .where(
                    DeviceAuthorization.id == row.id,
                    DeviceAuthorization.status == DeviceAuthorizationStatus.PENDING,
                )
                .values(
                    last_polled_at=now,
                    interval_seconds=DeviceAuthorization.interval_seconds + step,
                ),
            )
            if too_soon and still_pending:
                raise SlowDownError()
            raise AuthorizationPendingError()
        return self._approved(row)

    def create_token_response(self) -> Any:
        row = self.request.credential.row
        spent = changed_rows(
            self.exchange.session,
            update(DeviceAuthorization)
            .where(
                DeviceAuthorization.id == row.id,
                DeviceAuthorization.status == DeviceAuthorizationStatus.APPROVED,
            )
            .values(status=DeviceAuthorizationStatus.USED),
        )
        if spent != 1:
            raise self._reused(row, "device-race-lost")
        return super().create_token_response()

    def _approved(self, row: DeviceAuthorization) -> Principal:
        if (
            row.user_id is None
            or row.tenant_id is None
            or row.auth_time is None
            or row.acr is None
            or row.amr is None
        ):
            raise InvalidGrantError(description="The device authorization is incomplete.")
        surface = Surface(row.surface)
        # Authlib sets request.client only after this check; the credential's client is the
        # authenticated one (Authlib compared the two just before).
        client = self.server.query_client(row.client_id)
        if client is None or not still_entitled(
            self.exchange.session,
            user_id=row.user_id,
            tenant_id=row.tenant_id,
            surface=surface,
            client=client,
            now=self.exchange.now,
        ):
            raise InvalidGrantError(description="The approving account can no longer act here.")
        return Principal(
            subject=row.user_id,
            subject_type="user",
            tenant_id=row.tenant_id,
            surface=surface,
            auth_time=row.auth_time,
            acr=row.acr,
            amr=tuple(row.amr),
            family_id=row.id,
            granted_scopes=tuple(row.scope.split()),
        )

    def _reused(self, row: DeviceAuthorization, reason: str) -> Exception:
        actor = Actor.user(row.user_id) if row.user_id else Actor.system("oauth-device")
        return reuse_detected(
            self.exchange,
            family_id=row.id,
            event=EventName.OAUTH_CODE_REUSED,
            actor=actor,
            target=Target("device_authorization", row.id, row.tenant_id),
            reason=reason,
        )
