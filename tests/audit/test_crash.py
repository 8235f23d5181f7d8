"""kill -9 of the shipper at many points of a large ``--once`` run: after a rerun every event is in Elasticsearch
and in the local store exactly once and both chains verify."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from audit.sinks.elasticsearch import data_stream_name
from tests.audit.kit import TEE_AUDIT, es_setup, keys, shipped_seq, verify_json, write_journal
from tests.fixtures.ports import free_port

EVENTS = 20_000
KILLS = 6


@pytest.mark.elasticsearch
@pytest.mark.slow
def test_kill_9_at_many_points_then_rerun_ships_everything_exactly_once(
        tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    key, public = keys(tmp_path / "keys")
    journal, spool, store = tmp_path / "journal.jsonl", tmp_path / "spool", tmp_path / "store"
    write_journal(journal, EVENTS)
    es_setup(elasticsearch, es_namespace)
    cmd = [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--store", str(store), "--es", elasticsearch,
           "--es.namespace", es_namespace, "--signing-key", str(key), "--spool.dir", str(spool), "--chain", "h1",
           "--checkpoint.every-records", "1000", "--es.batch-size", "500", "--log.level", "error"]
    killed_at = []
    for i in range(KILLS):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill points spread over start-up, reading and shipping: after the sink passed a moving mark, plus a
        # varying delay so the signal lands in different instructions each time.
        mark = (i * EVENTS) // (KILLS + 1)
        while proc.poll() is None and shipped_seq(spool) < mark:
            time.sleep(0.01)
        time.sleep(0.013 * i)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at.append(shipped_seq(spool))
        proc.wait()
    assert len(killed_at) >= KILLS - 1, "the kills must land while the run is still going"

    assert subprocess.run(cmd, check=False, timeout=300).returncode == 0

    stream = data_stream_name(es_namespace)
    es = Elasticsearch(elasticsearch)
    es.indices.refresh(index=stream)
    total = es.count(index=stream, query={"exists": {"field": "chain.seq"}})["count"]
    assert total == EVENTS
    # Every journal event once and in journal order: none lost, none chained twice.
    journal_ids = [json.loads(line)["event"]["id"] for line in journal.read_text().splitlines()]
    stored = [json.loads(line) for seg in sorted((store / "h1").glob("records-*.jsonl"))
              for line in seg.read_text().splitlines()]
    assert [doc["event"]["id"] for doc in stored] == journal_ids
    # Elasticsearch holds the very same chain (same head).
    (hit,) = es.search(index=stream, query={"ids": {"values": [f"h1:{EVENTS - 1}"]}})["hits"]["hits"]
    head = hit["_source"]["chain"]["hash"]
    assert head == stored[-1]["chain"]["hash"]

    code, report = verify_json("--es", elasticsearch, "--data-stream", stream, "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, EVENTS, [])
    code, report = verify_json("--store", str(store), "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, EVENTS, [])


def _store_cursor(spool: Path) -> int:
    try:
        return json.loads((spool / "cursor-localstore.json").read_text())["next_seq"]
    except (OSError, ValueError):
        return 0


CONTINUOUS_EVENTS, CONTINUOUS_KILLS, CHUNKS = 12_000, 9, 4


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


def test_kill_9_of_the_daemon_while_the_journal_grows_ships_everything_exactly_once(tmp_path: Path) -> None:
    """The daemon (not --once) tailing a journal that is still being written, checkpointing every 0.5 s, killed
    with -9 at nine points: right after start-up, while the writer appends (reading a growing file), while
    chaining and while shipping. After a last run that ends with SIGTERM, every event is in the local store once,
    in journal order, and the chain verifies INTACT."""
    key, public = keys(tmp_path / "keys")
    journal, spool, store = tmp_path / "journal.jsonl", tmp_path / "spool", tmp_path / "store"
    cmd = [*TEE_AUDIT, "ship", "--source", str(journal), "--store", str(store), "--signing-key", str(key),
           "--spool.dir", str(spool), "--chain", "h1", "--checkpoint.every-records", "500",
           "--checkpoint.every-seconds", "0.5", "--source.poll-seconds", "0.05", "--verify.every-seconds", "3600",
           "--web.listen-address", f"127.0.0.1:{free_port()}", "--log.level", "error"]
    metrics = f"http://{cmd[-3]}/metrics"
    chunk = CONTINUOUS_EVENTS // CHUNKS
    written, killed_at = 0, []
    for i in range(CONTINUOUS_KILLS):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        writer = None
        if i % 2 == 1 and written < CONTINUOUS_EVENTS:  # the journal grows under the running daemon
            writer = threading.Thread(target=write_journal, args=(journal, chunk), kwargs={"start": written})
            writer.start()
            written += chunk
        if i > 0:  # kill 0 lands in start-up; the others once the sink moved past a moving mark, then later still
            mark = min(written, (i * CONTINUOUS_EVENTS) // (CONTINUOUS_KILLS + 1))
            deadline = time.monotonic() + 30
            while proc.poll() is None and _store_cursor(spool) < mark and time.monotonic() < deadline:
                time.sleep(0.005)
            time.sleep(0.007 * i)
        assert proc.poll() is None, "the daemon exited by itself"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        killed_at.append(_store_cursor(spool))
        if writer is not None:
            writer.join()
    assert written == CONTINUOUS_EVENTS
    print("kill points (store cursor):", killed_at)
    assert len(set(killed_at)) >= 6, killed_at  # the kills landed at different places of the run

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while _store_cursor(spool) < CONTINUOUS_EVENTS or not _answers(metrics):  # caught up, signals handled
            assert proc.poll() is None and time.monotonic() < deadline, "the last run did not catch up"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)  # seals what is unsealed, then exits
        assert proc.wait(timeout=60) == 0

    journal_ids = [json.loads(line)["event"]["id"] for line in journal.read_text().splitlines()]
    stored = [json.loads(line) for seg in sorted((store / "h1").glob("records-*.jsonl"))
              for line in seg.read_text().splitlines()]
    assert len(journal_ids) == CONTINUOUS_EVENTS
    assert [doc["event"]["id"] for doc in stored] == journal_ids  # each once, in order
    result = subprocess.run([*TEE_AUDIT, "verify", "--store", str(store), "--public-key", str(public)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout
    assert result.stdout.startswith(f"chain h1: INTACT: {CONTINUOUS_EVENTS} records, "), result.stdout
