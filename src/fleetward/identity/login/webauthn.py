"""WebAuthn ceremonies (py_webauthn 3.x): registering a security key, and using one to log in.

The relying party id is the host of the configured public URL and the expected origin is
that URL's origin, so an assertion made for another site never verifies here. Attestation
is "none": Fleetward does not restrict authenticator models, it only needs the key.
A sign count that does not grow is refused (a cloned authenticator, or a replay), and the
new count is written with a conditional UPDATE so two replicas cannot both accept one count.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import webauthn
from sqlalchemy import select, update
from webauthn.helpers import (
    parse_authentication_credential_json,
    parse_authenticator_data,
    parse_client_data_json,
    parse_registration_credential_json,
)
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from fleetward.core.ids import new_id
from fleetward.identity.credential_models import WebAuthnCredential
from fleetward.identity.models import User
from fleetward.services import ServiceContext

# Untrusted input can fail to parse in many ways; each of these means "not verified".
# RecursionError: clientDataJSON (and CBOR) nested deeper than the parsers recurse.
BAD_INPUT = (WebAuthnException, ValueError, TypeError, KeyError, RecursionError)


@dataclass(frozen=True, slots=True)
class RelyingParty:
    id: str
    name: str
    origin: str

    @classmethod
    def for_url(cls, base_url: str, name: str = "Fleetward") -> RelyingParty:
        parts = urlsplit(base_url)
        if not parts.scheme or not parts.hostname:
            raise ValueError("the public URL needs a scheme and a host")
        return cls(id=parts.hostname, name=name, origin=f"{parts.scheme}://{parts.netloc}")


class AssertionVerdict(StrEnum):
    ACCEPTED = "accepted"
    CHALLENGE = "webauthn-challenge"
    UNKNOWN_CREDENTIAL = "webauthn-unknown-credential"
    SIGN_COUNT = "webauthn-sign-count"
    INVALID = "webauthn-invalid"


def _json(options: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(webauthn.options_to_json(options))
    return loaded


class WebAuthnKeys:
    def __init__(self, ctx: ServiceContext, rp: RelyingParty) -> None:
        self._ctx = ctx
        self._rp = rp

    async def credentials(self, user_id: str) -> list[WebAuthnCredential]:
        rows = await self._ctx.session.scalars(
            select(WebAuthnCredential).where(
                WebAuthnCredential.user_id == user_id, WebAuthnCredential.revoked_at.is_(None)
            )
        )
        return list(rows)

    async def registration_options(self, user: User, challenge: bytes) -> dict[str, Any]:
        existing = await self.credentials(user.id)
        options = webauthn.generate_registration_options(
            rp_id=self._rp.id,
            rp_name=self._rp.name,
            user_name=user.username,
            user_id=user.id.encode("ascii"),  # opaque id, no personal data in the handle
            user_display_name=user.display_name,
            challenge=challenge,
            exclude_credentials=[
                PublicKeyCredentialDescriptor(id=c.credential_id) for c in existing
            ],
            authenticator_selection=AuthenticatorSelectionCriteria(
                resident_key=ResidentKeyRequirement.DISCOURAGED,
                user_verification=UserVerificationRequirement.PREFERRED,
            ),
        )
        return _json(options)

    def verify_registration(
        self, user: User, credential: dict[str, Any], challenge: bytes
    ) -> WebAuthnCredential:
        """A new (unsaved) credential row; raises one of BAD_INPUT if it does not verify."""
        parsed = parse_registration_credential_json(credential)
        verified = webauthn.verify_registration_response(
            credential=parsed,
            expected_challenge=challenge,
            expected_rp_id=self._rp.id,
            expected_origin=self._rp.origin,
        )
        transports = [t.value for t in (parsed.response.transports or [])]
        return WebAuthnCredential(
            id=new_id("wak"),
            user_id=user.id,
            credential_id=verified.credential_id,
            public_key=verified.credential_public_key,
            sign_count=verified.sign_count,
            transports=transports,
            created_at=self._ctx.clock.now(),
            last_used_at=None,
            revoked_at=None,
        )

    async def authentication_options(self, user_id: str, challenge: bytes) -> dict[str, Any]:
        options = webauthn.generate_authentication_options(
            rp_id=self._rp.id,
            challenge=challenge,
            allow_credentials=[
                PublicKeyCredentialDescriptor(id=c.credential_id)
                for c in await self.credentials(user_id)
            ],
            user_verification=UserVerificationRequirement.PREFERRED,
        )
        return _json(options)

    async def verify_assertion(
        self, user_id: str, credential: dict[str, Any], challenge: bytes | None
    ) -> AssertionVerdict:
        try:
            parsed = parse_authentication_credential_json(credential)
            client_data = parse_client_data_json(parsed.response.client_data_json)
            claimed_count = parse_authenticator_data(parsed.response.authenticator_data).sign_count
        except BAD_INPUT:
            return AssertionVerdict.INVALID
        if challenge is None or client_data.challenge != challenge:
            return AssertionVerdict.CHALLENGE
        key = next(
            (c for c in await self.credentials(user_id) if c.credential_id == parsed.raw_id), None
        )
        if key is None:
            return AssertionVerdict.UNKNOWN_CREDENTIAL
        if (claimed_count > 0 or key.sign_count > 0) and claimed_count <= key.sign_count:
            return AssertionVerdict.SIGN_COUNT
        try:
            verified = webauthn.verify_authentication_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=self._rp.id,
                expected_origin=self._rp.origin,
                credential_public_key=key.public_key,
                credential_current_sign_count=key.sign_count,
            )
        except BAD_INPUT:
            return AssertionVerdict.INVALID
        result = await self._ctx.session.execute(
            update(WebAuthnCredential)
            .where(
                WebAuthnCredential.id == key.id,
                WebAuthnCredential.sign_count == key.sign_count,
            )
            .values(sign_count=verified.new_sign_count, last_used_at=self._ctx.clock.now())
            .execution_options(synchronize_session=False)
        )
        if getattr(result, "rowcount", 0) != 1:
            return AssertionVerdict.SIGN_COUNT  # another replica accepted this count first
        return AssertionVerdict.ACCEPTED
