"""What making every event field searchable costs Elasticsearch: bulk indexing and disk with the records template's
mapping (audit/esmapping.py: every field of the exporter's event schema) against the same template mapping only
what the chain needs (``@timestamp``, ``chain.*``), the same documents, alternating over several rounds.

    .venv/bin/python bench/mapping_bench.py [--events 50000] [--rounds 5] [--es URL]

The documents are exporter-shaped events in equal thirds: a lifecycle transition (``tee.vm.*``), an attestation
verdict (``tee.evidence.*``, ``tee.attestation.*``, ``tee.policy.*``, ``file.*``, a measurement) and a refused
guest flow (``source.*``, ``destination.*``, ``network.*``). Each round bulk-creates them (chunks of 1000, the
shipper's batch) into a fresh data stream of each template, the order swapped every round; it prints documents/s
and the primary store size after a refresh. Without --es, Elasticsearch is started on $TEE_BENCH_ES_PORT
(default a free port) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elasticsearch import Elasticsearch, helpers

from audit.esmapping import PROPERTIES
from audit.sinks.elasticsearch import template
from bench.local_es import elasticsearch
from exporter.journal import make_event
from tests.fixtures.ports import free_ports

CHAIN_ONLY = {key: PROPERTIES[key] for key in ("@timestamp", "chain")}


def event(i: int) -> dict[str, Any]:
    vm = {"name": f"vm-{i % 100}", "uuid": f"{i:032x}"}
    common = {"category": ["host"], "dataset": "tee.bench", "host": "bench-host", "outcome": "success"}
    if i % 3 == 0:
        doc = make_event(action="domain-started", type=["start"], message=f"domain vm-{i % 100} started (booted)",
                         tee={"type": "sev-snp", "vm": {**vm, "state": "started", "previous_state": "defined",
                                                        "detail": "booted", "debug_allowed": False}}, **common)
        doc["event"]["duration"] = 1_200_000_000 + i
    elif i % 3 == 1:
        doc = make_event(action="attestation-verified", type=["info"], message="evidence verified",
                         tee={"type": "tdx", "vm": vm, "measurement": f"{i:096x}",
                              "evidence": {"sha256": f"{i:064x}", "format": "tdx-quote", "version": 4},
                              "attestation": {"source": "evidence", "signer": "Intel SGX PCK Certificate",
                                              "product": "tdx", "warnings": ["tcb_out_of_date"]},
                              "policy": {"result": "pass", "violations": []}},
                         extra={"file": {"path": f"/var/lib/tee/evidence/{i}.bin", "hash": {"sha256": f"{i:064x}"}}},
                         **common)
    else:
        doc = make_event(action="egress-refused", type=["denied"], message="flow outside network_policy",
                         tee={"type": "sev-snp", "vm": vm, "egress": {"suppressed": i % 7}},
                         extra={"source": {"ip": f"192.168.122.{i % 250}", "port": 40000 + i % 20000},
                                "destination": {"ip": f"10.{i % 250}.{i % 200}.{i % 150}", "port": 443},
                                "network": {"transport": "tcp", "iana_number": "6"}}, **common)
    doc["chain"] = {"id": "bench", "seq": i, "prev_hash": f"{i:064x}", "hash": f"{i + 1:064x}"}
    return doc


def index_once(es: Elasticsearch, docs: list[dict[str, Any]], name: str, properties: dict[str, Any]
               ) -> tuple[float, int]:
    """Documents/s of one bulk load into a fresh data stream mapped with ``properties``, and its store bytes."""
    body = template(name, "7d")
    body["template"]["mappings"]["properties"] = properties
    es.indices.put_index_template(name=name, body=body)
    stream = body["index_patterns"][0]
    start = time.perf_counter()
    _ok, errors = helpers.bulk(es, ({"_op_type": "create", "_index": stream, "_id": str(i), "_source": doc}
                                    for i, doc in enumerate(docs)), chunk_size=1000, stats_only=True,
                               raise_on_error=False)
    rate = len(docs) / (time.perf_counter() - start)
    assert errors == 0, errors
    es.indices.refresh(index=stream)
    return rate, es.indices.stats(index=stream)["_all"]["primaries"]["store"]["size_in_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--es", help="an Elasticsearch to use instead of starting one")
    opts = parser.parse_args()
    docs = [event(i) for i in range(opts.events)]
    port = os.environ.get("TEE_BENCH_ES_PORT") or str(free_ports((0, 100)))
    sides = {"every field": PROPERTIES, "chain only": CHAIN_ONLY}
    results: dict[str, list[tuple[float, int]]] = {side: [] for side in sides}
    run = f"{time.time_ns():x}"[-8:]
    with elasticsearch(opts.es, port) as url:
        es = Elasticsearch(url, request_timeout=300)
        for r in range(opts.rounds):
            for side in sorted(sides, reverse=r % 2 == 1):
                rate, size = index_once(es, docs, f"mb{run}{r}{side[0]}", sides[side])
                results[side].append((rate, size))
                print(f"round {r} {side:11}: {rate:8,.0f} docs/s  {size / 1e6:6.2f} MB", flush=True)
    for side, got in results.items():
        rates = [rate for rate, _ in got]
        print(f"{side:11}: median {statistics.median(rates):8,.0f} docs/s (min {min(rates):,.0f}, max "
              f"{max(rates):,.0f}), median size {statistics.median(size for _, size in got) / 1e6:.2f} MB")
    ratios = [e[0] / c[0] for e, c in zip(results["every field"], results["chain only"], strict=True)]
    sizes = [e[1] / c[1] for e, c in zip(results["every field"], results["chain only"], strict=True)]
    print(f"every field / chain only: rate {statistics.median(ratios):.2f} (per round "
          f"{', '.join(f'{x:.2f}' for x in ratios)}), size {statistics.median(sizes):.2f}")


if __name__ == "__main__":
    main()
