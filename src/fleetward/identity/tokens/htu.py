"""HTTP URI comparison for DPoP ``htu`` (RFC 9449 section 4.3, check 9).

Both the proof's ``htu`` and the request URL go through :func:`normalise_htu`: query and
fragment removed, scheme and host lower-cased, default port dropped, empty path made ``/``,
percent-encodings upper-cased and unreserved characters decoded (RFC 3986 section 6.2.2.1-2).
Dot segments are not resolved: that could only turn a match into a mismatch, never the
reverse, and request paths reaching us are already resolved by the HTTP layer.
"""

from __future__ import annotations

import re
import string
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_PERCENT = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset(string.ascii_letters + string.digits + "-._~")


def strip_query_and_fragment(url: str) -> str:
    return url.split("#", 1)[0].split("?", 1)[0]


def _normalise_percent(match: re.Match[str]) -> str:
    char = chr(int(match.group(1), 16))
    return char if char in _UNRESERVED else "%" + match.group(1).upper()


def normalise_htu(url: str) -> str:
    """Canonical ``scheme://host[:port]/path``; raises ``ValueError`` for non-HTTP(S) URLs,
    URLs with user info, or without a host."""
    if not url.isascii() or any(ch.isspace() for ch in url):
        raise ValueError("htu must be ASCII without whitespace")
    parts = urlsplit(strip_query_and_fragment(url))
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("htu must be an http or https URL")
    if parts.username is not None or parts.password is not None:
        raise ValueError("htu must not carry user info")
    host = parts.hostname  # already lower-cased, brackets of IPv6 literals removed
    if not host:
        raise ValueError("htu must have a host")
    port = parts.port  # raises ValueError for a non-numeric or out-of-range port
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    path = _PERCENT.sub(_normalise_percent, parts.path or "/")
    return f"{scheme}://{netloc}{path}"
