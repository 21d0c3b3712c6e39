"""Redaction: removes secrets from anything on its way into a log line.

This module owns the project rule "nothing reusable is logged". Two mechanisms apply to every
value handed to :func:`redact`:

* by name: a mapping entry whose key names a secret (``password``, ``Authorization``,
  ``refresh_token``, ``X-Api-Key``...) has its whole value replaced, however it is nested;
* by shape: every string is scanned once for secrets that announce themselves (JWS/JWE compact
  tokens, ``Bearer``/``DPoP``/``Basic`` credentials, PEM private keys, passwords in URLs) and
  for ``name=value``, ``"name": value`` and ``Cookie: ...`` pairs whose name is sensitive.
  Only the secret part is replaced, so ``/cb?code=x&state=y`` becomes
  ``/cb?code=[redacted]&state=y``.

Identifiers are not secrets and survive: ``jti``, ``kid``, ``sub``, ``key_id``, request and
trace ids. Redaction is best effort for free text, so code should still never log a secret on
purpose; it is the net, not the policy.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Iterable, Mapping
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, Final
from uuid import UUID

from structlog.typing import EventDict, WrappedLogger

REDACTED: Final = "[redacted]"

# Containers nested deeper than this are replaced whole: it bounds the work one log call can
# cause and ends self-referencing structures without a RecursionError.
MAX_DEPTH: Final = 8

# The name rule. A key or parameter name is sensitive when, ignoring case and treating "-",
# "_" and no separator alike between its words (so "client_secret", "Client-Secret" and
# "clientSecret" are one name), it
#   1. is one of _EXACT_NAMES: words that are secrets only on their own ("code" is the OAuth
#      authorization code, "status_code" and "country_code" are not), or
#   2. ends with one of _SUFFIXES ("db_password", "csrf-token", "totp_secret", "Set-Cookie"), or
#   3. has "key" as its last word: "key", "signing_key", "X-Api-Key", "signingKey"; but not
#      "kid", "key_id", "keyId", "monkey" or "hockey", whose last word is not "key",
# and it is not one of _NOT_SECRET_KEYS (names ending in "key" that label data, not key
# material). The allowlist applies to mapping keys and ``name=value`` pairs alike.
_EXACT_NAMES: Final = (
    "pass",
    "pin",
    "otp",
    "totp",
    "code",
    "code_verifier",
    "dpop",
    "dpop_proof",
    "session",
    "session_id",
    "client_assertion",
    "sig",
    "x_amz_signature",
    "auth_code",
    "authorization_code",
    "device_code",
    "user_code",
    "verification_code",
    "otp_code",
    "totp_code",
    "mfa_code",
    "recovery_code",
    "recovery_codes",
    "backup_code",
    "backup_codes",
    "password_hash",
    "password_confirmation",
    "private_key_pem",
)
_SUFFIXES: Final = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "tokens",
    "cookie",
    "cookies",
    "credential",
    "credentials",
    "authorization",
    "api_key",
    "private_key",
)
_NOT_SECRET_KEYS: Final = frozenset(
    {
        "publickey",
        "cachekey",
        "idempotencykey",
        "partitionkey",
        "sortkey",
        "primarykey",
        "foreignkey",
        "routingkey",
    }
)

# A JSON Web Key carries its private material in one-letter members; they are only secrets
# inside a mapping that is a JWK, recognised by its mandatory "kty".
_JWK_PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "k", "oth"})

# ProcessorFormatter's bookkeeping entries: they must reach its later processors untouched.
_PROCESSOR_META: Final = frozenset({"_record", "_from_structlog"})

# Values that cannot hold a secret and that renderers know how to print.
_PLAIN_TYPES: Final = (bool, int, float, Decimal, UUID, datetime, date, time, timedelta)

# Names longer than this are classified without the cache, so hostile keys cannot fill it
# with large strings.
_CACHEABLE_NAME_LENGTH: Final = 64


def _alternation(names: Iterable[str]) -> str:
    return "|".join("[_-]?".join(re.escape(word) for word in name.split("_")) for name in names)


_SENSITIVE_NAME_RE: Final = re.compile(
    "(?i:"
    f"(?:{_alternation(_EXACT_NAMES)})"
    f"|[a-z0-9_.-]*?(?:{_alternation(_SUFFIXES)})"
    r"|(?:[a-z0-9]+[_.-])*key"
    r"|[a-z0-9]+(?-i:Key)"
    ")"
)


def _normalized(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(".", "")


def _inspect_name(name: str) -> tuple[bool, str]:
    sensitive = (
        _normalized(name) not in _NOT_SECRET_KEYS and _SENSITIVE_NAME_RE.fullmatch(name) is not None
    )
    return sensitive, scrub_text(name)


# Mapping keys come from a small, code-defined set, so their verdicts are cached.
_inspect_name_cached = lru_cache(maxsize=4096)(_inspect_name)


def _name_verdict(name: str) -> tuple[bool, str]:
    """Whether *name* is sensitive, and the form of it that may be printed."""
    if len(name) > _CACHEABLE_NAME_LENGTH:
        return _inspect_name(name)
    return _inspect_name_cached(name)


def is_sensitive_name(name: str) -> bool:
    """Whether a mapping key or parameter called *name* holds a secret (see the name rule)."""
    return _name_verdict(name)[0]


def _mask(value: str) -> str:
    """Replace a whole value, keeping its quoting so the surrounding text still parses."""
    if value[:1] in ('"', "'"):
        return f"{value[0]}{REDACTED}{value[0]}"
    if value[:2] in ('b"', "b'"):
        return f"b{value[1]}{REDACTED}{value[1]}"
    return REDACTED


# Free text is scanned in one pass over "trigger" positions found by C-level searches: the
# separators "=" and ":" and the literals that start a self-announcing secret. Python code
# runs only at those positions, which keeps a typical log line at a few microseconds; every
# regex below is anchored at a trigger and is linear in what it consumes.
_Found = tuple[int, int, str]  # start and end of the secret, and its replacement

_NAME_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_.-")
_B64URL_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_-")
_URL_SCHEME_CHARS: Final = frozenset(string.ascii_letters + string.digits + "+.-")
_WORD_CHARS: Final = frozenset(string.ascii_letters + string.digits + "_")
_MAX_NAME: Final = 64
_HEADER_NAMES: Final = frozenset({"authorization", "proxy-authorization", "cookie", "set-cookie"})
# HTTP auth schemes are case-insensitive, but "basic" is too common in prose to match lowercase.
_AUTH_SCHEMES: Final = ("Bearer", "bearer", "BEARER", "DPoP", "dpop", "DPOP", "Basic", "BASIC")
_PEM_START: Final = "-----BEGIN "
_JWT_START: Final = "eyJ"

_QUOTED: Final = r""""(?:[^"\\\r\n]|\\.)*"|'(?:[^'\\\r\n]|\\.)*'"""
_SEPARATOR_RE: Final = re.compile("[=:]")
# The value of "name=value" ends where a query, form or cookie parameter would.
_PARAM_VALUE_RE: Final = re.compile(rf"{_QUOTED}|[^&\s#;,\"'<>]+")
# The value of '"name": value' in JSON or a Python repr.
_KEYED_VALUE_RE: Final = re.compile(rf"[ \t]*(b?(?:{_QUOTED})|[^\s,}}\]]+)")
_HEADER_VALUE_RE: Final = re.compile(r"[ \t]*([^\r\n]+)")
# The password of scheme://user:password@host (database URLs, proxies).
_USERINFO_RE: Final = re.compile(r"[^/\s:@]+:([^/\s@]+)@")
# Compact JWS (3 segments, the signature may be empty) or JWE (5 segments); the JOSE header is
# base64url JSON, so it always starts with "eyJ".
_JWT_RE: Final = re.compile(r"eyJ[\w-]+\.[\w-]*\.[\w-]*(?:\.[\w-]*\.[\w-]*)?", re.ASCII)
# Any kind of PEM private key; a block cut short by truncation is redacted to the end.
_PEM_RE: Final = re.compile(
    r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
    r".*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)
_CREDENTIAL_RE: Final = re.compile(r"[ \t]+([A-Za-z0-9._~+/-]+=*)")


def _name_before(text: str, end: int, floor: int, allowed: frozenset[str]) -> str:
    start = end
    floor = max(floor, end - _MAX_NAME)
    while start > floor and text[start - 1] in allowed:
        start -= 1
    return text[start:end]


def _after_equals(text: str, at: int, trigger: str, floor: int) -> _Found | None:
    name = _name_before(text, at, floor, _NAME_CHARS)
    if not name or not is_sensitive_name(name):
        return None
    value = _PARAM_VALUE_RE.match(text, at + 1)
    if value is None:
        return None
    return value.start(), value.end(), _mask(value.group())


def _after_colon(text: str, at: int, trigger: str, floor: int) -> _Found | None:
    if text.startswith("//", at + 1):
        return _url_password(text, at, trigger, floor)
    end = at
    while end > max(floor, at - 4) and text[end - 1] in " \t":
        end -= 1
    if end > floor and text[end - 1] in "\"'":
        # '"name": value': the name sits between two identical quotes.
        opening = text.rfind(text[end - 1], max(floor, end - _MAX_NAME - 2), end - 1)
        name = text[opening + 1 : end - 1]
        if opening < 0 or not _NAME_CHARS.issuperset(name) or not is_sensitive_name(name):
            return None
        value = _KEYED_VALUE_RE.match(text, at + 1)
    else:
        # "Cookie: a=b; c=d" in a dumped request: the rest of the line is the secret. Header
        # names end in a letter, which rules out timestamps and host:port cheaply.
        if not text[end - 1 : end].isalpha():
            return None
        name = _name_before(text, end, floor, _NAME_CHARS)
        if name.lower() not in _HEADER_NAMES:
            return None
        value = _HEADER_VALUE_RE.match(text, at + 1)
    if value is None:
        return None
    return value.start(1), value.end(1), _mask(value.group(1))


def _url_password(text: str, at: int, trigger: str, floor: int) -> _Found | None:
    scheme = _name_before(text, at, floor, _URL_SCHEME_CHARS)
    if not scheme[:1].isalpha():
        return None
    userinfo = _USERINFO_RE.match(text, at + 3)
    if userinfo is None:
        return None
    return userinfo.start(1), userinfo.end(1), REDACTED


def _jwt(text: str, at: int, trigger: str, floor: int) -> _Found | None:
    if at > 0 and text[at - 1] in _B64URL_CHARS:
        return None
    token = _JWT_RE.match(text, at)
    if token is None:
        return None
    return at, token.end(), REDACTED


def _pem(text: str, at: int, trigger: str, floor: int) -> _Found | None:
    block = _PEM_RE.match(text, at)
    if block is None:
        return None
    return at, block.end(), REDACTED


def _credential(text: str, at: int, trigger: str, floor: int) -> _Found | None:
    if at > 0 and text[at - 1] in _WORD_CHARS:
        return None
    credential = _CREDENTIAL_RE.match(text, at + len(trigger))
    if credential is None:
        return None
    return credential.start(1), credential.end(1), REDACTED


_Handler = Callable[[str, int, str, int], _Found | None]
_HANDLERS: Final[dict[str, _Handler]] = {
    "=": _after_equals,
    ":": _after_colon,
    _JWT_START: _jwt,
    _PEM_START: _pem,
    **dict.fromkeys(_AUTH_SCHEMES, _credential),
}
_LITERALS: Final = (_JWT_START, _PEM_START, *_AUTH_SCHEMES)


def _may_hold_secret(text: str) -> bool:
    """False when *text* has no trigger at all: the common case, decided at C speed."""
    if "=" in text or ":" in text or _JWT_START in text or _PEM_START in text:
        return True
    lowered = text.lower()
    return "bearer" in lowered or "dpop" in lowered or "basic" in lowered


def scrub_text(text: str) -> str:
    """Return *text* with every secret recognised by shape or by name replaced."""
    if not _may_hold_secret(text):
        return text
    # Whole key blocks first: a name-triggered match ("password": "-----BEGIN ...") would
    # otherwise end at the first space and leave the key's body in the text.
    text = _PEM_RE.sub(REDACTED, text)
    triggers = [(found.start(), found.group()) for found in _SEPARATOR_RE.finditer(text)]
    for literal in _LITERALS:
        at = text.find(literal)
        while at >= 0:
            triggers.append((at, literal))
            at = text.find(literal, at + 1)
    if not triggers:
        return text
    triggers.sort()
    parts: list[str] = []
    copied = 0  # text[:copied] is already in parts, replaced where it held a secret
    for at, trigger in triggers:
        if at < copied:
            continue  # inside a secret already replaced
        found = _HANDLERS[trigger](text, at, trigger, copied)
        if found is not None:
            start, end, replacement = found
            parts.append(text[copied:start])
            parts.append(replacement)
            copied = end
    if not parts:
        return text
    parts.append(text[copied:])
    return "".join(parts)


def redact(value: object) -> object:
    """Return a copy of *value* that is safe to log; *value* itself is never modified.

    Mappings, lists, tuples and sets are copied with sensitive entries replaced by
    :data:`REDACTED` and every string scrubbed; numbers, dates and UUIDs are kept; any other
    object becomes its scrubbed ``repr`` (what a JSON renderer would print anyway).
    """
    return _redact(value, 0)


def redact_event_dict(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor applying :func:`redact` to every entry, the event message included."""
    return _redact_mapping(event_dict, 0, keep=_PROCESSOR_META)


def _redact(value: object, depth: int) -> object:
    if isinstance(value, str):
        return scrub_text(value)
    if value is None or isinstance(value, _PLAIN_TYPES):
        return value
    if depth >= MAX_DEPTH:
        return REDACTED
    if isinstance(value, Mapping):
        return _redact_mapping(value, depth)
    if isinstance(value, list):
        return [_redact(item, depth + 1) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact(item, depth + 1) for item in value)
    if isinstance(value, frozenset):
        return frozenset(_redact(item, depth + 1) for item in value)
    if isinstance(value, set):
        return {_redact(item, depth + 1) for item in value}
    return scrub_text(_safe_repr(value))


def _redact_mapping(
    mapping: Mapping[Any, object], depth: int, keep: frozenset[str] = frozenset()
) -> dict[Any, object]:
    is_jwk = "kty" in mapping
    redacted: dict[Any, object] = {}
    for key, item in mapping.items():
        if not isinstance(key, str):
            # JSON only has string and number keys; any other key is printed as its repr.
            plain = key is None or isinstance(key, int | float)
            redacted[key if plain else scrub_text(_safe_repr(key))] = _redact(item, depth + 1)
        elif key in keep:
            redacted[key] = item
        else:
            sensitive, printable = _name_verdict(key)
            if sensitive or (is_jwk and key in _JWK_PRIVATE_MEMBERS):
                # None says "absent", which is useful and reveals nothing.
                redacted[printable] = None if item is None else REDACTED
            else:
                redacted[printable] = _redact(item, depth + 1)
    return redacted


def _safe_repr(value: object) -> str:
    # A broken __repr__ must not turn a log call into a crash.
    try:
        return repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__qualname__}>"
