"""Atomic file replacement: a crash leaves the old content or the new, never a torn mix."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``<path>.tmp``, fsync it, rename it over ``path`` and fsync the directory (so the rename
    itself survives a power loss, POSIX rename(2) being atomic but not durable)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
