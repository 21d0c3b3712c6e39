"""The HTTP adapter: Starlette requests in, Authlib ``OAuth2Request`` objects; Authlib's
``(status, body, headers)`` out, Starlette responses.

The body is read (async) before Authlib runs, with a size cap, the RFC 6749 media type and a
field cap. A parameter given twice is refused here for every endpoint (RFC 6749 sections 3.1
and 3.2), except ``resource``, whose repetition the target check refuses with its own code.
The request URI handed to Authlib is built from the configured issuer, not the Host header.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import parse_qsl

from authlib.oauth2.rfc6749 import OAuth2Payload, OAuth2Request
from starlette.requests import Request
from starlette.responses import Response

from fleetward.core.surfaces import Surface
from fleetward.identity.oauth.principal import Principal

FORM_MEDIA_TYPE: Final = "application/x-www-form-urlencoded"
MAX_BODY_BYTES: Final = 16 * 1024
MAX_FIELDS: Final = 40
# RFC 8707 allows several; we refuse more than one with invalid_target, not invalid_request.
REPEATABLE: Final = frozenset({"resource"})


class BadForm(Exception):
    """The body is not a small, well-formed, UTF-8 form (``reason`` says which)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


Pairs = list[tuple[str, str]]


def parse_pairs(text: str) -> Pairs:
    try:
        return parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_FIELDS, errors="strict")
    except ValueError:  # too many fields, or percent-escapes that are not UTF-8
        raise BadForm("malformed") from None


async def read_form(request: Request) -> Pairs:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != FORM_MEDIA_TYPE:
        raise BadForm("media-type")
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
        raise BadForm("too-large")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise BadForm("too-large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadForm("malformed") from None
    return parse_pairs(text)


def repeated(pairs: Pairs) -> bool:
    seen: set[str] = set()
    for name, _value in pairs:
        if name in seen and name not in REPEATABLE:
            return True
        seen.add(name)
    return False


@dataclass(slots=True)
class RequestFacts:
    """What our grants establish about a request while Authlib validates it."""

    surface: Surface | None = None
    principal: Principal | None = None
    required_acr: str | None = None
    max_age: int | None = None
    dpop_jkt: str | None = None


class _Payload(OAuth2Payload):  # type: ignore[misc]  # authlib is untyped
    def __init__(self, pairs: Pairs) -> None:
        datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in pairs:
            datalist[name].append(value)
        self._datalist = datalist
        self._data = {name: values[0] for name, values in datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class FleetwardRequest(OAuth2Request):  # type: ignore[misc]
    """An ``OAuth2Request`` over already-read parameters: the query for the authorization
    endpoint, the form body for every other endpoint (never both, so a token request's secrets
    cannot come from a URL that proxies log)."""

    def __init__(
        self, method: str, uri: str, headers: Mapping[str, str], pairs: Pairs, *, in_body: bool
    ) -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = _Payload(pairs)
        self._form: dict[str, str] = self.payload.data if in_body else {}
        self._args: dict[str, str] = {} if in_body else self.payload.data
        self.facts = RequestFacts()

    @property
    def form(self) -> dict[str, str]:
        return self._form

    @property
    def args(self) -> dict[str, str]:
        return self._args


@dataclass(slots=True)
class OAuthResponse:
    """Authlib's ``(status, body, headers)``; ``location`` is mutable for RFC 9207's ``iss``."""

    status: int
    body: Any
    headers: list[tuple[str, str]]

    @property
    def location(self) -> str | None:
        for name, value in self.headers:
            if name.lower() == "location":
                return value
        return None

    @location.setter
    def location(self, value: str) -> None:
        self.headers = [(n, v) for n, v in self.headers if n.lower() != "location"]
        self.headers.append(("Location", value))

    @property
    def error(self) -> str | None:
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), str):
            return str(self.body["error"])
        return None


def to_starlette(response: OAuthResponse) -> Response:
    body = response.body
    content = json.dumps(body) if isinstance(body, dict) else str(body or "")
    headers = {name: value for name, value in response.headers}
    headers.setdefault("Cache-Control", "no-store")
    return Response(content=content, status_code=response.status, headers=headers)


def json_error(error: str, description: str, status: int = 400) -> Response:
    """An RFC 6749 error for failures found before Authlib runs (body, DPoP header)."""
    return to_starlette(
        OAuthResponse(
            status,
            {"error": error, "error_description": description},
            [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
        )
    )
