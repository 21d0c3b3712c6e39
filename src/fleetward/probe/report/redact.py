"""What a report may print of a request, a reason or a response.

Two nets, both applied to every string a report writes:

* the platform's redaction rules (:mod:`fleetward.observability.redaction`): secrets that
  announce themselves (JWTs, ``Bearer`` credentials, PEM private keys) and values named like
  secrets (``password=``, ``"otp": ...``, ``Authorization:``);
* the literal secrets the run knows (the world manifest's passwords and TOTP secrets, the
  tokens it obtained): a password has no shape, so it is found by value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Final

from fleetward.observability.redaction import REDACTED, is_sensitive_name, redact, scrub_text
from fleetward.probe.model import Request

# Shorter literals would replace ordinary words and numbers of the report, and a secret that
# short is not worth hiding from a report that already names the actor.
MIN_LITERAL_LENGTH: Final = 6
BODY_LIMIT: Final = 2000
# PEM private key blocks are replaced before the platform's rules run: there, a sensitive
# name's value (``"password": "-----BEGIN ...``) can end at the block's first line break and
# leave the key body behind. A block cut short by truncation is replaced to the end.
_PEM_BLOCK_RE: Final = re.compile(
    r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----.*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)",
    re.DOTALL,
)


class Scrubber:
    """Removes secrets from report text. Immutable and safe to share between threads."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        literals = sorted(
            {s for s in secrets if len(s) >= MIN_LITERAL_LENGTH}, key=len, reverse=True
        )
        self._literal_re = re.compile("|".join(map(re.escape, literals))) if literals else None

    def text(self, value: str) -> str:
        # Literals and PEM blocks first: the other rules could cut them in two.
        if self._literal_re is not None:
            value = self._literal_re.sub(REDACTED, value)
        if "-----BEGIN " in value:
            value = _PEM_BLOCK_RE.sub(REDACTED, value)
        return scrub_text(value)

    def optional(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)

    def headers(self, headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        return [
            (self.text(name), REDACTED if is_sensitive_name(name) else self.text(value))
            for name, value in headers
        ]

    def body(self, body: object) -> str | None:
        """The request body as compact JSON text, redacted by key name and by shape."""
        if body is None:
            return None
        text = json.dumps(redact(body), ensure_ascii=False, sort_keys=True, default=str)
        if len(text) > BODY_LIMIT:
            text = text[:BODY_LIMIT] + "..."
        return self.text(text)

    def request_line(self, request: Request) -> str:
        """``GET /path as alice`` (with the credential variant when there is one)."""
        return self.text(request_line(request))


def request_line(request: Request) -> str:
    who = request.actor if request.actor is not None else "anonymous"
    line = f"{request.method} {request.path} as {who}"
    if request.credential:
        line += f" ({request.credential} credential)"
    return line
