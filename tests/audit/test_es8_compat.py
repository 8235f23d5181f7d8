"""Elasticsearch 8.x: the same sink and verifier (elasticsearch-py 9.x with ``compatible-with=8`` media types)
against a real 8.x node: index template, data stream, lifecycle retention, exactly-once creates, ``verify --es``.

The 8.x integ-test distribution has no ``_data_stream`` REST API, so the data stream and its lifecycle are read
from the cluster state, which is where Elasticsearch keeps them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from audit.sinks.elasticsearch import ElasticsearchSink, connect, data_stream_name
from tests.audit.kit import TEE_AUDIT, es_setup, keys, verify_json, write_journal

pytestmark = pytest.mark.elasticsearch


def _ship_cmd(journal: Path, key: Path, spool: Path, url: str, namespace: str, *extra: str) -> list[str]:
    return [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", url, "--es.namespace", namespace,
            "--signing-key", str(key), "--spool.dir", str(spool), "--chain", "h1", "--log.level", "error", *extra]


def _get(url: str, path: str, **params: Any) -> Any:
    response = requests.get(f"{url}{path}", params=params, timeout=30)
    response.raise_for_status()
    return response.json()


def _record_count(url: str, stream: str) -> int:
    requests.post(f"{url}/{stream}/_refresh", timeout=30).raise_for_status()
    body = {"query": {"exists": {"field": "chain.seq"}}}
    response = requests.post(f"{url}/{stream}/_count", json=body, timeout=30)
    response.raise_for_status()
    return response.json()["count"]


def _data_stream_metadata(url: str, stream: str) -> dict[str, Any]:
    state = _get(url, "/_cluster/state/metadata", filter_path="metadata.data_stream.data_stream")
    return state["metadata"]["data_stream"]["data_stream"][stream]


def test_es8_node_under_test_is_really_8x(elasticsearch8: str) -> None:
    (node,) = _get(elasticsearch8, "/_nodes/_local/version")["nodes"].values()
    assert node["version"].startswith("8."), node["version"]


def test_ship_once_into_es8_builds_template_data_stream_with_retention_and_verifies_intact(
        tmp_path: Path, elasticsearch8: str, es_namespace: str) -> None:
    key, public = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 40)
    setup = [*TEE_AUDIT, "setup", "--es", elasticsearch8, "--es.namespace", es_namespace, "--es.retention", "7d"]
    assert subprocess.run(setup, check=False, timeout=120).returncode == 0
    cmd = _ship_cmd(journal, key, tmp_path / "spool", elasticsearch8, es_namespace, "--checkpoint.every-records", "10")
    assert subprocess.run(cmd, check=False, timeout=120).returncode == 0
    stream = data_stream_name(es_namespace)

    (tpl,) = _get(elasticsearch8, f"/_index_template/{stream}")["index_templates"]
    tpl = tpl["index_template"]
    assert tpl["index_patterns"] == [stream] and "data_stream" in tpl
    assert tpl["template"]["lifecycle"]["data_retention"] == "7d"
    assert tpl["template"]["settings"]["index"]["mode"] == "standard"
    assert tpl["template"]["mappings"]["properties"]["chain"]["properties"]["seq"] == {"type": "long"}

    meta = _data_stream_metadata(elasticsearch8, stream)
    assert meta["lifecycle"]["data_retention"] == "7d"
    backing = [index["index_name"] for index in meta["indices"]]
    assert backing and all(name.startswith(f".ds-{stream}-") for name in backing)

    hits = _get(elasticsearch8, f"/{stream}/_search", size=100, q="_exists_:chain.seq")["hits"]["hits"]
    assert sorted(h["_id"] for h in hits) == sorted(f"h1:{i}" for i in range(40))
    assert {h["_index"] for h in hits} <= set(backing)

    code, report = verify_json("--es", elasticsearch8, "--data-stream", stream, "--public-key", str(public))
    assert (code, report["intact"], report["records"], report["findings"]) == (0, True, 40, [])
    assert report["checkpoints"] >= 4 and report["unsealed_tail"] == 0


def _progress(spool: Path) -> int:
    try:
        return json.loads((spool / "cursor-elasticsearch.json").read_text())["next_seq"]
    except (OSError, ValueError, KeyError):
        return 0


def test_kill_9_mid_ship_then_rerun_puts_every_record_in_es8_exactly_once(
        tmp_path: Path, elasticsearch8: str, es_namespace: str) -> None:
    events = 2000
    key, public = keys(tmp_path / "keys")
    journal, spool = tmp_path / "journal.jsonl", tmp_path / "spool"
    write_journal(journal, events)
    es_setup(elasticsearch8, es_namespace)
    cmd = _ship_cmd(journal, key, spool, elasticsearch8, es_namespace, "--es.batch-size", "100",
                    "--checkpoint.every-records", "500")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Kill once some bulks are acknowledged and more are in flight: the rerun resends from its cursor.
        while proc.poll() is None and _progress(spool) < events // 4:
            time.sleep(0.01)
        assert proc.poll() is None, "the shipper must still be running when it is killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert _progress(spool) < events

    assert subprocess.run(cmd, check=False, timeout=120).returncode == 0
    stream = data_stream_name(es_namespace)
    assert _record_count(elasticsearch8, stream) == events
    code, report = verify_json("--es", elasticsearch8, "--data-stream", stream, "--public-key", str(public))
    assert (code, report["records"], report["findings"]) == (0, events, [])

    # A retry of an acknowledged bulk (op_type=create, _id = chain:seq) meets 409 and is taken as success.
    (hit,) = _get(elasticsearch8, f"/{stream}/_search", q='_id:"h1:0"')["hits"]["hits"]
    sink = ElasticsearchSink(connect(elasticsearch8), "h1", es_namespace)
    try:
        sink.write([(0, json.dumps(hit["_source"]).encode())], [])
    finally:
        sink.close()
    assert _record_count(elasticsearch8, stream) == events
