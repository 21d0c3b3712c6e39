"""``private_key_jwt`` client authentication (RFC 7523 section 2.2, RFC 7521 section 4.2).

Authlib's :class:`JWTBearerClientAssertion` parses the assertion, finds the client by ``sub``
and verifies the signature against the client's registered JWKS; this adapter adds what it
leaves to us or does more loosely than we want:

* ES256 only (an explicit algorithm allow-list, whatever the header says);
* time claims against the platform clock, and a short life: ``exp`` at most five minutes away;
* ``aud`` must be our token endpoint or our issuer;
* ``jti`` single use, durably: one row per accepted (client, jti), inserted with
  ``ON CONFLICT DO NOTHING`` so two concurrent replays cannot both win;
* a ``client_id`` form parameter, if sent, must name the same client as the assertion.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from authlib.oauth2.rfc6749.errors import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy import delete
from sqlalchemy.dialects import postgresql, sqlite

from fleetward.core.ids import new_id
from fleetward.identity.oauth.exchange import Exchange
from fleetward.identity.oauth.models import UsedClientAssertion
from fleetward.identity.oauth.policy import (
    ASSERTION_LEEWAY,
    ASSERTION_MAX_LIFETIME,
    PRIVATE_KEY_JWT,
)
from fleetward.identity.oauth.rows import changed_rows

ASSERTION_ALGORITHMS: Final = ["ES256"]


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]  # authlib is untyped
    CLIENT_AUTH_METHOD = PRIVATE_KEY_JWT

    def __init__(self, exchange: Exchange) -> None:
        super().__init__(validate_jti=True, leeway=int(ASSERTION_LEEWAY.total_seconds()))
        self._exchange = exchange

    def __call__(self, query_client: Any, request: Any) -> Any:
        client = super().__call__(query_client, request)
        claimed = request.payload.data.get("client_id")
        if client is not None and claimed is not None and claimed != client.get_client_id():
            # RFC 7521 section 4.2: a client_id parameter must identify the same client.
            raise InvalidClientError(description="client_id does not match the assertion.")
        return client

    def extract_assertion(self, assertion: str) -> tuple[Any, dict[str, Any]]:
        # Authlib reads the unverified assertion first and only turns ValueError into
        # invalid_client; JSON nested past the parser's recursion limit raises RecursionError.
        try:
            headers, claims = super().extract_assertion(assertion)
        except RecursionError:
            raise InvalidClientError(description="The client assertion is not valid.") from None
        return headers, claims

    def get_audiences(self) -> list[str]:
        urls = self._exchange.urls
        return [urls.token, urls.issuer]

    def resolve_client_public_key(self, client: Any) -> KeySet:
        registered: Any = client.row.jwks or {"keys": []}
        return KeySet.import_key_set(registered)

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=ASSERTION_ALGORITHMS)
        except (JoseError, ValueError):
            raise InvalidClientError(description="The client assertion is not valid.") from None
        claims: dict[str, Any] = dict(token.claims)
        self.verify_claims(claims)
        return claims

    def verify_claims(self, claims: Any) -> None:
        now = int(self._exchange.now.timestamp())
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=self.leeway,
            iss={"essential": True},
            sub={"essential": True},
            aud={"essential": True, "values": self.get_audiences()},
            exp={"essential": True},
            jti={"essential": True},
        )
        try:
            registry.validate(claims)
        except JoseError:
            raise InvalidClientError(description="The client assertion is not valid.") from None
        if claims["sub"] != claims["iss"]:
            raise InvalidClientError(description="Issuer and subject must be the client.")
        exp = claims["exp"]
        if exp > now + ASSERTION_MAX_LIFETIME.total_seconds():
            # A long-lived assertion is a reusable credential in all but name.
            raise InvalidClientError(description="The client assertion lives too long.")
        jti = claims["jti"]
        if not isinstance(jti, str) or not 0 < len(jti) <= 256:
            raise InvalidClientError(description="The client assertion has no usable jti.")
        if not self.validate_jti(claims, jti):
            raise InvalidClientError(description="The client assertion was used before.")

    def validate_jti(self, claims: Any, jti: str) -> bool:
        exchange = self._exchange
        session = exchange.session
        client_id = str(claims["sub"])
        expires_at = datetime.fromtimestamp(int(claims["exp"]), UTC) + ASSERTION_LEEWAY
        # Forget assertions that would be refused as expired anyway; keeps the table small.
        session.execute(
            delete(UsedClientAssertion).where(
                UsedClientAssertion.expires_at < exchange.now - timedelta(seconds=1)
            )
        )
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = (
            insert(UsedClientAssertion)
            .values(
                id=new_id("asr"),
                jti_hash=hashlib.sha256(f"{client_id}\x00{jti}".encode()).hexdigest(),
                client_id=client_id,
                expires_at=expires_at,
                created_at=exchange.now,
            )
            .on_conflict_do_nothing(index_elements=["jti_hash"])
        )
        return changed_rows(session, statement) == 1
