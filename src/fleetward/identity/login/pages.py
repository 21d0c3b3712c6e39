"""Server-rendered login pages (jinja2, autoescaped) and the headers every page carries.

Pages load nothing from elsewhere. The only script is the inline WebAuthn helper, allowed by
a per-response CSP nonce; everything else works without JavaScript. ``form-action`` is
deliberately absent from the policy: browsers apply it to the redirects that follow a form
post, which would block the authorization endpoint's final redirect to the client.
"""

from __future__ import annotations

import secrets
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.responses import HTMLResponse


def security_headers(nonce: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            "default-src 'none'; "
            f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self'; "
            "base-uri 'none'; frame-ancestors 'none'"
        ),
        # Secrets and one-time codes are on these pages: never cache, never frame, never
        # leak the URL (which may carry an authorization request) to another site.
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
    }


class Pages:
    """Thread-safe (jinja2 environments are, once built)."""

    def __init__(self) -> None:
        self._env = Environment(
            loader=PackageLoader("fleetward.identity.login", "templates"),
            autoescape=True,
            undefined=StrictUndefined,  # a missing variable is a bug, not an empty string
            auto_reload=False,
        )

    def render(self, template: str, *, status: int = 200, **context: Any) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = self._env.get_template(template).render(nonce=nonce, **context)
        return HTMLResponse(html, status_code=status, headers=security_headers(nonce))
