"""Follow a log file across rotation, line by line (like ``tail -F``), without losing or repeating lines.

Rotation by rename (logrotate's default, and ``create``): the old file is kept open and read to its end before
the new file at the same path is opened from its start. ``copytruncate``: the file shrinks below our offset, and
reading restarts at 0. A partial last line is held back until its newline arrives. ``poll`` is called by the
collector's thread; it returns complete lines (without the newline), never raising for a missing file.
``position``/``resume`` let a restarted exporter continue where the last one stopped instead of re-reading.
"""

from __future__ import annotations

import os
from pathlib import Path

READ_CHUNK = 1024 * 1024
MAX_PENDING = 64 * 1024  # a "line" longer than this is cut, so one endless line cannot grow memory


class Tailer:
    """``resume`` = ``(dev, inode, offset)`` from ``position()`` of an earlier run: continue there if the file at
    ``path`` is still that file and not shorter; otherwise (rotated or truncated meanwhile) read it from its start."""

    def __init__(self, path: Path, *, resume: tuple[int, int, int] | None = None) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._ino: tuple[int, int] | None = None
        self._offset = 0
        self._pending = b""
        self._resume = resume
        self.rotations = 0

    def position(self) -> tuple[int, int, int] | None:
        """Where the next complete line starts: ``(dev, inode, offset)``, or ``None`` before the file exists."""
        if self._ino is None:
            return None
        return self._ino[0], self._ino[1], self._offset - len(self._pending)

    def poll(self) -> list[bytes]:
        lines: list[bytes] = []
        if self._fd is None and not self._open():
            return lines
        lines += self._read_available()
        current = self._stat_path()
        if current is not None and current != self._ino:
            # Rotated: the old file is complete (we just drained it); switch to the new one from its start.
            lines += self._flush_pending()
            self._close()
            self.rotations += 1
            if self._open():
                lines += self._read_available()
        return lines

    def close(self) -> None:
        self._close()

    def _stat_path(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _open(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        st = os.fstat(fd)
        self._fd, self._ino = fd, (st.st_dev, st.st_ino)
        resume, self._resume = self._resume, None
        same = resume is not None and (resume[0], resume[1]) == self._ino and resume[2] <= st.st_size
        self._offset = resume[2] if same and resume else 0
        self._pending = b""
        return True

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = None

    def _read_available(self) -> list[bytes]:
        assert self._fd is not None
        if os.fstat(self._fd).st_size < self._offset:  # copytruncate
            self._offset, self._pending = 0, b""
        out: list[bytes] = []
        while True:
            chunk = os.pread(self._fd, READ_CHUNK, self._offset)
            if not chunk:
                return out
            self._offset += len(chunk)
            data = self._pending + chunk
            *complete, self._pending = data.split(b"\n")
            out += complete
            if len(self._pending) > MAX_PENDING:
                out.append(self._pending)
                self._pending = b""

    def _flush_pending(self) -> list[bytes]:
        rest, self._pending = self._pending, b""
        return [rest] if rest else []
