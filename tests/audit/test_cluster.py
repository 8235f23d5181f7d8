"""Delivery beyond one node: a real three-node Elasticsearch cluster with a data node stopped while the shipper
runs, the shipper itself killed with -9 again and again, and a rollover in between: every event exactly once, the
chain intact."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from audit.sinks.elasticsearch import data_stream_name
from tests.audit.kit import TEE_AUDIT, es_setup, keys, shipped_seq, verify_json, write_journal
from tests.fixtures.elasticsearch_cluster import EsCluster


@pytest.mark.elasticsearch
@pytest.mark.slow
def test_a_data_node_stopped_and_kill_9_during_shipping_lose_and_duplicate_nothing(
        tmp_path: Path, elasticsearch_cluster: EsCluster, es_namespace: str) -> None:
    events, kills = 12_000, 4
    key, public = keys(tmp_path / "keys")
    journal, spool, store = tmp_path / "journal.jsonl", tmp_path / "spool", tmp_path / "store"
    write_journal(journal, events)
    url, stream = elasticsearch_cluster.url, data_stream_name(es_namespace)
    es = Elasticsearch(url, request_timeout=60)
    es_setup(url, es_namespace)
    cmd = [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", url, "--es.namespace", es_namespace,
           "--store", str(store), "--signing-key", str(key), "--spool.dir", str(spool), "--chain", "h1",
           "--checkpoint.every-records", "1000", "--es.batch-size", "300", "--log.level", "error"]

    def stop_a_data_node() -> None:  # while a shipper is writing, not between runs
        while shipped_seq(spool) < events // 4:
            time.sleep(0.01)
        elasticsearch_cluster.stop(2)

    stopper = threading.Thread(target=stop_a_data_node, daemon=True)
    stopper.start()
    for i in range(kills):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mark = (i + 1) * events // (kills + 2)
        while proc.poll() is None and shipped_seq(spool) < mark:
            time.sleep(0.01)
        time.sleep(0.013 * i)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if i == 1:
            es.indices.rollover(alias=stream)
    stopper.join(timeout=180)
    assert not elasticsearch_cluster.running(2)

    assert subprocess.run(cmd, check=False, timeout=600).returncode == 0
    es.indices.refresh(index=stream)
    assert es.count(index=stream, query={"exists": {"field": "chain.seq"}})["count"] == events
    code, report = verify_json("--es", url, "--data-stream", stream, "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, events, [])
    code, report = verify_json("--store", str(store), "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, events, [])
