"""RFC 9068 access token claims as a typed value.

Wire format (JSON payload of an ``at+jwt``)::

    iss sub aud exp iat nbf jti client_id scope tenant auth_time acr amr sub_type
    [fam]            refresh-token family id, when the token came from a refresh grant
    [cnf.jkt]        RFC 9449 DPoP key thumbprint, when the token is sender-constrained

Times are integer NumericDate seconds: we are the only issuer and always write integers, so a
fractional or string time is refused as invalid rather than interpreted. ``sub``, ``tenant``
and ``client_id`` are opaque ids: no personal data (names, e-mail, VIN) ever goes in a token.

``aud`` is always issued as one string. On input a one-element list holding that same string
is accepted (RFC 7519 allows either form, and some client libraries re-serialise to a list);
any other list is refused, because a multi-audience token could be replayed across surfaces.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Literal, get_args

SubjectType = Literal["user", "workload"]
SUBJECT_TYPES: Final = frozenset(get_args(SubjectType))

# RFC 6749 section 3.3 scope-token characters.
SCOPE_TOKEN: Final = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_MAX_TEXT = 512
# Every permission is a scope: room for the whole vocabulary several times over.
_MAX_SCOPE = 4096


class ClaimError(ValueError):
    """A claim is missing (``reason="missing-claim"``), ill-typed (``"invalid-claim"``) or, for
    ``aud``, a list of more than one audience (``"wrong-audience"``)."""

    def __init__(self, reason: str, claim: str) -> None:
        super().__init__(f"{reason}: {claim}")
        self.reason = reason
        self.claim = claim


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    """Claims of an access token. Field names follow the claim names; times are epoch seconds.

    A value of this type only ever comes from :class:`AccessTokenIssuer` or from a token whose
    signature, issuer, audience, times and revocation were all checked.
    """

    iss: str
    sub: str
    aud: str
    exp: int
    iat: int
    nbf: int
    jti: str
    client_id: str
    scopes: frozenset[str]
    tenant: str
    auth_time: int
    acr: str
    amr: tuple[str, ...]
    sub_type: SubjectType
    fam: str | None = None
    cnf_jkt: str | None = field(default=None)

    @property
    def issued_at(self) -> datetime:
        return datetime.fromtimestamp(self.iat, UTC)

    @property
    def expires_at(self) -> datetime:
        return datetime.fromtimestamp(self.exp, UTC)

    @property
    def authenticated_at(self) -> datetime:
        return datetime.fromtimestamp(self.auth_time, UTC)

    @property
    def scope(self) -> str:
        """The ``scope`` claim: scopes space-separated, sorted so equal sets spell the same."""
        return " ".join(sorted(self.scopes))

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "iss": self.iss,
            "sub": self.sub,
            "aud": self.aud,
            "exp": self.exp,
            "iat": self.iat,
            "nbf": self.nbf,
            "jti": self.jti,
            "client_id": self.client_id,
            "scope": self.scope,
            "tenant": self.tenant,
            "auth_time": self.auth_time,
            "acr": self.acr,
            "amr": list(self.amr),
            "sub_type": self.sub_type,
        }
        if self.fam is not None:
            payload["fam"] = self.fam
        if self.cnf_jkt is not None:
            payload["cnf"] = {"jkt": self.cnf_jkt}
        return payload

    @classmethod
    def from_payload(cls, verified: Mapping[str, Any]) -> AccessTokenClaims:
        """Type-check a signature-verified payload. Issuer and audience VALUES are not checked
        here (the validator owns those); only presence and types."""
        iat = _numeric_date(verified, "iat")
        scope = _text(verified, "scope", allow_empty=True, limit=_MAX_SCOPE)
        scopes = scope.split(" ") if scope else []
        if any(SCOPE_TOKEN.fullmatch(item) is None for item in scopes):
            raise ClaimError("invalid-claim", "scope")
        sub_type = _text(verified, "sub_type")
        if sub_type not in SUBJECT_TYPES:
            raise ClaimError("invalid-claim", "sub_type")
        amr = verified.get("amr", [])
        if not isinstance(amr, list) or not all(isinstance(m, str) and m for m in amr):
            raise ClaimError("invalid-claim", "amr")
        cnf = verified.get("cnf")
        cnf_jkt: str | None = None
        if cnf is not None:
            if not isinstance(cnf, dict):
                raise ClaimError("invalid-claim", "cnf")
            cnf_jkt = _text(cnf, "jkt")
        fam = verified.get("fam")
        if fam is not None and (not isinstance(fam, str) or not fam):
            raise ClaimError("invalid-claim", "fam")
        nbf = _numeric_date(verified, "nbf") if "nbf" in verified else iat
        return cls(
            iss=_text(verified, "iss"),
            sub=_text(verified, "sub"),
            aud=_audience(verified),
            exp=_numeric_date(verified, "exp"),
            iat=iat,
            nbf=nbf,
            jti=_text(verified, "jti"),
            client_id=_text(verified, "client_id"),
            scopes=frozenset(scopes),
            tenant=_text(verified, "tenant"),
            auth_time=_numeric_date(verified, "auth_time"),
            acr=_text(verified, "acr"),
            amr=tuple(amr),
            sub_type="user" if sub_type == "user" else "workload",
            fam=fam,
            cnf_jkt=cnf_jkt,
        )


_MISSING: Final = object()


def _text(
    source: Mapping[str, Any], name: str, *, allow_empty: bool = False, limit: int = _MAX_TEXT
) -> str:
    value = source.get(name, _MISSING)
    if type(value) is str and (value or allow_empty) and len(value) <= limit:
        return value
    raise ClaimError("missing-claim" if value is _MISSING else "invalid-claim", name)


def _numeric_date(source: Mapping[str, Any], name: str) -> int:
    value = source.get(name, _MISSING)
    # `type(...) is int` also refuses bool, an int subclass: `true` is not a time.
    if type(value) is int and value >= 0:
        return value
    raise ClaimError("missing-claim" if value is _MISSING else "invalid-claim", name)


def _audience(source: Mapping[str, Any]) -> str:
    if "aud" not in source:
        raise ClaimError("missing-claim", "aud")
    value = source["aud"]
    if isinstance(value, list):
        if len(value) != 1:
            # A token naming several audiences could be replayed across surfaces.
            raise ClaimError("wrong-audience", "aud")
        value = value[0]
    if not isinstance(value, str) or not value:
        raise ClaimError("invalid-claim", "aud")
    return value
