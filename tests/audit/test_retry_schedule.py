"""The sink retry schedule docs/audit.md promises, driven through the real SinkRunner and spool on its own clock
(``step(now)``), not by waiting: capped exponential backoff 0.4 s .. 10 s for what may pass on a retry, the same
records again every 60 s after a refusal that stops the sink, and then in order once the cause is fixed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from opentelemetry.trace import NoOpTracer

from audit.canonical import canonicalize
from audit.chain import Head, seal
from audit.ship import BACKOFF_MAX, SinkRunner
from audit.spool import Spool, record_entry
from audit.telemetry import Telemetry


class Refusing:
    """A sink that refuses every write with ``error`` until ``fixed``; records what it was asked to write."""

    name = "localstore"

    def __init__(self, error: Exception) -> None:
        self.error, self.fixed = error, False
        self.attempts: list[list[int]] = []
        self.stored: list[int] = []

    def write(self, records: list[tuple[int, bytes]], _checkpoints: list[dict[str, Any]]) -> None:
        self.attempts.append([seq for seq, _ in records])
        if not self.fixed:
            raise self.error
        self.stored += [seq for seq, _ in records]

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class Refused(Exception):
    reason, retryable = "mapping", False


class Unreachable(Exception):
    reason, retryable = "connection", True


def _runner(tmp_path: Path, sink: Refusing) -> SinkRunner:
    spool, head, entries = Spool(tmp_path / "spool", "h1"), Head("h1"), []
    for i in range(5):
        doc, head = seal({"@timestamp": "2026-11-01T00:00:00Z", "event": {"action": "a"}, "n": i}, head)
        entries.append(record_entry(i, head.hash, 0.0, None, canonicalize(doc)))
    spool.append(entries)
    return SinkRunner(sink, spool, 100, Telemetry("h1", [], [sink.name]), NoOpTracer())  # type: ignore[arg-type]


def test_a_refused_record_is_retried_every_60_seconds_and_then_written_in_order(tmp_path: Path) -> None:
    sink = Refusing(Refused("mapping error"))
    runner = _runner(tmp_path, sink)
    assert runner.step(1000.0) is False and runner.fatal
    assert runner.step(1059.9) is False  # not before 60 s
    assert sink.attempts == [[0, 1, 2, 3, 4]]
    assert runner.step(1060.0) is False  # at 60 s: the same records again
    assert sink.attempts == [[0, 1, 2, 3, 4]] * 2 and runner.cursor.next_seq == 0
    sink.fixed = True
    assert runner.step(1119.9) is False
    assert runner.step(1120.0) is True
    assert sink.stored == [0, 1, 2, 3, 4] and runner.cursor.next_seq == 5 and runner.fatal is None


def test_a_retryable_failure_backs_off_from_0_4_s_doubling_to_10_s(tmp_path: Path) -> None:
    sink = Refusing(Unreachable("connection refused"))
    runner = _runner(tmp_path, sink)
    now, delays = 0.0, []
    for _ in range(8):
        runner.step(now)
        delays.append(round(runner.retry_at - now, 3))
        assert runner.step(runner.retry_at - 0.001) is False and len(sink.attempts) == len(delays)
        now = runner.retry_at
    assert delays == [0.4, 0.8, 1.6, 3.2, 6.4, BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MAX] and BACKOFF_MAX == 10.0
    assert all(attempt == [0, 1, 2, 3, 4] for attempt in sink.attempts)  # nothing skipped, nothing reordered
