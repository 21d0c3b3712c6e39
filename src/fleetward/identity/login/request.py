"""What a login request asks for: where to go afterwards, how strong and fresh, for whom.

``return_to`` is the open-redirect surface of any login page. It is accepted only as a
same-origin relative path under ``/oauth/`` (the authorization endpoint sends people here),
checked both as sent and percent-decoded, so that ``//evil``, ``/oauth/../x``, backslashes,
encoded slashes, control characters and non-ASCII look-alikes all fall back to the safe
default. A bad ``return_to`` is never an error: the login still works, it just lands home.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from fleetward.identity.acr import Acr
from fleetward.identity.login.errors import InvalidLoginRequest

DEFAULT_RETURN_TO = "/account"
RETURN_PREFIX = "/oauth/"
MAX_RETURN_TO = 2048
MAX_MAX_AGE = 31 * 24 * 3600
# Digits of a max_age worth converting: int() refuses (ValueError) strings past 4300 digits,
# and nothing longer than this can be within MAX_MAX_AGE anyway.
_MAX_AGE_DIGITS = 9
# Printable ASCII without space, backslash, quotes or angle brackets.
_SAFE_CHARS = re.compile(r"^[!#$%&'()*+,\-./0-9:;=?@A-Z\[\]^_`a-z{|}~]*$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _path_is_safe(path: str) -> bool:
    if not path.startswith(RETURN_PREFIX) or "\\" in path or "//" in path:
        return False
    # Any dot segment could walk out of /oauth/ once a browser or proxy normalises it.
    return all(segment not in (".", "..") for segment in path.split("/"))


def safe_return_to(value: str | None) -> str:
    """``value`` if it is a safe same-origin path under /oauth/, else the default."""
    if not value or len(value) > MAX_RETURN_TO or not _SAFE_CHARS.fullmatch(value):
        return DEFAULT_RETURN_TO
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or parts.fragment:
        return DEFAULT_RETURN_TO
    decoded = unquote(parts.path)
    twice = unquote(decoded)  # double encoding (%252e) must not hide a dot segment either
    if not all(_path_is_safe(p) for p in (parts.path, decoded, twice)):
        return DEFAULT_RETURN_TO
    if not _SAFE_CHARS.fullmatch(twice):
        return DEFAULT_RETURN_TO  # encoded control characters or non-ASCII
    return value


def client_id_in(return_to: str) -> str | None:
    """The ``client_id`` the authorization request carries, if any."""
    values = parse_qs(urlsplit(return_to).query).get("client_id", [])
    return values[0] if len(values) == 1 and _CLIENT_ID.fullmatch(values[0]) else None


@dataclass(frozen=True, slots=True)
class LoginRequest:
    return_to: str = DEFAULT_RETURN_TO
    client_id: str | None = None
    required_acr: Acr | None = None
    max_age: int | None = None

    @classmethod
    def parse(
        cls,
        *,
        return_to: str | None,
        client_id: str | None = None,
        acr: str | None = None,
        max_age: str | None = None,
    ) -> LoginRequest:
        """Raises InvalidLoginRequest for an unknown acr or a malformed max_age.

        Those come from the authorization endpoint; guessing a weaker meaning for a value
        we do not understand would fail open, so they are refused instead.
        """
        target = safe_return_to(return_to)
        chosen_client = client_id_in(target)
        if chosen_client is None and client_id and _CLIENT_ID.fullmatch(client_id):
            chosen_client = client_id
        required: Acr | None = None
        if acr:
            try:
                required = Acr(acr)
            except ValueError:
                raise InvalidLoginRequest("unknown acr value", reason="acr") from None
        age: int | None = None
        if max_age:
            if (
                len(max_age) > _MAX_AGE_DIGITS
                or not max_age.isascii()
                or not max_age.isdigit()
                or int(max_age) > MAX_MAX_AGE
            ):
                raise InvalidLoginRequest("max_age must be a number of seconds", reason="max_age")
            age = int(max_age)
        return cls(target, chosen_client, required, age)
