"""Witnessing from the Elasticsearch sink, against a real litewitness and the real Elasticsearch: each tree
checkpoint goes to the witness with its consistency proof from the tiles in Elasticsearch, the cosignatures are
kept as documents, ``verify --es --policy`` counts them; a history the host rewrote and re-signed with the real key
is refused by the witness and caught as a fork through the cosigned checkpoint an auditor kept."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from audit import checkpoint as cp
from audit.sinks.elasticsearch import ElasticsearchSink, checkpoint_stream_name, data_stream_name
from audit.witness import WitnessError, add_checkpoint
from tests.audit.kit import TEE_AUDIT, keys, ship_once, verify_json, write_journal
from tests.fixtures.litewitness import Litewitness

pytestmark = pytest.mark.elasticsearch
ORIGIN = "tee-audit/h1"


class Host:
    """A shipper into Elasticsearch, witnessed; the tests then play the host gone bad."""

    def __init__(self, tmp: Path, url: str, namespace: str, witness: Litewitness) -> None:
        self.tmp, self.url, self.namespace, self.witness = tmp, url, namespace, witness
        self.key_file, self.public_file = keys(tmp / "keys")
        witness.register(ORIGIN, cp.vkey(ORIGIN, cp.load_public(self.public_file)))
        self.stream = data_stream_name(namespace)
        self.es = Elasticsearch(url)
        self.shipped = 0
        self.policy = tmp / "policy"
        self.policy.write_text(f"log {cp.vkey(ORIGIN, cp.load_public(self.public_file))}\n"
                               f"witness {witness.name} {witness.vkey}\nquorum 1\n")

    def ship(self, count: int, journal: str = "journal.jsonl", witnessed: bool = True, spool: str = "spool") -> None:
        write_journal(self.tmp / journal, count, start=self.shipped, host=journal)
        self.shipped += count
        extra: dict[str, Any] = {"witness_urls": self.witness.url} if witnessed else {}
        assert ship_once([self.tmp / journal], self.key_file, self.tmp / spool, es=self.url,
                         namespace=self.namespace, every=100, **extra) == 0

    def docs(self, field: str) -> list[dict[str, Any]]:
        stream = checkpoint_stream_name(self.stream)
        self.es.indices.refresh(index=stream)
        return [h["_source"] for h in self.es.search(index=stream, size=1000, query={"exists": {"field": field}},
                                                     sort=[{f"{field.split('.')[0]}.size": "asc"}])["hits"]["hits"]]

    def note(self, size: int) -> str:
        return next(d["checkpoint"]["note"] for d in self.docs("checkpoint.size") if d["checkpoint"]["size"] == size)

    def cosigned_note(self, size: int) -> str:
        return self.note(size) + "".join(d["cosignature"]["lines"] for d in self.docs("cosignature.size")
                                         if d["cosignature"]["size"] == size)

    def verify(self, *extra: str) -> tuple[int, dict[str, Any]]:
        return verify_json("--es", self.url, "--data-stream", self.stream, "--public-key", str(self.public_file),
                           "--checkpoint-every-records", "100", *extra)


@pytest.fixture
def host(tmp_path: Path, elasticsearch: str, es_namespace: str, litewitness: Litewitness) -> Host:
    h = Host(tmp_path, elasticsearch, es_namespace, litewitness)
    h.ship(300)
    return h


def test_the_es_sink_gets_checkpoints_cosigned_and_keeps_the_cosignatures(host: Host) -> None:
    assert host.witness.known(ORIGIN) == (300, cp.parse(host.note(300)).body.split("\n")[2])
    cosigned = cp.parse(host.cosigned_note(300))
    assert [name for name, _, _ in cosigned.signatures] == [ORIGIN, host.witness.name]
    host.ship(250)  # the witness must accept the consistency proof from 300 to 550, made from the ES tiles
    assert host.witness.known(ORIGIN)[0] == 550
    code, report = host.verify("--policy", str(host.policy))
    assert code == 0 and report["witnessed_size"] == 550, report
    sizes = [d["cosignature"]["size"] for d in host.docs("cosignature.size")]
    assert sizes[0] == 300 and sizes[-1] == 550 and sizes == sorted(set(sizes)), sizes
    receipt = host.tmp / "receipt"
    proc = subprocess.run([*TEE_AUDIT, "prove", "--es", host.url, "--data-stream", host.stream, "--seq", "17",
                           "--out", str(receipt)], capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    print(f"receipt from Elasticsearch with one cosignature: {len(receipt.read_bytes())} bytes")
    assert len(receipt.read_bytes()) < 2048
    proc = subprocess.run([*TEE_AUDIT, "verify-proof", str(receipt), "--public-key", str(host.public_file),
                           "--witness-key", host.witness.vkey], capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 0 and f"cosigned by {host.witness.name}" in proc.stdout, proc.stdout + proc.stderr


def test_witnessed_size_is_exposed_for_the_metric(host: Host) -> None:
    """``tee_audit_witnessed_size`` is set from the sink's ``tree_sizes`` (audit/ship.py ``_gauges``)."""
    from audit.sinks.elasticsearch import connect

    host.ship(100)
    sink = ElasticsearchSink(connect(host.url), "h1", host.namespace, witnesses=(host.witness.url,))
    sink.write([], [])  # a sink started on what is stored: the witnessed sizes come from the cosignatures there
    sink._witness([host.note(400)])
    assert sink.tree_sizes == (400, {host.witness.url: 400})


def test_history_rewritten_and_resigned_in_elasticsearch_is_refused_and_caught_as_a_fork(
        host: Host, es_namespace: str) -> None:
    """The host controls Elasticsearch: it serves the auditor a history of its own making, shipped afresh and
    signed with the real key (here into another namespace, which the auditor is then pointed at)."""
    kept = host.tmp / "kept.note"
    kept.write_text(host.cosigned_note(300))  # what an auditor (or the witness) saw
    host.namespace, host.stream = es_namespace + "x", data_stream_name(es_namespace + "x")
    host.shipped = 0
    host.ship(300, journal="rewritten.jsonl", witnessed=False, spool="spool2")
    code, report = host.verify()
    assert code == 0, "every signature verifies: the key alone cannot protect against its holder"
    with pytest.raises(WitnessError) as refused:
        add_checkpoint(host.witness.url, 300, [], host.note(300))
    assert refused.value.status == 422  # another root at size 300
    code, report = host.verify("--known-checkpoint", str(kept))
    assert code == 1 and [(f["kind"], f["seq"]) for f in report["findings"]] == [("fork", 299)], report
    code, report = host.verify("--policy", str(host.policy))
    assert code == 1 and report["witnessed_size"] == 0, report


def test_a_cosignature_copied_onto_another_size_does_not_seal_it(host: Host) -> None:
    """The host copies the witness's genuine cosignature of size 300 onto its unwitnessed checkpoint of size 450:
    it does not verify for that checkpoint's body, so the policy seals 300 only."""
    host.ship(150, witnessed=False)  # 400 and 450: signed, never shown to the witness
    code, report = host.verify("--policy", str(host.policy))
    assert code == 1 and report["witnessed_size"] == 300, report
    lines = host.docs("cosignature.size")[0]["cosignature"]["lines"]
    host.es.create(index=checkpoint_stream_name(host.stream), id="h1:cosignature:450:copied", refresh=True,
                   document={"@timestamp": "2026-11-28T00:00:00Z", "chain": {"id": "h1"},
                             "cosignature": {"size": 450, "witness": host.witness.url, "lines": lines}})
    code, copied = host.verify("--policy", str(host.policy))
    assert (code, copied["witnessed_size"], copied["findings"]) == (1, 300, report["findings"]), copied
    assert [f["kind"] for f in copied["findings"]] == ["unsealed"], copied
