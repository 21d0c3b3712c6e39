"""Request bodies: every body model forbids unknown fields (a test walks the app for it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictBody(BaseModel):
    """Base of every request body. Unknown fields are refused, never ignored, so a client
    cannot slip server-owned fields (owner, tenant, role, status) into a write."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False, frozen=True)
