"""Reading operator-supplied files safely: regular files only, bounded in size, never blocking.

Evidence, policy files and trust roots may be named by anyone who can write a path into a watched directory or a
command line. ``open`` on a FIFO blocks until a writer appears and a device can be read forever, so the file is
opened non-blocking and checked with ``fstat`` on the open descriptor before any read (a file swapped for a FIFO
after a name check is still refused).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


def read_regular(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (at most ``limit``); anything else raises ``OSError``."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", str(path))
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"larger than {limit} bytes", str(path))
    return data
