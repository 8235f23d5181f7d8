"""Background following of log files for the attestation and KBS collectors.

``LogFollower`` polls a set of ``Tailer``s on its own thread and hands each complete line to a callback.
``UnparsedLines`` is the one counter behind ``tee_exporter_log_lines_unparsed_total{source}``: both collectors
feed it, and only the first collector built (its "owner") exposes it, so the family appears once per scrape.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.core import CounterMetricFamily

from common.fsio import write_atomic
from exporter.logs.tail import Tailer

log = logging.getLogger(__name__)

POLL_SECONDS = 0.25


class UnparsedLines:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.owner: str | None = None

    def register(self, source: str) -> None:
        with self._lock:
            self._counts.setdefault(source, 0)

    def inc(self, source: str) -> None:
        with self._lock:
            self._counts[source] += 1

    def family(self) -> CounterMetricFamily | None:
        with self._lock:
            counts = dict(self._counts)
        if not counts:
            return None
        family = CounterMetricFamily("tee_exporter_log_lines_unparsed",
                                     "Log lines not in a recognised Trustee log format, by log source.",
                                     labels=["source"])
        for source, value in sorted(counts.items()):
            family.add_metric([source], value)
        return family


def shared_unparsed(shared: dict[str, Any], collector: str) -> UnparsedLines:
    counter: UnparsedLines = shared.setdefault("log_lines_unparsed", UnparsedLines())
    if counter.owner is None:
        counter.owner = collector
    return counter


class LogFollower:
    """Polls the tailers every ``POLL_SECONDS``; ``handle(path, line)`` must not raise (it is guarded anyway)."""

    def __init__(self, name: str, paths: Sequence[Path], handle: Callable[[Path, bytes], object],
                 state_file: Path | None = None) -> None:
        self.name = name
        self.state_file = state_file
        saved = _load_state(state_file) if paths else {}
        self.tailers = [Tailer(p, resume=saved.get(str(p))) for p in paths]
        self.handle = handle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.tailers and self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"follow-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        for tailer in self.tailers:
            tailer.close()

    def poll_once(self) -> int:
        """Read what is available now from every file; returns the number of lines handled."""
        handled = 0
        for tailer in self.tailers:
            for line in _lines(tailer):
                try:
                    self.handle(tailer.path, line)
                except Exception:  # a bad line must never stop the follower
                    log.exception("log line handler failed", extra={"file": str(tailer.path)})
                handled += 1
        if handled:
            self._save_state()
        return handled

    def _save_state(self) -> None:
        """Positions are saved after the lines were handled (journaled): a crash repeats at most one batch."""
        if self.state_file is None:
            return
        state = {str(t.path): list(pos) for t in self.tailers if (pos := t.position()) is not None}
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.state_file, json.dumps(state).encode())
        except OSError as exc:
            log.warning("cannot save log positions", extra={"file": str(self.state_file), "error": exc.strerror})

    def _run(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._stop.wait(POLL_SECONDS)
        self.poll_once()


def _load_state(path: Path | None) -> dict[str, tuple[int, int, int]]:
    if path is None:
        return {}
    try:
        doc = json.loads(path.read_text())
        return {str(k): (int(v[0]), int(v[1]), int(v[2])) for k, v in doc.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
        log.warning("log positions unreadable, reading logs from the start", extra={"file": str(path),
                                                                                 "error": str(exc)})
        return {}


def state_file_for(journal_path: Path, name: str) -> Path:
    """Where a collector keeps its log positions: next to the journal, which is on persistent storage."""
    return Path(journal_path).parent / f"tee-exporter-{name}-positions.json"


def _lines(tailer: Tailer) -> Iterable[bytes]:
    try:
        return tailer.poll()
    except OSError as exc:
        log.warning("cannot read log file", extra={"file": str(tailer.path), "error": exc.strerror})
        return []
