"""The login pages' cookies and their attributes, in one place.

``fw_login`` (the session) is SameSite=Lax so that a client's top-level redirect to the
authorization endpoint still carries it. ``fw_pending`` and the CSRF cookie are Strict:
only our own pages ever need them. All are HttpOnly, and Secure whenever the configured
public URL is https (the CSRF cookie then also takes the ``__Host-`` prefix).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fleetward.identity.login import pending
from fleetward.identity.login.runtime import LoginRuntime
from fleetward.identity.sessions import COOKIE_NAME as SESSION_COOKIE
from fleetward.identity.sessions import SESSION_LIFETIME


def csrf_cookie_name(rt: LoginRuntime) -> str:
    return "__Host-fw_csrf" if rt.secure_cookies else "fw_csrf"


def csrf_value(request: Request, rt: LoginRuntime) -> tuple[str, bool]:
    """The browser's CSRF cookie value, or a new one (True: it must be set)."""
    current = request.cookies.get(csrf_cookie_name(rt))
    if current and 20 <= len(current) <= 128 and current.isascii():
        return current, False
    return rt.csrf.new_cookie_value(), True


def set_csrf(response: Response, rt: LoginRuntime, value: str) -> None:
    response.set_cookie(
        csrf_cookie_name(rt),
        value,
        path="/",
        secure=rt.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def set_session(response: Response, rt: LoginRuntime, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=int(SESSION_LIFETIME.total_seconds()),
        path="/",
        secure=rt.secure_cookies,
        httponly=True,
        samesite="lax",
    )


def clear_session(response: Response, rt: LoginRuntime) -> None:
    response.delete_cookie(
        SESSION_COOKIE, path="/", secure=rt.secure_cookies, httponly=True, samesite="lax"
    )


def set_pending(response: Response, rt: LoginRuntime, value: str) -> None:
    response.set_cookie(
        pending.COOKIE_NAME,
        value,
        max_age=int(pending.LIFETIME.total_seconds()),
        path=pending.COOKIE_PATH,
        secure=rt.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def clear_pending(response: Response, rt: LoginRuntime) -> None:
    response.delete_cookie(
        pending.COOKIE_NAME,
        path=pending.COOKIE_PATH,
        secure=rt.secure_cookies,
        httponly=True,
        samesite="strict",
    )


def csrf_ok(request: Request, rt: LoginRuntime, token: str | None) -> bool:
    # Fetch metadata, when the browser sends it, refuses cross-site posts outright; the
    # signed token is the check that works everywhere.
    if request.headers.get("sec-fetch-site", "same-origin") == "cross-site":
        return False
    return rt.csrf.valid(request.cookies.get(csrf_cookie_name(rt)), token)
