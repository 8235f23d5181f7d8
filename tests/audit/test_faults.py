"""Faults the shipper must ride out without losing or duplicating anything: Elasticsearch stopped under load, a
full spool disk, the journal rotated and truncated under the reader."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.canonical import canonicalize
from audit.chain import Head, seal
from audit.sinks.elasticsearch import data_stream_name
from audit.sinks.localstore import LocalStore
from tests.audit.kit import TEE_AUDIT, es_setup, keys, ship_once, verify_json, write_journal
from tests.fixtures.elasticsearch import EsControl
from tests.fixtures.tmpfs import mounted_tmpfs


def _cursor(spool: Path, sink: str) -> int:
    try:
        return json.loads((spool / f"cursor-{sink}.json").read_text())["next_seq"]
    except (OSError, ValueError):
        return 0


def _wait(check, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _stored_ids(store: Path) -> list[str]:
    return [json.loads(line)["event"]["id"] for seg in sorted((store / "h1").glob("records-*.jsonl"))
            for line in seg.read_text().splitlines()]


def _journal_ids(*journals: Path) -> list[str]:
    return [json.loads(line)["event"]["id"] for j in journals for line in j.read_text().splitlines()]


@pytest.mark.elasticsearch
@pytest.mark.slow
def test_elasticsearch_outage_under_load_then_full_catch_up(
        tmp_path: Path, elasticsearch: str, elasticsearch_control: EsControl, es_namespace: str) -> None:
    key, public = keys(tmp_path / "keys")
    journal, spool, store = tmp_path / "journal.jsonl", tmp_path / "spool", tmp_path / "store"
    write_journal(journal, 6000)
    es_setup(elasticsearch, es_namespace)
    log = tmp_path / "ship.log"
    proc = subprocess.Popen([*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", elasticsearch,
                             "--store", str(store), "--es.namespace", es_namespace, "--signing-key", str(key),
                             "--spool.dir", str(spool), "--chain", "h1", "--es.batch-size", "200"],
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        _wait(lambda: _cursor(spool, "elasticsearch") >= 600 or proc.poll() is not None, "first batches")
        elasticsearch_control.stop()
        write_journal(journal, 3000, start=6000)  # load keeps coming while Elasticsearch is down
        _wait(lambda: b"sink write failed" in log.read_bytes(), "the shipper to notice the outage")
        _wait(lambda: _cursor(spool, "localstore") == 9000, "the local store to keep going")
        assert proc.poll() is None  # --once does not give up on a retryable outage
        elasticsearch_control.start()
        assert proc.wait(timeout=180) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    code, report = verify_json("--es", elasticsearch, "--data-stream", data_stream_name(es_namespace),
                               "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, 9000, [])
    assert _stored_ids(store) == _journal_ids(journal)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs (the machine's real kernel, a real ENOSPC), unmounted afterwards."""
    with mounted_tmpfs(tmp_path / "disk", "4m") as mount:
        yield mount


def test_full_spool_disk_stops_shipping_with_clear_error_then_resumes_losing_nothing(
        tmp_path: Path, small_disk: Path) -> None:
    key, public = keys(tmp_path / "keys")
    journal, store = tmp_path / "journal.jsonl", tmp_path / "store"
    write_journal(journal, 3000)
    ballast = small_disk / "ballast"
    with open(ballast, "wb") as fh:  # fill the disk
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    log = tmp_path / "ship.log"
    proc = subprocess.Popen([*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--store", str(store),
                             "--signing-key", str(key), "--spool.dir", str(small_disk / "spool"), "--chain", "h1"],
                            stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    try:
        _wait(lambda: b"spool write failed" in log.read_bytes(), "the disk-full error", timeout=60)
        assert b"No space left on device" in log.read_bytes()
        assert proc.poll() is None  # waiting, not crashed and not exited
        os.unlink(ballast)
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert _stored_ids(store) == _journal_ids(journal)
    code, report = verify_json("--store", str(store), "--public-key", str(public))
    assert (code, report["findings"]) == (0, [])


def test_rotation_and_truncation_between_runs_lose_and_repeat_nothing(tmp_path: Path) -> None:
    key, public = keys(tmp_path / "keys")
    journal, spool, store = tmp_path / "journal.jsonl", tmp_path / "spool", tmp_path / "store"
    write_journal(journal, 500)
    assert ship_once([journal], key, spool, store=store) == 0
    write_journal(journal, 200, start=500)
    os.replace(journal, tmp_path / "journal.jsonl.1")  # rotated with 200 unread events in it
    write_journal(journal, 100, start=700)
    assert ship_once([journal], key, spool, store=store) == 0
    expected = _journal_ids(tmp_path / "journal.jsonl.1", journal)[-1000:]
    os.truncate(journal, 0)  # copytruncate-style rotation: same inode, back to zero
    write_journal(journal, 50, start=800)
    assert ship_once([journal], key, spool, store=store) == 0
    expected += _journal_ids(journal)
    full = _stored_ids(store)
    assert full[500:] == expected[500:] and len(full) == 850
    code, report = verify_json("--store", str(store), "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, 850, [])


def test_a_store_append_failing_on_a_full_disk_is_cut_back_to_whole_lines(small_disk: Path) -> None:
    store, head, seq = LocalStore(small_disk / "store", "h1"), Head("h1"), 0
    with pytest.raises(OSError):
        while True:  # about 40 records of 100 KB fit on the 4 MiB disk
            doc, head = seal({"@timestamp": "2026-11-01T00:00:00Z", "blob": "x" * 100_000}, head)
            store.write([(seq, canonicalize(doc))], [])
            seq += 1
    segment = max((small_disk / "store" / "h1").glob("records-*.jsonl"))
    assert segment.read_bytes().count(b"\n") == seq and segment.read_bytes().endswith(b"\n")
