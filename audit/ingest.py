"""What a source line must be to enter the chain, and where it goes when it is not.

A line is chained byte-for-byte as parsed (no field is added, dropped or coerced); anything that cannot be, is
quarantined with its file and offset, counted, and logged once (one line per bad input).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os
from pathlib import Path
from typing import Any

from audit import esmapping
from audit.canonical import CanonicalError
from audit.chain import FIELD
from audit.sources.journal import Line

log = logging.getLogger("audit.ingest")

KEEP_BYTES = 64 * 1024
_RESERVED = frozenset((FIELD, "checkpoint"))


def check_event(value: Any) -> None:
    """Raise ``CanonicalError`` (bounded reason) unless ``value`` can be chained and indexed unaltered."""
    if not isinstance(value, dict):
        raise CanonicalError("not_object", "a journal line must be a JSON object")
    for key in value:
        # checkpoint documents share the data stream: an event must never pass for one; "chain.seq" is a path
        if key.split(".", 1)[0] in _RESERVED:
            raise CanonicalError("reserved_field", f"the top-level field {key!r} is reserved for the audit chain")
    try:
        esmapping.check_event(value)
    except esmapping.Refused as exc:
        raise CanonicalError(exc.reason, str(exc)) from None


def _now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Quarantine:
    """Appends rejected lines (base64, first 64 KiB) with their file and offset to ``<dir>/quarantine.jsonl``.

    A line is quarantined once: after kill -9 before the source offset was saved, the line is read again, and the
    entry already written for its ``(file, inode, offset, length)`` is recognised (only the file's tail can hold it)."""

    TAIL_BYTES = 8 * 1024 * 1024

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.count = 0
        self._seen: set[tuple[str, int, int, int]] | None = None
        self._torn = False  # the file ends in an entry cut by kill -9: start the next one on a line of its own

    def _known(self) -> set[tuple[str, int, int, int]]:
        if self._seen is None:
            self._seen = set()
            try:
                with open(self.dir / "quarantine.jsonl", "rb") as fh:
                    size = fh.seek(0, os.SEEK_END)
                    fh.seek(max(0, size - self.TAIL_BYTES))
                    tail = fh.read()
                    lines = tail.split(b"\n")[1 if size > self.TAIL_BYTES else 0:]
                    self._torn = bool(tail) and not tail.endswith(b"\n")
            except OSError:
                lines = []
            for raw in lines:
                try:
                    entry = json.loads(raw)
                    self._seen.add((entry["file"], entry["inode"], entry["offset"], entry["length"]))
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last entry (kill -9 mid-write) or not ours
        return self._seen

    def put(self, line: Line, reason: str, detail: str) -> None:
        where = (line.file, line.ino, line.offset, line.end - line.offset)
        if where in self._known():
            return
        self._known().add(where)
        self.count += 1
        log.warning("malformed input quarantined", extra={"file": line.file, "offset": line.offset,
                                                           "length": line.end - line.offset, "reason": reason,
                                                           "detail": detail[:200]})
        self._append({"@timestamp": _now(), "file": line.file, "inode": line.ino, "offset": line.offset,
                      "length": line.end - line.offset, "reason": reason, "detail": detail[:500],
                      "line_base64": base64.b64encode(line.raw[:KEEP_BYTES]).decode()})

    def put_alert(self, event: dict[str, Any], reason: str, detail: str) -> None:
        """An Alertmanager alert that cannot be chained: kept whole (it has no file to point back to)."""
        self.count += 1
        log.warning("alert quarantined", extra={"reason": reason, "detail": detail[:200]})
        raw = json.dumps(event, ensure_ascii=True).encode()
        self._append({"@timestamp": _now(), "file": "alertmanager", "inode": 0, "offset": 0, "length": len(raw),
                      "reason": reason, "detail": detail[:500], "line_base64": base64.b64encode(raw).decode()})

    def _append(self, record: dict[str, Any]) -> None:
        self._known()  # notices a torn last entry
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with open(self.dir / "quarantine.jsonl", "ab") as fh:
                fh.write((b"\n" if self._torn else b"") + json.dumps(record).encode() + b"\n")
                self._torn = False
                fh.flush()
                os.fsync(fh.fileno())
        except OSError as exc:
            log.error("cannot write the quarantine file; the bad line is only logged",
                      extra={"dir": str(self.dir), "error": exc.strerror or str(exc)})
