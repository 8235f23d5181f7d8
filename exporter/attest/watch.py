"""The watched evidence directory: each new report or quote is handed to a callback exactly once.

Producers write the file and close it (inotify IN_CLOSE_WRITE -> watchdog ``FileClosedEvent``) or rename it into
place (``FileMovedEvent``); acting on those rather than on creation means a half-written file is never read.
Files already present at start-up are processed once too. Certificates, collateral and temporary files are not
evidence and are skipped; subdirectories (``<name>.certs/``) are not watched. A name that is not a regular file
(a FIFO, a device) or is larger than any evidence goes to the ``unreadable`` callback without being read.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileClosedEvent, FileMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from exporter.attest.evidence import read_evidence

log = logging.getLogger(__name__)

NOT_EVIDENCE = {".pem", ".der", ".crt", ".cer", ".crl", ".json", ".tmp", ".part", ".swp", ".md", ".txt"}
_SEEN_LIMIT = 10_000


def is_evidence_name(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() not in NOT_EVIDENCE


class _Handler(FileSystemEventHandler):
    def __init__(self, enqueue: Callable[[Path], None]) -> None:
        self.enqueue = enqueue

    def on_closed(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileClosedEvent) and not event.is_directory:
            self.enqueue(Path(str(event.src_path)))

    def on_moved(self, event: FileSystemEvent) -> None:
        if isinstance(event, FileMovedEvent) and not event.is_directory:
            self.enqueue(Path(str(event.dest_path)))


class EvidenceWatcher:
    """Calls ``process(path, data)`` once per distinct (name, content) arriving in ``folder``."""

    def __init__(self, folder: Path, process: Callable[[Path, bytes], object],
                 unreadable: Callable[[Path, OSError], None]) -> None:
        self.folder = Path(folder)
        self.process = process
        self.unreadable = unreadable
        self._queue: queue.Queue[Path | None] = queue.Queue()
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()
        self._observer: Observer | None = None  # type: ignore[valid-type]
        self._worker: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self.idle = threading.Event()
        self.idle.set()

    def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        observer = Observer()
        observer.schedule(_Handler(self._enqueue), str(self.folder), recursive=False)
        observer.daemon = True
        observer.start()
        self._observer = observer
        for path in sorted(p for p in self.folder.iterdir() if not p.is_dir()):
            self._enqueue(path)
        self._worker = threading.Thread(target=self._run, name="attestation-evidence", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None
        if self._worker is not None:
            self._queue.put(None)
            self._worker.join(timeout=10)
            self._worker = None

    def _enqueue(self, path: Path) -> None:
        if path.parent == self.folder and is_evidence_name(path):
            with self._lock:
                self._pending += 1
                self.idle.clear()
            self._queue.put(path)

    def _run(self) -> None:
        while True:
            path = self._queue.get()
            if path is None:
                return
            try:
                self._handle(path)
            except Exception:  # nothing a file contains may stop the watcher
                log.exception("evidence processing failed", extra={"file": str(path)})
            with self._lock:
                self._pending -= 1
                if self._pending == 0:
                    self.idle.set()  # tests and shutdown can tell "everything seen so far is processed"

    def _handle(self, path: Path) -> None:
        if not path.exists() and not path.is_symlink():
            return  # already moved away (quarantined) or deleted
        try:
            data = read_evidence(path)  # a FIFO, device or oversized file is unreadable, never blocks the worker
        except OSError as exc:
            self.unreadable(path, exc)
            return
        key = (path.name, hashlib.sha256(data).hexdigest())
        if key in self._seen:
            return
        self._seen[key] = None
        if len(self._seen) > _SEEN_LIMIT:
            self._seen.popitem(last=False)
        self.process(path, data)
