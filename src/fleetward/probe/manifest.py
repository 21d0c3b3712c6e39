"""The world manifest: what ``fleetward probe seed`` created, and what the prober reads.

The seed runs on the deployment host and writes this file (mode 0600: it holds passwords,
TOTP seeds and a partner client's private key, all for probe fixtures on the probe's own
deployment). The prober reads it and speaks HTTP only.

Objects are recorded per type, scenario (the spec's anchor) and side: the ``home`` side and
the ``away`` side are twin worlds in different tenants, each with its own actors. An actor
probed against an object of its own side is in the ``same`` tenant; of the other side, in the
``other`` tenant.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from fleetward.probe.spec.models import Side

MANIFEST_FORMAT: Final = "fleetward-probe-world/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PartnerKey(_Strict):
    """A partner client's credentials for client credentials with ``private_key_jwt``."""

    client_id: str
    # The private key as a JWK (EC P-256, ES256), with its ``kid``.
    private_jwk: dict[str, Any]
    kid: str
    algorithm: Literal["ES256"] = "ES256"
    scopes: list[str] = Field(default_factory=list)


class LoginClient(_Strict):
    """The public client the prober uses for the authorization code flow with PKCE."""

    client_id: str
    redirect_uri: str
    surfaces: list[str]


class ManifestActor(_Strict):
    """One probe actor: the spec's role in one relationship state on one side."""

    name: str  # "<role>:<state>:<side>" (spec.models.actor_name)
    role: str
    state: str
    side: Side
    kind: Literal["user", "partner"]
    tenant_id: str
    tenant_slug: str
    surfaces: list[str]  # surfaces a token can be obtained for
    # Users: the real login (password, then TOTP).
    user_id: str | None = None
    username: str | None = None
    password: str | None = None
    totp_secret: str | None = None  # base32
    # Partners: the client they act as.
    client: PartnerKey | None = None


class ObjectRecord(_Strict):
    """One seeded object instance."""

    type: str  # the spec's object type name
    anchor: str  # the scenario it belongs to
    side: Side
    tenant_id: str | None = None
    # The relationship state the instance was prepared in when it matters (e.g. "closed").
    state: str | None = None
    # Path parameter -> value, including the parents' parameters (vehicle_id for a trip).
    ids: dict[str, str]
    # Random strings written into the object's fields; none may appear in a denied response.
    canaries: list[str] = Field(default_factory=list)
    # Parent object type -> id.
    parents: dict[str, str] = Field(default_factory=dict)
    # A twin made for routes that consume their target (spec ``Route.spare``).
    spare: bool = False
    # A spare reserved for one actor's allowed call, when several actors may consume one.
    actor: str | None = None


class Manifest(_Strict):
    format: Literal["fleetward-probe-world/1"] = MANIFEST_FORMAT
    run_id: str  # unique per seed run; every probe username and name carries it
    created_at: str  # ISO 8601, UTC
    spec_name: str
    policy_version: str | None = None  # the deployment's policy hash at seed time
    login_client: LoginClient
    actors: list[ManifestActor]
    objects: list[ObjectRecord]
    # Surface -> an access token minted by the platform's issuer, already expired.
    expired_tokens: dict[str, str] = Field(default_factory=dict)
    # Actor -> surface -> a valid access token minted by the platform's issuer from a
    # multi-factor sign-in an hour before the seed: past any step-up window (the probe's
    # "no step-up" credential, ``stale-auth``). Valid for the issuer's longest lifetime.
    stale_auth_tokens: dict[str, dict[str, str]] = Field(default_factory=dict)
    # Actor -> surface -> a valid access token minted by the platform's issuer from a
    # password-only sign-in (``acr`` password, ``amr`` pwd) at the seed: recent, but too weak
    # for a step-up (the probe's "password only" credential). Valid for the issuer's longest
    # lifetime; it proves the strength is checked only while the sign-in is younger than the
    # step-up window (``password_only_signed_in_at``, ISO 8601 UTC).
    password_only_tokens: dict[str, dict[str, str]] = Field(default_factory=dict)
    password_only_signed_in_at: str | None = None
    # Notes on how states were made real when a service refused (e.g. rows written directly).
    notes: list[str] = Field(default_factory=list)

    def actor(self, name: str) -> ManifestActor:
        for actor in self.actors:
            if actor.name == name:
                return actor
        raise KeyError(name)

    def find(
        self,
        type_: str,
        anchor: str,
        side: Side,
        *,
        spare: bool = False,
        actor: str | None = None,
    ) -> ObjectRecord | None:
        """The instance of ``type_`` in scenario ``anchor`` on ``side`` (its spare twin with
        ``spare=True``; the spare reserved for ``actor`` when there is one), if the seed made
        one."""
        found: ObjectRecord | None = None
        for record in self.objects:
            if (
                record.type == type_
                and record.anchor == anchor
                and record.side == side
                and record.spare == spare
            ):
                if actor is not None and record.actor == actor:
                    return record
                if record.actor is None and found is None:
                    found = record
        return found

    def canaries(self) -> frozenset[str]:
        return frozenset(c for record in self.objects for c in record.canaries)

    # -- file ----------------------------------------------------------------------------

    def write(self, path: Path) -> None:
        """Write the manifest, created with mode 0600 (it holds secrets)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = self.model_dump_json(indent=2).encode()
        tmp = path.with_name(path.name + ".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        tmp.replace(path)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        return cls.model_validate_json(path.read_bytes())
