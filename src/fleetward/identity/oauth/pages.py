"""The server's HTML pages: consent, device code entry and approval, and errors.

Jinja2 with autoescaping and strict undefined variables; templates live here as strings so
an installed package carries them without package-data rules. Pages load nothing external:
one inline style block allowed by a per-response CSP nonce, no scripts at all. Every page
forbids framing (clickjacking a consent button), caching and referrers.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from jinja2 import DictLoader, Environment, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

_BASE: Final = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} - Fleetward</title>
<style nonce="{{ nonce }}">
body{font-family:system-ui,sans-serif;max-width:34rem;margin:3rem auto;padding:0 1rem;
color:#1c2430;line-height:1.5}
h1{font-size:1.4rem}code{background:#eef1f5;padding:0 .25rem;border-radius:3px}
ul{padding-left:1.2rem}li{margin:.3rem 0}
button{font-size:1rem;padding:.5rem 1.2rem;margin-right:.6rem;border-radius:4px;
border:1px solid #8a96a8;background:#fff;cursor:pointer}
button.primary{background:#1f5fbf;color:#fff;border-color:#1f5fbf}
.muted{color:#5b6676;font-size:.9rem}
</style>
</head>
<body><main>{% block main %}{% endblock %}</main></body>
</html>
"""

_CONSENT: Final = """{% extends "base.html" %}{% block main %}
<h1>Allow {{ client_name }} to act for you?</h1>
<p>Signed in as <strong>{{ user_name }}</strong>, acting in <strong>{{ tenant_name }}</strong>
on the <strong>{{ surface }}</strong> API.</p>
<form method="post" action="{{ action }}">
<p>{{ client_name }} asks for:</p>
<ul>
{% for scope in scopes %}
<li><label><input type="checkbox" name="scope" value="{{ scope }}" checked>
<code>{{ scope }}</code></label></li>
{% endfor %}
</ul>
<input type="hidden" name="request" value="{{ request_string }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token }}">
<button class="primary" type="submit" name="decision" value="approve">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>
<p class="muted">Client id <code>{{ client_id }}</code>. You can withdraw this later.</p>
{% endblock %}"""

_DEVICE_ENTER: Final = """{% extends "base.html" %}{% block main %}
<h1>Connect a device</h1>
<p>Enter the code shown on your device.</p>
<form method="get" action="{{ action }}">
<input name="user_code" autocomplete="off" autocapitalize="characters" maxlength="16" required>
<button class="primary" type="submit">Continue</button>
</form>
{% endblock %}"""

_DEVICE_CONFIRM: Final = """{% extends "base.html" %}{% block main %}
<h1>Allow {{ client_name }} on your device?</h1>
<p>Code <code>{{ user_code }}</code>. Signed in as <strong>{{ user_name }}</strong>, for the
<strong>{{ surface }}</strong> API.</p>
<p>It asks for:</p>
<ul>{% for scope in scopes %}<li><code>{{ scope }}</code></li>{% endfor %}</ul>
<p class="muted">Only continue if you started this on a device you control.</p>
<form method="post" action="{{ action }}">
<input type="hidden" name="user_code" value="{{ user_code }}">
<input type="hidden" name="csrf_token" value="{{ csrf_token }}">
<button class="primary" type="submit" name="decision" value="approve">Allow</button>
<button type="submit" name="decision" value="deny">Deny</button>
</form>
{% endblock %}"""

_MESSAGE: Final = """{% extends "base.html" %}{% block main %}
<h1>{{ title }}</h1>
<p>{{ message }}</p>
{% if code %}<p class="muted">Error code <code>{{ code }}</code></p>{% endif %}
{% endblock %}"""

_ENVIRONMENT: Final = Environment(
    loader=DictLoader(
        {
            "base.html": _BASE,
            "consent.html": _CONSENT,
            "device_enter.html": _DEVICE_ENTER,
            "device_confirm.html": _DEVICE_CONFIRM,
            "message.html": _MESSAGE,
        }
    ),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
)


@dataclass(frozen=True, slots=True)
class Page:
    template: str
    context: dict[str, Any]
    status: int = 200
    # Where a form on the page may lead (a consent decision redirects to the client).
    form_targets: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Redirect:
    location: str
    # 302 for Authlib's authorization responses (RFC 6749); 303 after our own form posts.
    status: int = 302


Outcome = Page | Redirect


def origin_of(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.scheme}://{parts.netloc}"


def respond(outcome: Outcome) -> Response:
    if isinstance(outcome, Redirect):
        return RedirectResponse(
            outcome.location,
            status_code=outcome.status,
            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
        )
    return render(outcome)


def render(page: Page) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    html = _ENVIRONMENT.get_template(page.template).render(nonce=nonce, **page.context)
    form_action = " ".join(["'self'", *page.form_targets])
    policy = (
        f"default-src 'none'; style-src 'nonce-{nonce}'; form-action {form_action}; "
        "frame-ancestors 'none'; base-uri 'none'"
    )
    return HTMLResponse(
        html,
        status_code=page.status,
        headers={
            "Content-Security-Policy": policy,
            "X-Frame-Options": "DENY",
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


_ERROR_TEXT: Final = {
    "invalid_client": "This application is not known here, or it is disabled.",
    "invalid_request": "The sign-in request is incomplete or malformed.",
    "unauthorized_client": "This application may not sign you in this way.",
    "unsupported_response_type": "This application asked for a sign-in flow we do not offer.",
    "invalid_scope": "This application asked for permissions it cannot have.",
    "invalid_target": "This application asked for an API it may not use.",
    "access_denied": "The request was refused.",
    "request_forgery": "This form expired or did not come from this page. Please start again.",
    "unknown_user_code": "That code is unknown or has expired. Check the code on your device.",
    "too_many_codes": "Too many codes were tried. Wait a few minutes, then try again.",
}


def message_page(title: str, code: str, status: int = 400) -> Page:
    """A page with a fixed message for ``code``: never text taken from the request."""
    message = _ERROR_TEXT.get(code, "The request could not be completed.")
    return Page("message.html", {"title": title, "message": message, "code": code}, status)
