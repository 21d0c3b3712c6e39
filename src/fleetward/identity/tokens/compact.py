"""Strict JWS Compact Serialization parsing, shared by access tokens and DPoP proofs.

joserfc does the signature work; this module decides, before any key is touched, whether the
text is even shaped like a JWS we are willing to look at. It is deliberately stricter than
RFC 7515 requires, because every accepted oddity is a place where two parsers may disagree:

* exactly three ``.``-separated segments, ASCII only;
* base64url without padding and in canonical form (re-encoding gives the same text), so one
  token has exactly one spelling and the cache key cannot be varied by an attacker;
* UTF-8 JSON objects with no duplicate member names (RFC 7515 section 5.2 permits rejecting
  them; accepting "last wins" is how ``{"alg":"ES256","alg":"none"}`` tricks happen) and no
  ``NaN``/``Infinity`` literals.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

_B64URL_TEXT = re.compile(r"[A-Za-z0-9_-]*")


class CompactError(ValueError):
    """The text is not an acceptable JWS; ``reason`` names the part that failed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


# The last character of an unpadded segment of length 4n+2 / 4n+3 carries 4 / 2 unused bits;
# these are the characters whose unused bits are zero, i.e. the canonical spellings.
_CANONICAL_LAST = {2: frozenset("AQgw"), 3: frozenset("AEIMQUYcgkosw048")}


def b64url_decode(segment: str) -> bytes:
    """Decode unpadded, canonical base64url; anything else raises ``ValueError``."""
    remainder = len(segment) % 4
    if remainder == 1 or _B64URL_TEXT.fullmatch(segment) is None:
        raise ValueError("not base64url")
    # Non-zero unused bits decode to the same bytes; refusing them keeps one spelling.
    if remainder and segment[-1] not in _CANONICAL_LAST[remainder]:
        raise ValueError("not canonical base64url")
    try:
        return base64.urlsafe_b64decode(segment + "=" * (4 - remainder if remainder else 0))
    except binascii.Error as exc:
        raise ValueError("not base64url") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError("duplicate member name")
        result[name] = value
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"non-standard JSON literal {name}")


# Built once: json.loads with hooks would construct a new decoder on every call.
_STRICT_JSON = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants)


def loads_object(data: bytes) -> dict[str, Any]:
    """Parse strict JSON whose top level must be an object; raises ``ValueError`` otherwise."""
    text = data.decode("utf-8")  # strict: invalid UTF-8 raises UnicodeDecodeError (ValueError)
    value = _STRICT_JSON.decode(text)
    if not isinstance(value, dict):
        raise ValueError("not a JSON object")
    return value


def dumps_compact_json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


@dataclass(frozen=True, slots=True)
class CompactJws:
    """A split, header-decoded JWS whose signature has NOT been checked."""

    header_segment: str
    payload_segment: str
    signature_segment: str
    unverified_header: dict[str, Any]

    @property
    def signing_input(self) -> bytes:
        return f"{self.header_segment}.{self.payload_segment}".encode("ascii")

    def signature(self) -> bytes:
        try:
            return b64url_decode(self.signature_segment)
        except ValueError as exc:
            raise CompactError("bad-signature") from exc

    def decode_payload(self) -> dict[str, Any]:
        """Decode the payload. Callers verify the signature first: payload bytes are not even
        parsed while they may still be attacker-chosen."""
        try:
            return loads_object(b64url_decode(self.payload_segment))
        except (ValueError, RecursionError) as exc:
            raise CompactError("malformed-payload") from exc


def split_compact(raw: str) -> CompactJws:
    """Split and decode the header of a compact JWS, refusing any non-canonical shape."""
    if not raw.isascii():
        raise CompactError("malformed")
    parts = raw.split(".")
    if len(parts) != 3:
        raise CompactError("malformed")
    header_segment, payload_segment, signature_segment = parts
    if not header_segment or not payload_segment:
        # An empty payload would mean RFC 7797 detached content, which we never use.
        raise CompactError("malformed")
    try:
        header = loads_object(b64url_decode(header_segment))
    except (ValueError, RecursionError) as exc:
        raise CompactError("malformed-header") from exc
    return CompactJws(header_segment, payload_segment, signature_segment, header)
