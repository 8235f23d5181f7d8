"""Malformed journal lines are quarantined with file and offset, counted, and never enter the chain altered."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tests.audit.kit import keys, ship_once, verify_json, write_journal

BAD = {
    "not_json": b"this is not json",
    "not_utf8": b'{"@timestamp":"2026-01-01T00:00:00Z","m":"\xff\xfe"}',
    "duplicate_key": b'{"@timestamp":"2026-01-01T00:00:00Z","a":1,"a":2}',
    "bad_number": b'{"@timestamp":"2026-01-01T00:00:00Z","big":123456789012345678901}',
    "reserved_field": b'{"@timestamp":"2026-01-01T00:00:00Z","chain":{"seq":0}}',
    "not_canonical": b'{"@timestamp":"2026-01-01T00:00:00Z","m":"\\udc00"}',  # a lone surrogate: no UTF-8 form
    "bad_timestamp": b'{"@timestamp":"yesterday"}',
    "not_object": b"[1,2,3]",
    "too_long": b'{"@timestamp":"2026-01-01T00:00:00Z","x":"' + b"a" * 200_000 + b'"}',
}


def test_malformed_lines_are_quarantined_and_good_lines_chained_unaltered(tmp_path: Path) -> None:
    key, public = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 3)
    offsets = {}
    for reason, line in BAD.items():
        offsets[reason] = journal.stat().st_size
        with open(journal, "ab") as fh:
            fh.write(line + b"\n")
        write_journal(journal, 1, start=100 + len(offsets))
    good = [json.loads(line) for line in journal.read_bytes().split(b"\n") if line and line not in BAD.values()]

    store, spool = tmp_path / "store", tmp_path / "spool"
    assert ship_once([journal], key, spool, store=store, source_max_line_bytes=100_000) == 0

    quarantined = [json.loads(line) for line in (spool / "quarantine" / "quarantine.jsonl").read_text().splitlines()]
    assert {q["reason"]: q["offset"] for q in quarantined} == offsets
    assert all(q["file"] == str(journal) for q in quarantined)
    short = next(q for q in quarantined if q["reason"] == "not_utf8")
    assert base64.b64decode(short["line_base64"]) == BAD["not_utf8"]

    stored = [json.loads(line) for line in (store / "h1" / "records-00000000000000000000.jsonl").read_text()
              .splitlines()]
    assert [{k: v for k, v in doc.items() if k != "chain"} for doc in stored] == good
    code, report = verify_json("--store", str(store), "--public-key", str(public))
    assert (code, report["records"]) == (0, len(good))


def test_a_checkpoint_field_in_an_event_is_refused_so_it_cannot_pass_for_a_checkpoint(tmp_path: Path) -> None:
    key, _ = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    journal.write_bytes(b'{"@timestamp":"2026-01-01T00:00:00Z","checkpoint":{"size":1,"note":"x"}}\n')
    write_journal(journal, 1)
    assert ship_once([journal], key, tmp_path / "spool", store=tmp_path / "store") == 0
    (entry,) = [json.loads(line) for line in (tmp_path / "spool/quarantine/quarantine.jsonl").read_text().splitlines()]
    assert (entry["reason"], entry["offset"]) == ("reserved_field", 0)


def test_a_line_read_again_after_kill_9_is_quarantined_once(tmp_path: Path) -> None:
    """kill -9 after the quarantine entry was written but before the source offset was saved: the next start reads
    the line again. Reproduced exactly by putting back the state file of before that run."""
    key, _ = keys(tmp_path / "keys")
    journal, spool = tmp_path / "journal.jsonl", tmp_path / "spool"
    write_journal(journal, 3)
    assert ship_once([journal], key, spool, store=tmp_path / "store") == 0
    before = (spool / "state.json").read_bytes()
    with open(journal, "ab") as fh:
        fh.write(BAD["not_json"] + b"\n")
    assert ship_once([journal], key, spool, store=tmp_path / "store") == 0
    (spool / "state.json").write_bytes(before)
    assert ship_once([journal], key, spool, store=tmp_path / "store") == 0
    entries = (spool / "quarantine" / "quarantine.jsonl").read_text().splitlines()
    assert [json.loads(e)["reason"] for e in entries] == ["not_json"]


def test_a_deeply_nested_list_in_a_mapped_field_is_quarantined_not_a_crash(tmp_path: Path) -> None:
    key, _ = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    deep = b"[" * 900 + b'"x"' + b"]" * 900
    journal.write_bytes(b'{"@timestamp":"2026-01-01T00:00:00Z","host":{"name":' + deep + b"}}\n")
    write_journal(journal, 1)
    assert ship_once([journal], key, tmp_path / "spool", store=tmp_path / "store") == 0
    (entry,) = [json.loads(line) for line in (tmp_path / "spool/quarantine/quarantine.jsonl").read_text().splitlines()]
    assert (entry["offset"], entry["reason"]) == (0, "not_canonical")
