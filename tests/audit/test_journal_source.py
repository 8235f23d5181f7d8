"""The journal tail: rotation, truncation, restart from a persisted position, over-long and torn lines."""

from __future__ import annotations

import os
from pathlib import Path

from audit.sources.journal import JournalSource


def _append(path: Path, lines: list[bytes]) -> None:
    with open(path, "ab") as fh:
        fh.write(b"".join(line + b"\n" for line in lines))


def _rotate(path: Path) -> None:
    os.replace(path, path.with_name(path.name + ".1"))


def _payloads(n: int, start: int = 0) -> list[bytes]:
    return [b'{"n":%d}' % i for i in range(start, start + n)]


def test_rotation_under_the_reader_loses_and_repeats_nothing(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    _append(journal, _payloads(100))
    src = JournalSource(journal, None)
    first = src.poll(50)
    _rotate(journal)
    _append(journal, _payloads(100, 100))
    rest = src.poll(1000)
    assert [line.raw for line in first + rest] == _payloads(200)


def test_restart_from_persisted_position_drains_rotated_file_first(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    _append(journal, _payloads(100))
    src = JournalSource(journal, None)
    src.poll(60)
    position = src.position()
    src.close()
    _rotate(journal)
    _append(journal, _payloads(10, 100))
    again = JournalSource(journal, position)
    assert [line.raw for line in again.poll(1000)] == _payloads(50, 60)


def test_truncated_journal_is_read_again_from_its_start(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    _append(journal, _payloads(100))
    src = JournalSource(journal, None)
    assert len(src.poll(1000)) == 100
    os.truncate(journal, 0)
    _append(journal, _payloads(5, 500))
    assert [line.raw for line in src.poll(1000)] == _payloads(5, 500)
    assert src.truncations == 1


def test_over_long_line_is_flagged_with_its_offset_and_skipped(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    huge = b'{"x":"' + b"a" * 3_000_000 + b'"}'
    _append(journal, [b'{"n":0}', huge, b'{"n":2}'])
    src = JournalSource(journal, None, max_line_bytes=64 * 1024)
    lines = src.poll(1000)
    assert [(line.error, line.offset) for line in lines] == [(None, 0), ("too_long", 8), (None, 8 + len(huge) + 1)]
    assert lines[2].raw == b'{"n":2}'


def test_torn_last_line_of_a_rotated_file_is_flagged(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    _append(journal, [b'{"n":0}'])
    with open(journal, "ab") as fh:
        fh.write(b'{"n":1, "tor')
    src = JournalSource(journal, None)
    assert len(src.poll(100)) == 1
    _rotate(journal)
    _append(journal, [b'{"n":2}'])
    lines = src.poll(100)
    assert [(line.error, line.raw) for line in lines] == [("torn", b'{"n":1, "tor'), (None, b'{"n":2}')]


def test_partial_last_line_waits_for_its_newline(tmp_path: Path) -> None:
    journal = tmp_path / "j.jsonl"
    with open(journal, "ab") as fh:
        fh.write(b'{"n":0}\n{"n":')
    src = JournalSource(journal, None)
    assert [line.raw for line in src.poll(100)] == [b'{"n":0}']
    with open(journal, "ab") as fh:
        fh.write(b"1}\n")
    assert [line.raw for line in src.poll(100)] == [b'{"n":1}']
