"""The demo credentials file: generated secrets for demo people, readable only by its owner."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import TypedDict


class DemoLogin(TypedDict, total=False):
    password: str
    tenant: str
    role: str
    totp_secret: str


def generate_password() -> str:
    return secrets.token_urlsafe(18)


def write_credentials(path: Path, logins: dict[str, DemoLogin]) -> None:
    """Write atomically with mode 0600 from the first byte (never world-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(logins, handle, indent=2, sort_keys=True)
            handle.write("\n")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def read_credentials(path: Path) -> dict[str, DemoLogin]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError("demo credentials file is not a JSON object")
    return data
