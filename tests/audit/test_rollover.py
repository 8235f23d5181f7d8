"""Exactly once across a data stream rollover (issue 15): ``_id`` is unique per backing index only, so a replay or
retry that straddles a rollover must find what the stream already holds before it sends anything."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from audit.sinks.elasticsearch import data_stream_name
from tests.audit.kit import TEE_AUDIT, es_setup, keys, ship_once, shipped_seq, verify_json, write_journal


def _count(es: Elasticsearch, stream: str) -> int:
    es.indices.refresh(index=stream)
    return es.count(index=stream, query={"exists": {"field": "chain.seq"}})["count"]


def _backing(es: Elasticsearch, stream: str) -> list[str]:
    return sorted(es.indices.get(index=stream, expand_wildcards="all"))


def _shipped_rolled_over_cursor_lost(tmp_path: Path, url: str, namespace: str
                                     ) -> tuple[Path, Path, Path, Path, Elasticsearch, str]:
    """200 events shipped, the data stream rolled over, then the cursor lost (a crash between bulk and cursor
    write): ``(key, public key, journal, spool, client, stream)``."""
    key, public = keys(tmp_path / "keys")
    journal, spool = tmp_path / "journal.jsonl", tmp_path / "spool"
    write_journal(journal, 200)
    assert ship_once([journal], key, spool, es=url, namespace=namespace, every=50) == 0
    es, stream = Elasticsearch(url), data_stream_name(namespace)
    es.indices.rollover(alias=stream)
    assert len(_backing(es, stream)) == 2
    (spool / "cursor-elasticsearch.json").unlink()
    return key, public, journal, spool, es, stream


@pytest.mark.elasticsearch
def test_a_replay_after_a_rollover_writes_nothing_twice(tmp_path: Path, elasticsearch: str,
                                                       es_namespace: str) -> None:
    """The issue's reproduction: 200 events, rollover, the cursor lost (crash between bulk and cursor write)."""
    key, public, journal, spool, es, stream = _shipped_rolled_over_cursor_lost(tmp_path, elasticsearch, es_namespace)
    assert ship_once([journal], key, spool, es=elasticsearch, namespace=es_namespace, every=50) == 0
    assert _count(es, stream) == 200
    code, report = verify_json("--es", elasticsearch, "--data-stream", stream, "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, 200, [])


@pytest.mark.elasticsearch
def test_a_replay_waits_while_a_shard_cannot_answer_where_the_records_are(tmp_path: Path, elasticsearch: str,
                                                                          es_namespace: str) -> None:
    """The replay's look-up fails on the shard of the older backing index (its result window set below the
    look-up's size): answered 200 by the other shards, it would find nothing and write all 200 again. The shipper
    must retry instead, writing nothing, and ship exactly once when the shard answers again."""
    key, public, journal, spool, es, stream = _shipped_rolled_over_cursor_lost(tmp_path, elasticsearch, es_namespace)
    older = _backing(es, stream)[0]
    es.indices.put_settings(index=older, settings={"index.max_result_window": 10})

    cmd = [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", elasticsearch, "--es.namespace",
           es_namespace, "--signing-key", str(key), "--spool.dir", str(spool), "--chain", "h1",
           "--checkpoint.every-records", "50"]
    with pytest.raises(subprocess.TimeoutExpired) as waited:
        subprocess.run(cmd, capture_output=True, text=True, timeout=15, check=False)
    assert "a search failed on 1 shard(s)" in (waited.value.stderr or b"").decode(), waited.value.stderr
    assert _count(es, stream) == 200

    es.indices.put_settings(index=older, settings={"index.max_result_window": None})
    assert subprocess.run(cmd, capture_output=True, timeout=120, check=False).returncode == 0
    assert _count(es, stream) == 200
    code, report = verify_json("--es", elasticsearch, "--data-stream", stream, "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, 200, [])


@pytest.mark.elasticsearch
@pytest.mark.slow
def test_kill_9_while_rollovers_are_forced_ships_everything_exactly_once(
        tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    events, kills = 12_000, 5
    key, public = keys(tmp_path / "keys")
    journal, spool = tmp_path / "journal.jsonl", tmp_path / "spool"
    write_journal(journal, events)
    es, stream = Elasticsearch(elasticsearch), data_stream_name(es_namespace)
    es_setup(elasticsearch, es_namespace)
    cmd = [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", elasticsearch, "--es.namespace",
           es_namespace, "--signing-key", str(key), "--spool.dir", str(spool), "--chain", "h1",
           "--checkpoint.every-records", "1000", "--es.batch-size", "300", "--log.level", "error"]
    stop = threading.Event()

    def roll() -> None:  # rollovers land between, and during, the shipper's bulks
        while not stop.wait(0.25):
            with contextlib.suppress(Exception):  # the stream may not exist yet
                es.indices.rollover(alias=stream)

    roller = threading.Thread(target=roll, daemon=True)
    roller.start()
    try:
        for i in range(kills):
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            mark = (i + 1) * events // (kills + 2)
            while proc.poll() is None and shipped_seq(spool) < mark:
                time.sleep(0.01)
            time.sleep(0.011 * i)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            # what a kill between a bulk and its cursor write leaves: the cursor one step behind
            cursor = spool / "cursor-elasticsearch.json"
            if i % 2 == 0 and cursor.exists():
                cursor.unlink()
    finally:
        stop.set()
        roller.join()
    assert len(_backing(es, stream)) > kills
    assert subprocess.run(cmd, check=False, timeout=300).returncode == 0
    assert _count(es, stream) == events
    code, report = verify_json("--es", elasticsearch, "--data-stream", stream, "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, events, [])


@pytest.mark.elasticsearch
def test_normal_shipping_sends_bare_bulks_after_one_ceiling_query(tmp_path: Path, elasticsearch: str,
                                                                 es_namespace: str) -> None:
    """The exactly-once look-up stays off the normal path: at most one aggregation at start, then only bulks
    (the shipper's own request log, at debug)."""
    key, _ = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 1000)
    es_setup(elasticsearch, es_namespace)
    base = [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", elasticsearch, "--es.namespace",
            es_namespace, "--signing-key", str(key), "--chain", "h1", "--es.batch-size", "100", "--log.level",
            "debug", "--spool.dir", str(tmp_path / "spool")]
    log = subprocess.run(base, capture_output=True, text=True, timeout=300, check=True).stderr
    requests = [line for line in log.splitlines() if "logger=elastic_transport.transport" in line]
    assert sum("/_search" in line for line in requests) <= 1
    assert sum("/_bulk" in line for line in requests) >= 10
    # a restart with new records: the ceiling query once, then bulks without look-ups
    write_journal(journal, 100, start=1000)
    log = subprocess.run(base, capture_output=True, text=True, timeout=300, check=True).stderr
    requests = [line for line in log.splitlines() if "logger=elastic_transport.transport" in line]
    assert sum("/_search" in line for line in requests) == 1
    assert sum("/_bulk" in line for line in requests) >= 1
