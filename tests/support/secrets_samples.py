"""Secret-shaped test data for leak tests (clearly fake; no real key or token)."""

from __future__ import annotations

import base64
import json


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _json_segment(claims: dict[str, object]) -> str:
    return _b64url(json.dumps(claims, separators=(",", ":")).encode())


# An access token shaped like the ones the identity service issues: ES256, a 64-byte signature.
ES256_JWT = ".".join(
    (
        _json_segment({"alg": "ES256", "typ": "at+jwt", "kid": "fleet-2026-01"}),
        _json_segment({"sub": "usr_5c1f", "aud": "mobile", "jti": "tok-9", "exp": 1795000000}),
        _b64url(bytes(range(64))),
    )
)
PEM_BODY = "MHcCAQEEIBkg4LVWM9nuwNSk3yByxZpYRTBnVJk5oZV0pmzFSJ9hoAoGCCqGSM49"
EC_PRIVATE_KEY = f"-----BEGIN EC PRIVATE KEY-----\n{PEM_BODY}\n-----END EC PRIVATE KEY-----"
