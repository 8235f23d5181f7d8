"""The append-only journal: one normalized event per line, the contract with ``tee-audit``.

Lines are written whole with a single ``write`` on an ``O_APPEND`` descriptor so a crash leaves at most a torn
last line (which the shipper quarantines), never an interleaving. The file rotates by size to ``<path>.1`` (the
shipper follows the rename); the schema is ``exporter/schema/event.schema.json``.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import os
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

from exporter.schema import ECS_VERSION, load_schema, utc_timestamp

__all__ = ["ECS_VERSION", "Journal", "load_schema", "make_event", "utc_timestamp"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024


def make_event(
    *,
    action: str,
    category: list[str],
    type: list[str],
    dataset: str,
    host: str,
    outcome: str | None = None,
    reason: str | None = None,
    message: str | None = None,
    kind: str = "event",
    tee: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    timestamp: dt.datetime | None = None,
) -> dict[str, Any]:
    """Build one ECS-shaped journal event; ``extra`` merges further top-level ECS objects (file, user...)."""
    event: dict[str, Any] = {
        "id": str(uuid.uuid4()), "kind": kind, "category": category, "type": type,
        "action": action, "dataset": dataset, "module": "tee",
    }
    if outcome is not None:
        event["outcome"] = outcome
    if reason is not None:
        event["reason"] = reason
    doc: dict[str, Any] = {"@timestamp": utc_timestamp(timestamp), "ecs": {"version": ECS_VERSION},
                           "event": event, "host": {"name": host}}
    if message is not None:
        doc["message"] = message
    if tee:
        doc["tee"] = tee
    if extra:
        doc.update(extra)
    return doc


class Journal:
    """Thread-safe appender that never loses an event to a transient write failure.

    When a write fails (disk full, read-only remount) the line is kept in a bounded in-memory backlog, the failure
    is counted in ``write_errors`` and logged once, and the backlog is written first on the next successful append
    (or ``flush``). Only when the backlog itself overflows is an event dropped, and that is counted in ``dropped``.
    """

    def __init__(self, path: Path, max_bytes: int = DEFAULT_MAX_BYTES, fsync: bool = False,
                 host: str | None = None) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.host = host or socket.gethostname()
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._backlog: collections.deque[bytes] = collections.deque()
        self.backlog_limit = 100_000
        self.appended = 0
        self.write_errors = 0
        self.dropped = 0

    def event(self, **fields: Any) -> dict[str, Any]:
        """``make_event`` with this journal's host name filled in."""
        fields.setdefault("host", self.host)
        return make_event(**fields)

    def append(self, event: dict[str, Any]) -> None:
        line = (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            if len(self._backlog) >= self.backlog_limit:
                self.dropped += 1
                log.error("journal backlog full, event dropped", extra={"path": str(self.path)})
                return
            self._backlog.append(line)
            self._drain()

    def flush(self) -> None:
        with self._lock:
            self._drain()

    @property
    def backlog(self) -> int:
        return len(self._backlog)

    def _drain(self) -> None:
        try:
            while self._backlog:
                self._write(self._backlog[0])
                self._backlog.popleft()
                self.appended += 1
        except OSError as exc:
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 1000 == 0:
                log.error("journal write failed, keeping events in memory", extra={
                    "path": str(self.path), "error": exc.strerror or str(exc), "backlog": len(self._backlog)})

    def _write(self, line: bytes) -> None:
        fd = self._open()
        if self.max_bytes and os.fstat(fd).st_size + len(line) > self.max_bytes:
            fd = self._rotate()
        written = os.write(fd, line)
        if written != len(line):  # a short write on a full disk: cut the torn line off and retry later
            os.ftruncate(fd, os.fstat(fd).st_size - written)
            raise OSError(28, "short write (disk full?)")
        if self.fsync:
            os.fsync(fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        return self._fd

    def _rotate(self) -> int:
        # One generation is kept: the shipper holds the old file open and drains it before following the new one.
        assert self._fd is not None
        os.close(self._fd)
        self._fd = None
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        log.info("journal rotated", extra={"path": str(self.path)})
        return self._open()
