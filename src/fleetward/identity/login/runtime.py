"""What the login pages keep for the life of the process, derived once from the platform.

Keys are derived from the platform data key (HKDF, one purpose each), so every replica
derives the same ones and nothing new has to be provisioned or stored.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from fleetward.identity.login.csrf import CsrfGuard
from fleetward.identity.login.pages import Pages
from fleetward.identity.login.webauthn import RelyingParty
from fleetward.platform import Platform

_CSRF_PURPOSE = "fleetward:login-csrf:v1"
_RECOVERY_PURPOSE = "fleetward:recovery-codes:v1"


@dataclass(frozen=True, slots=True)
class LoginRuntime:
    platform: Platform
    csrf: CsrfGuard
    recovery_pepper: bytes
    rp: RelyingParty
    # An argon2id hash of a random password with the live parameters: unknown usernames
    # are verified against it, so they cost the same time as real ones.
    dummy_hash: str
    secure_cookies: bool
    pages: Pages

    @classmethod
    def build(cls, platform: Platform) -> LoginRuntime:
        data_key = platform.identity.data_key
        base_url = platform.settings.base_url
        return cls(
            platform=platform,
            csrf=CsrfGuard(data_key.derive(_CSRF_PURPOSE)),
            recovery_pepper=data_key.derive(_RECOVERY_PURPOSE),
            rp=RelyingParty.for_url(base_url),
            dummy_hash=platform.passwords.hash(secrets.token_urlsafe(24)),
            secure_cookies=base_url.startswith("https://"),
            pages=Pages(),
        )
