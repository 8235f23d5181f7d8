"""Verify against a real Elasticsearch: retention (rollover, then the oldest backing index deleted), the failure
store, documents only the standard decoder reads, and ``--all-chains`` over a fleet's data stream."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from elasticsearch import Elasticsearch

from audit.canonical import canonicalize
from audit.chain import record_hash
from audit.readers import elasticsearch as reader
from audit.sinks.elasticsearch import data_stream_name
from tests.audit.kit import TEE_AUDIT, keys, kinds, ship_once, verify_json, write_journal
from tests.audit.tamper import EsTamper

pytestmark = pytest.mark.elasticsearch
CHAIN = "h1"


class Fleet:
    """Chains shipped into one data stream of the session's Elasticsearch."""

    def __init__(self, tmp: Path, url: str, namespace: str) -> None:
        self.tmp, self.url, self.ns = tmp, url, namespace
        self.key, self.public = keys(tmp / "keys")
        self.stream = data_stream_name(namespace)
        self.es = Elasticsearch(url)
        self.shipped: dict[str, int] = {}

    def ship(self, count: int, chain: str = CHAIN) -> None:
        """``count`` more records on ``chain`` (its spool carries the chain on)."""
        start = self.shipped.get(chain, 0)
        journal = self.tmp / f"journal-{chain}-{start}.jsonl"
        write_journal(journal, count, host=chain, start=start)
        assert ship_once([journal], self.key, self.tmp / f"spool-{chain}", es=self.url, namespace=self.ns,
                         chain=chain) == 0
        self.shipped[chain] = start + count

    def verify(self, *extra: str) -> tuple[int, dict[str, Any]]:
        return verify_json("--es", self.url, "--data-stream", self.stream, "--public-key", str(self.public), *extra)

    def backing_indices(self) -> list[str]:
        state = self.es.cluster.state(metric="metadata", index=self.stream)
        return [i["index_name"] for i in state["metadata"]["data_stream"]["data_stream"][self.stream]["indices"]]


@pytest.fixture
def fleet(tmp_path: Path, elasticsearch: str, es_namespace: str) -> Fleet:
    return Fleet(tmp_path, elasticsearch, es_namespace)


def _expire_oldest(fleet: Fleet) -> None:
    """What the data stream lifecycle does at day 90+: roll over, then delete the oldest backing index."""
    fleet.es.indices.rollover(alias=fleet.stream)
    fleet.ship(25)
    oldest = fleet.backing_indices()[0]
    assert oldest.endswith("-000001")
    fleet.es.indices.delete(index=oldest)


def test_records_deleted_with_the_oldest_backing_index_are_expired_not_missing(fleet: Fleet) -> None:
    fleet.ship(30)
    _expire_oldest(fleet)
    code, report = fleet.verify()
    assert (code, report["findings"], report["expired"], report["records"]) == (0, [], 30, 25)
    assert report["checkpoints"] == 6  # sizes 10, 20, 30 (and 40, 50, 55) outlived their records: they are in their own stream


def test_real_gap_after_retention_is_still_missing(fleet: Fleet) -> None:
    fleet.ship(30)
    _expire_oldest(fleet)
    EsTamper(fleet.url, fleet.stream, CHAIN).delete(40)
    code, report = fleet.verify()
    assert (code, kinds(report), report["expired"]) == (1, [("missing", 40)], 30)


def test_first_record_after_retention_must_link_to_the_checkpoint_before_it(fleet: Fleet) -> None:
    """The checkpoint of size 30 names record 29's hash: record 30, now the oldest, must link to it."""
    fleet.ship(30)
    _expire_oldest(fleet)
    tamper = EsTamper(fleet.url, fleet.stream, CHAIN)
    first = dict(tamper.doc(30), chain=dict(tamper.doc(30)["chain"]))
    first["chain"]["prev_hash"] = "f" * 64
    first["chain"]["hash"] = record_hash(first)
    tamper.replace(30, first)
    code, report = fleet.verify("--checkpoint-every-records", "0")
    assert code == 1 and ("broken-link", 30) in kinds(report)


def test_stream_without_a_failure_store_reports_none(fleet: Fleet) -> None:
    fleet.ship(12)
    code, report = fleet.verify()
    assert (code, report["failure_store"]) == (0, [])


def test_failure_store_documents_of_the_chain_are_listed() -> None:
    """The integ-test distribution cannot create failure-store indices (its mapping needs the mapper-extras module),
    so the reading of ``<stream>::failures`` is checked on the answer shape Elasticsearch 9.1+ documents."""

    class Answer:
        def perform_request(self, method: str, path: str, **_: Any) -> Any:
            assert (method, path) == ("POST", "/logs-tee.audit-x::failures/_search")
            body = (b'{"hits":{"hits":[{"_source":{"document":{"id":"h1:7"},"error":{"type":'
                    b'"document_parsing_exception","message":"failed to parse field [@timestamp]"}}}]}}')
            return type("R", (), {"body": body})()

    got = reader.failures(Answer(), "logs-tee.audit-x", CHAIN)  # type: ignore[arg-type]
    assert got == [{"seq": 7, "id": "h1:7", "error": "document_parsing_exception: failed to parse field "
                    "[@timestamp]"}]


def test_document_only_the_standard_decoder_reads_is_judged_not_fatal(fleet: Fleet) -> None:
    """A lone surrogate escape makes orjson refuse the whole page: the page is read with the standard decoder
    and the document judged (it cannot be canonicalised: not a chained record)."""
    fleet.ship(30)
    tamper = EsTamper(fleet.url, fleet.stream, CHAIN)
    line = canonicalize(tamper.doc(17)).replace(b"domain vm-17", b"domain \\udc00vm-17")
    tamper.put_raw(f"{CHAIN}:17", line)
    code, report = fleet.verify()
    assert (code, kinds(report)) == (1, [("inserted", None), ("missing", 17)])


def test_all_chains_verifies_every_chain_with_one_summary(fleet: Fleet) -> None:
    for chain in ("h1", "h2", "h3"):
        fleet.ship(15, chain)
    EsTamper(fleet.url, fleet.stream, "h2").delete(4)
    code, summary = fleet.verify("--all-chains")
    assert code == 1
    assert summary["totals"] == {"chains": 3, "intact": 2, "not_intact": 1, "errors": 0, "records": 44}
    by_chain = {c["chain"]: c for c in summary["chains"]}
    assert [(f["kind"], f["seq"]) for f in by_chain["h2"]["findings"]] == [("missing", 4)]
    assert by_chain["h1"]["intact"] and by_chain["h3"]["intact"]


def test_single_chain_verify_of_a_fleet_stream_needs_a_chain(fleet: Fleet) -> None:
    for chain in ("h1", "h2"):
        fleet.ship(5, chain)
    assert fleet.verify() == (2, {})
    assert fleet.verify("--chain", "h2")[0] == 0


def test_page_no_decoder_reads_is_read_again_document_by_document(fleet: Fleet) -> None:
    """A lone surrogate (orjson refuses it) and, on the same page, a document nested deeper than the standard
    decoder's recursion limit: the page is read again without sources and each document fetched alone."""
    fleet.ship(30)
    tamper = EsTamper(fleet.url, fleet.stream, CHAIN)
    tamper.put_raw(f"{CHAIN}:17", canonicalize(tamper.doc(17)).replace(b"domain vm-17", b"domain \\udc00vm-17"))
    deep = canonicalize(tamper.doc(23))
    tamper.put_raw(f"{CHAIN}:23", deep[:-1] + b',"zz":' + b"[" * 995 + b"1" + b"]" * 995 + b"}")
    raw = reader.es.request(reader.connect(reader.EsOptions(fleet.url)), "POST", f"/{fleet.stream}/_search",
                            {"size": 100, "query": {"match_all": {}}})
    assert reader._decode(raw) is None  # the situation this test is about
    code, report = fleet.verify()
    assert code == 1
    assert kinds(report) == [("inserted", None), ("missing", 17), ("modified", 23)]
    assert "cannot be read" in next(f["detail"] for f in report["findings"] if f["seq"] == 23)


def test_a_search_that_failed_on_a_shard_is_not_judged(fleet: Fleet) -> None:
    """A shard that fails answers 200 with what the others found: judged, the records of the failed shard would be
    reported dropped. Here the oldest backing index refuses the verifier's page size (its result window is set
    below it, as a misconfiguration or the cluster's operator can); verify must say it cannot verify (exit 2)."""
    fleet.ship(30)
    fleet.es.indices.rollover(alias=fleet.stream)
    fleet.ship(25)
    oldest = fleet.backing_indices()[0]
    fleet.es.indices.put_settings(index=oldest, settings={"index.max_result_window": 10})
    run = subprocess.run([*TEE_AUDIT, "verify", "--es", fleet.url, "--data-stream", fleet.stream, "--public-key",
                          str(fleet.public)], capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 2 and not run.stdout, run.stdout
    assert run.stderr.startswith("tee-audit verify: cannot verify: search_shards: a search failed on 1 shard(s): "
                                 "illegal_argument_exception: Result window is too large"), run.stderr
