"""``tee-audit verify`` against its ceilings, both sides measured in alternating rounds of the same run.

1. ``verify --es`` of one chain vs a raw point-in-time + ``search_after`` scan of the same documents with the
   standard client (same query, sort and page size; every ``_source`` parsed, nothing checked).
2. ``verify --store`` (fast path, one worker per core) vs raw SHA-256 over the same bytes (every stored line read
   from the segment files and hashed).
3. The same store with a few modified records (findings) vs intact.
4. ``verify --es --all-chains`` over C chains x R records in one data stream vs a raw scan of the whole stream.

Chains are built by the real sinks (``LocalStore``, ``ElasticsearchSink``) from exporter-shaped events sealed and
signed as the shipper does: a tree checkpoint (RFC 9162 root of a ``merkle.Frontier`` and the head line) every
1000 records, the local store writing its Merkle tiles itself, so ``verify --store`` checks the tree too. Each
figure: median over the rounds and the spread (min..max); ratios are of medians.

    .venv/bin/python bench/verify_bench.py [--records 200000] [--rounds 5] [--chains 100 --chain-records 10000]
                                           [--es URL] [--skip-fleet] [--skip-es] [--skip-local]

Without --es, Elasticsearch is started on port 19520 (data in .cache/es-bench-19520) and stopped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from elasticsearch import Elasticsearch

from audit import checkpoint as cp
from audit.canonical import canonicalize
from audit.chain import Head, seal
from audit.merkle import Frontier, leaf_hash
from audit.readers import localstore as store_reader
from audit.setup import install as es_setup
from audit.sinks.elasticsearch import ElasticsearchSink, data_stream_name
from audit.sinks.elasticsearch import connect as es_connect
from audit.sinks.localstore import LocalStore
from audit.verify_cli import EsOptions, default_workers, verify_all_es, verify_es, verify_store
from bench.local_es import elasticsearch
from exporter.journal import make_event

EVERY = 1000
BATCH = 1000


def sealed(chain: str, n: int, key: Ed25519PrivateKey) -> Iterator[tuple[list[tuple[int, bytes]], list[dict]]]:
    """Batches of (seq, stored bytes) and the checkpoints due after them, as ``tee-audit ship`` makes them
    (audit/ship.py ``_chain``, ``_checkpoint``): tree checkpoints carrying the RFC 9162 root of a
    ``merkle.Frontier`` and the head line; the local store sink writes the tiles itself."""
    head = Head(chain)
    tree = Frontier()
    batch: list[tuple[int, bytes]] = []
    notes: list[dict] = []
    for i in range(n):
        event = make_event(action="started", category=["host"], type=["start"], dataset="tee.lifecycle",
                           host=chain, outcome="success", message=f"domain vm-{i % 1000} started",
                           tee={"type": "sev-snp", "vm": {"name": f"vm-{i % 1000}", "uuid": f"u-{i}"}})
        doc, head = seal(event, head)
        data = canonicalize(doc)
        tree.append(leaf_hash(data))
        batch.append((head.next_seq - 1, data))
        if head.next_seq % EVERY == 0 or i == n - 1:
            notes.append({"k": "c", "size": head.next_seq, "hash": head.hash, "t": time.time(),
                          "note": cp.sign_tree(key, chain, head.next_seq, tree.root(), head.hash)})
        if len(batch) >= BATCH or i == n - 1:
            yield batch, notes
            batch, notes = [], []


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def rounds(sides: dict[str, Callable[[], Any]], n: int) -> dict[str, list[float]]:
    """Each side once per round, the order alternating from round to round."""
    names = list(sides)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(n):
        for name in names if r % 2 == 0 else reversed(names):
            out[name].append(timed(sides[name]))
    return out


def line(label: str, times: list[float], items: int) -> str:
    med = statistics.median(times)
    return (f"{label:<44} {items / med:>10.0f} rec/s  median {med:7.3f} s  spread {min(times):.3f}..{max(times):.3f} s"
            f"  ({len(times)} rounds)")


def raw_sha(store: Path, chain: str) -> int:
    count = 0
    lay = store_reader.layout(store, chain)
    for seg in lay.segments:
        with open(seg.path, "rb") as fh:
            for rec in fh.read(seg.complete).split(b"\n")[:-1]:
                hashlib.sha256(rec).digest()
                count += 1
    return count


def raw_scan(es: Elasticsearch, stream: str, chain: str | None) -> int:
    """PIT + search_after with the standard client: every page parsed, every ``_source`` touched."""
    query = ({"bool": {"filter": [{"term": {"chain.id": chain}}, {"exists": {"field": "chain.seq"}}]}} if chain
             else {"exists": {"field": "chain.seq"}})
    sort = [{"chain.seq": "asc"}] if chain else [{"_shard_doc": "asc"}]
    pit = es.open_point_in_time(index=stream, keep_alive="2m")["id"]
    count, after = 0, None
    try:
        while True:
            page = es.search(pit={"id": pit, "keep_alive": "2m"}, size=5000, query=query, sort=sort,
                             search_after=after, track_total_hits=False)
            hits = page["hits"]["hits"]
            if not hits:
                return count
            for hit in hits:
                count += hit["_source"] is not None
            after = hits[-1]["sort"]
            pit = page.get("pit_id", pit)
    finally:
        es.close_point_in_time(id=pit)


def tamper(store: Path, chain: str, seqs: list[int]) -> None:
    """Change one character of the message of each record in ``seqs`` (same length: offsets stay)."""
    for seg in store_reader.layout(store, chain).segments:
        data = bytearray(seg.path.read_bytes())
        for seq in seqs:
            at = data.find(b'"seq":%d}' % seq)
            if at < 0:
                continue
            msg = data.find(b'"message":"domain vm-', at)  # "message" sorts after "chain"
            data[msg + 11] = ord("D")
        seg.path.write_bytes(bytes(data))


def bench_local(tmp: Path, key: Ed25519PrivateKey, n: int, n_rounds: int) -> None:
    public = key.public_key()
    store = tmp / "store"
    sink = LocalStore(store, "bench")
    for batch, notes in sealed("bench", n, key):
        sink.write(batch, notes)
    sink.close()
    workers = default_workers()
    report = verify_store(store, "bench", public, None, workers=workers)
    assert report.intact and report.records == n and (store / "bench" / "tile" / "tree-size").read_text() == f"{n}\n"
    t = rounds({"verify": lambda: verify_store(store, "bench", public, None, workers=workers),
                "sha": lambda: raw_sha(store, "bench")}, n_rounds)
    print(line(f"verify --store ({workers} workers)", t["verify"], n))
    print(line("raw SHA-256 over the same bytes (1 core)", t["sha"], n))
    print(f"  ratio verify / raw SHA-256: {statistics.median(t['sha']) / statistics.median(t['verify']):.3f}"
          "  (target >= 0.5)")
    bad = tmp / "bad"
    shutil.copytree(store, bad)
    spots = [n // 7, n // 3, n // 2, 2 * n // 3, n - 5]
    tamper(bad, "bench", spots)
    report = verify_store(bad, "bench", public, None)
    assert sorted((f.kind, f.seq) for f in report.findings) == [("modified", s) for s in spots], report.findings[:8]
    t = rounds({"intact": lambda: verify_store(store, "bench", public, None, workers=workers),
                "findings": lambda: verify_store(bad, "bench", public, None, workers=workers)}, n_rounds)
    print(line("verify --store, intact", t["intact"], n))
    print(line(f"verify --store, {len(spots)} modified records", t["findings"], n))
    print(f"  ratio with findings / intact: {statistics.median(t['findings']) / statistics.median(t['intact']):.2f}"
          "  (target <= 2)")


def bench_es(url: str, key: Ed25519PrivateKey, n: int, n_rounds: int) -> None:
    ns = f"vbench{int(time.time())}"
    stream = data_stream_name(ns)
    client = es_connect(url, timeout=120)
    list(es_setup(client, url, ns, "90d"))  # the administrator's step; the sink only appends
    sink = ElasticsearchSink(client, "bench", ns)
    for batch, notes in sealed("bench", n, key):
        sink.write(batch, notes)
    sink.flush()
    es = Elasticsearch(url, request_timeout=120)
    conn = EsOptions(url, stream)
    public = key.public_key()

    def verify_one() -> None:
        report = verify_es(conn, "bench", public, None)
        assert report.intact and report.records == n, report.findings[:3]

    t = rounds({"verify": verify_one, "scan": lambda: raw_scan(es, stream, "bench")}, n_rounds)
    print(line("verify --es", t["verify"], n))
    print(line("raw PIT + search_after scan (standard client)", t["scan"], n))
    print(f"  ratio verify / raw scan: {statistics.median(t['scan']) / statistics.median(t['verify']):.3f}"
          "  (target >= 0.8)")


def bench_fleet(url: str, key: Ed25519PrivateKey, chains: int, per_chain: int, n_rounds: int) -> None:
    ns = f"vfleet{int(time.time())}"
    stream = data_stream_name(ns)
    client = es_connect(url, timeout=120)
    list(es_setup(client, url, ns, "90d"))
    for c in range(chains):
        sink = ElasticsearchSink(client, f"host-{c:03d}", ns)
        for batch, notes in sealed(f"host-{c:03d}", per_chain, key):
            sink.write(batch, notes)
    sink.flush()
    es = Elasticsearch(url, request_timeout=120)
    conn = EsOptions(url, stream)
    public = key.public_key()
    total = chains * per_chain

    def verify_all() -> None:
        results = verify_all_es(conn, public, None, default_workers())
        assert len(results) == chains and all(r.code == 0 for r in results)

    t = rounds({"verify": verify_all, "scan": lambda: raw_scan(es, stream, None)}, n_rounds)
    print(line(f"verify --es --all-chains ({chains} x {per_chain}, {default_workers()} procs)", t["verify"], total))
    print(line("raw PIT + search_after scan of the stream", t["scan"], total))
    print(f"  ratio all-chains / raw scan: {statistics.median(t['scan']) / statistics.median(t['verify']):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--chain-records", type=int, default=10_000)
    parser.add_argument("--fleet-rounds", type=int, default=3)
    parser.add_argument("--es", help="an Elasticsearch to use instead of starting one on port 19520")
    parser.add_argument("--skip-fleet", action="store_true")
    parser.add_argument("--skip-es", action="store_true")
    parser.add_argument("--skip-local", action="store_true")
    opts = parser.parse_args()
    key = Ed25519PrivateKey.generate()
    (ROOT / ".cache").mkdir(exist_ok=True)
    print(f"{os.cpu_count()} CPUs, {default_workers()} usable; {opts.records} records, {opts.rounds} rounds")
    if not opts.skip_local:
        with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp_name:
            bench_local(Path(tmp_name), key, opts.records, opts.rounds)
    if opts.skip_es:
        return
    with elasticsearch(opts.es, "19520", heap="1g") as url:
        bench_es(url, key, opts.records, opts.rounds)
        if not opts.skip_fleet:
            bench_fleet(url, key, opts.chains, opts.chain_records, opts.fleet_rounds)


if __name__ == "__main__":
    main()
