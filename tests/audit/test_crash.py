"""kill -9 of the shipper at many points of a large ``--once`` run: after a rerun every event is in Elasticsearch
and in the local store exactly once and both chains verify."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from audit.sinks.elasticsearch import data_stream_name
from tests.audit.kit import TEE_AUDIT, es_setup, keys, shipped_seq, verify_json, write_journal

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
