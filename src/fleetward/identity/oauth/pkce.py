"""PKCE (RFC 7636), S256 only and always required, as OAuth 2.1 asks.

Authlib's :class:`CodeChallenge` extension accepts ``plain`` and treats a missing challenge as
"no PKCE"; this subclass refuses both at the authorization endpoint, so every code we issue is
bound to a verifier, and compares in constant time. The challenge must be what S256 yields,
base64url(SHA-256) in 43 characters, matched in full: Authlib's pattern is anchored with
``$``, which also lets a trailing newline through, and accepts lengths no S256 verifier can
ever meet.
"""

from __future__ import annotations

import hmac
import re
from typing import Any, Final

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oauth2.rfc7636 import CodeChallenge, create_s256_code_challenge

S256 = "S256"
# base64url without padding of a SHA-256 digest: what create_s256_code_challenge produces.
_S256_CHALLENGE: Final = re.compile(r"[A-Za-z0-9_-]{43}")


def _s256_matches(verifier: str, challenge: str) -> bool:
    return hmac.compare_digest(create_s256_code_challenge(verifier), challenge)


class S256CodeChallenge(CodeChallenge):  # type: ignore[misc]  # authlib is untyped
    DEFAULT_CODE_CHALLENGE_METHOD = S256
    SUPPORTED_CODE_CHALLENGE_METHOD = [S256]
    CODE_CHALLENGE_METHODS = {S256: _s256_matches}

    def __init__(self) -> None:
        super().__init__(required=True)

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: code_challenge is missing.")
        if data.get("code_challenge_method") != S256:
            # Absent means "plain" (RFC 7636 section 4.3), which we never accept.
            raise InvalidRequestError("PKCE code_challenge_method must be S256.")
        if _S256_CHALLENGE.fullmatch(data["code_challenge"]) is None:
            raise InvalidRequestError("PKCE code_challenge must be a base64url SHA-256 (S256).")
        super().validate_code_challenge(grant, redirect_uri)

    def get_authorization_code_challenge(self, authorization_code: Any) -> str:
        return str(authorization_code.row.code_challenge)

    def get_authorization_code_challenge_method(self, authorization_code: Any) -> str:
        return str(authorization_code.row.code_challenge_method)
