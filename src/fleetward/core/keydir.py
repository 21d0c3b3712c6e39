"""Key material created once, atomically, in a directory of its own.

The files are written into a private staging directory beside the target, then the staging
directory is renamed onto the target: rename() of a directory onto a missing name is atomic,
and onto an existing non-empty directory it fails. So a crash never leaves a half-written key
directory, and of two processes creating it at once exactly one wins (the loser's OSError
tells it to read the winner's).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path


def create_key_directory(directory: Path, files: Mapping[str, tuple[bytes, int]]) -> None:
    """Create ``directory`` (mode 0700) holding ``files``: name -> (content, file mode).
    Raises OSError if the directory already exists (someone else created it)."""
    directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = directory.parent / f".{directory.name}.{secrets.token_hex(8)}"
    staging.mkdir(mode=0o700)
    try:
        for name, (content, mode) in files.items():
            fd = os.open(staging / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
        staging.rename(directory)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
