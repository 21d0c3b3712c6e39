"""Tables the authorization server adds to the identity schema (migration 0004)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from fleetward.store.base import Base, id_column


class UsedClientAssertion(Base):
    """A ``private_key_jwt`` assertion that was accepted once and may never be again.

    The unique digest makes "accept once" atomic across concurrent requests and replicas: the
    second insert of the same (client, jti) changes no row. Rows can be purged after
    ``expires_at``, when the assertion would be refused as expired anyway.
    """

    __tablename__ = "oauth_used_assertions"

    id: Mapped[str] = id_column()
    # SHA-256 of "client_id NUL jti": the jti is the client's choice, so it is scoped by client.
    jti_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.id"))
    expires_at: Mapped[datetime] = mapped_column(index=True)
    created_at: Mapped[datetime]
