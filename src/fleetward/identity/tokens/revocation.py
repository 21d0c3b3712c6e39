"""Access token revocation: the protocol every validator calls, and an in-memory store.

Revocation is by *epoch*: revoking a user, client, tenant or refresh-token family at time
``at`` revokes every such token whose ``iat`` is at or before ``at``, truncated to whole
seconds. The rule is ``iat <= floor(at)``; because ``iat`` is itself truncated, a token issued
in the same second as the revocation is revoked too, even if it was issued a few hundred
milliseconds later. That over-revokes by at most one second, which is the safe direction;
the alternative (``iat < at``) would let a token minted in the revocation's second survive.

Epochs only move forward: revoking again with an earlier ``at`` never un-revokes anything.
A single token is revoked by ``jti`` until a given time (normally its ``exp``).
"""

from __future__ import annotations

import math
import threading
from datetime import datetime, timedelta
from typing import Protocol

from fleetward.identity.tokens.claims import AccessTokenClaims


class RevocationChecker(Protocol):
    """Answers whether a verified access token has been revoked.

    Implementations must be safe for concurrent use (many requests call it at once, on one
    event loop or several). Returning ``None`` means "not revoked"; returning a string means
    revoked, the string being a stable reason for logs and audit. Raising means "unknown":
    the validator catches any exception and refuses the token with reason
    ``"revocation-unavailable"``, i.e. it fails closed.
    """

    @property
    def does_io(self) -> bool:
        """Whether ``revoked_reason`` may await I/O. When true the validator bounds each call
        with its ``revocation_timeout`` (out of time = refused). A checker that never awaits
        (a pure in-memory lookup) says false: a timeout could not interrupt it anyway, and
        arming one costs more than the lookup itself."""
        ...

    async def revoked_reason(self, claims: AccessTokenClaims) -> str | None: ...


def epoch_seconds(at: datetime) -> int:
    """The revocation epoch for ``at``: whole seconds, rounded down (see module docstring)."""
    if at.tzinfo is None:
        raise ValueError("revocation times must be aware datetimes")
    return math.floor(at.timestamp())


class InMemoryRevocations:
    """Process-local revocations, for the embedded single-process deployment and tests.

    A Redis implementation with the same protocol shares them across replicas.
    """

    does_io = False  # revoked_reason never awaits; see RevocationChecker.does_io

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}
        self._clients: dict[str, int] = {}
        self._tenants: dict[str, int] = {}
        self._families: dict[str, int] = {}
        self._jtis: dict[str, int] = {}

    def _raise_epoch(self, table: dict[str, int], key: str, at: datetime) -> None:
        epoch = epoch_seconds(at)
        with self._lock:
            table[key] = max(epoch, table.get(key, epoch))

    def revoke_user(self, sub: str, at: datetime) -> None:
        self._raise_epoch(self._users, sub, at)

    def revoke_client(self, client_id: str, at: datetime) -> None:
        self._raise_epoch(self._clients, client_id, at)

    def revoke_tenant(self, tenant: str, at: datetime) -> None:
        self._raise_epoch(self._tenants, tenant, at)

    def revoke_family(self, fam: str, at: datetime) -> None:
        self._raise_epoch(self._families, fam, at)

    def revoke_jti(self, jti: str, until: datetime) -> None:
        """Revoke one token. Pass its ``exp`` as ``until``: the entry is only forgotten (by
        :meth:`prune`) after ``until``, rounded up so it is never dropped a second early."""
        if until.tzinfo is None:
            raise ValueError("revocation times must be aware datetimes")
        horizon = math.ceil(until.timestamp())
        with self._lock:
            self._jtis[jti] = max(horizon, self._jtis.get(jti, horizon))

    async def revoked_reason(self, claims: AccessTokenClaims) -> str | None:
        # Plain dict reads under the GIL are atomic; no lock needed on the hot path.
        if claims.jti in self._jtis:
            return "token-revoked"
        checks = (
            (self._users, claims.sub, "user-revoked"),
            (self._clients, claims.client_id, "client-revoked"),
            (self._tenants, claims.tenant, "tenant-revoked"),
        )
        for table, key, reason in checks:
            epoch = table.get(key)
            if epoch is not None and claims.iat <= epoch:
                return reason
        if claims.fam is not None:
            epoch = self._families.get(claims.fam)
            if epoch is not None and claims.iat <= epoch:
                return "family-revoked"
        return None

    def prune(self, now: datetime, max_token_lifetime: timedelta) -> int:
        """Drop entries no unexpired token can match; returns how many were dropped.

        An epoch older than ``now - max_token_lifetime`` can only match tokens that have
        already expired (their ``iat`` is at most that epoch).
        """
        floor = epoch_seconds(now - max_token_lifetime) - 1
        now_s = epoch_seconds(now)
        dropped = 0
        with self._lock:
            for table in (self._users, self._clients, self._tenants, self._families):
                for key in [k for k, epoch in table.items() if epoch < floor]:
                    del table[key]
                    dropped += 1
            for key in [k for k, until in self._jtis.items() if until < now_s]:
                del self._jtis[key]
                dropped += 1
        return dropped
