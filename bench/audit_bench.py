"""tee-audit throughput against its ceilings, measured in the same run on the same machine.

1. ``tee-audit ship --once`` of N journal events into Elasticsearch (+ nothing else), alternating with a bare
   ``elasticsearch.helpers.bulk`` loader of the very same documents (op_type create, same _id, same batch size):
   the ingest ceiling of this Elasticsearch.
2. ``tee-audit verify`` of the local store (records/s) vs raw hashlib SHA-256 over the same canonical bytes.
3. Shipper peak RSS for N/4 and N events shipped into the local store (the backlog is the whole journal): flat
   memory means the backlog lives on disk.

    .venv/bin/python bench/audit_bench.py [--events 1000000] [--rounds 5] [--es URL] [--ship-only]
    .venv/bin/python bench/audit_bench.py --verify-only --events 200000     # part 2 alone, no Elasticsearch
    .venv/bin/python bench/audit_bench.py --ship-only --with-store          # ship side writes ES + local store

Part 1 alternates the two sides over ``--rounds`` rounds (order swapped every round) and reports medians and
spread, then times a replay of everything after a rollover (the exactly-once slow path). Without --es,
Elasticsearch is installed/started on port $TEE_BENCH_ES_PORT (default a free port, transport on port + 100) and
stopped afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from elasticsearch import Elasticsearch, helpers

from audit import checkpoint as cp
from audit.canonical import canonicalize, loads
from audit.chain import doc_id
from audit.sinks import localstore
from audit.verify import verify
from audit.verify_cli import default_workers, local_records, verify_store
from bench.local_es import elasticsearch
from exporter.journal import make_event
from tests.fixtures.litewitness import Litewitness, build, running
from tests.fixtures.ports import free_ports

TEE_AUDIT = [sys.executable, "-m", "audit"]


def write_journal(path: Path, count: int) -> None:
    """Exporter-shaped events, written in bulk (the exporter's Journal does one write per event)."""
    with open(path, "wb") as fh:
        for i in range(count):
            event = make_event(action="started", category=["host"], type=["start"], dataset="tee.lifecycle",
                               host="bench-host", outcome="success", message=f"domain vm-{i % 1000} started",
                               tee={"type": "sev-snp", "vm": {"name": f"vm-{i % 1000}", "uuid": f"u-{i}"}})
            fh.write(json.dumps(event, separators=(",", ":")).encode() + b"\n")


def ship(args: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one ``tee-audit ship --once`` run."""
    start = time.perf_counter()
    proc = subprocess.Popen([*TEE_AUDIT, "ship", "--once", "--log.level", "error", *args])
    _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS, not the running max of all children
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0, proc.returncode
    return elapsed, usage.ru_maxrss / 1024


def bare_loader(url: str, store_dir: Path, stream: str, batch: int) -> float:
    """Seconds for elasticsearch.helpers.bulk to create the same documents (read from the local store)."""
    def actions():
        for line in localstore.read_lines(store_dir):
            doc = json.loads(line)
            yield {"_op_type": "create", "_index": stream, "_id": doc_id("bench", doc["chain"]["seq"]),
                   "_source": doc}

    es = Elasticsearch(url, request_timeout=120)
    start = time.perf_counter()
    _ok, errors = helpers.bulk(es, actions(), chunk_size=batch, stats_only=True, raise_on_error=False)
    elapsed = time.perf_counter() - start
    assert errors == 0, errors
    return elapsed


def verify_vs_hash(store: Path, public: Path) -> dict[str, float | int]:
    """Seconds of: verify as ``tee-audit verify`` runs it (fast path, one worker per core), the fast path on one
    core, the full path alone (parse, RFC 8785, hash, reorder window: what every record took before the fast
    path), and raw hashlib SHA-256 over the same canonical bytes, all on the same store in the same run."""
    key = cp.load_public(public)
    chain_dir = store / "bench"
    times: dict[str, float | int] = {}
    for name, run_verify in (
            ("verify", lambda: verify_store(store, "bench", key, None, workers=default_workers())),
            ("verify_1core", lambda: verify_store(store, "bench", key, None, workers=1)),
            ("full", lambda: verify("bench", local_records(chain_dir), localstore.read_checkpoints(chain_dir), key))):
        start = time.perf_counter()
        report = run_verify()
        times[name] = time.perf_counter() - start
        assert report.intact, report.findings[:3]
        times["records"] = report.records
    canon = []
    for line in localstore.read_lines(chain_dir):
        parsed = loads(line)
        body = dict(parsed.value)
        body["chain"] = {k: v for k, v in body["chain"].items() if k != "hash"}
        canon.append(canonicalize(body, parsed.fast))
    start = time.perf_counter()
    for data in canon:
        hashlib.sha256(data).hexdigest()
    times["hash"] = time.perf_counter() - start
    return times


def canonical_copy(store: Path, out: Path) -> Path:
    """The store with every line rewritten as its RFC 8785 bytes plus the hash opening the chain object (same
    records, same hashes, same checkpoints): what ``canonical_link`` checks without parsing, were the shipper to
    write that form."""
    src, dst = store / "bench", out / "bench"
    (dst / "checkpoints").mkdir(parents=True)
    for note in (src / "checkpoints").glob("*.note"):
        (dst / "checkpoints" / note.name).write_bytes(note.read_bytes())
    shutil.copytree(src / "tile", dst / "tile")  # the Merkle tiles: the lines' bytes are the shipper's already
    for seg in localstore.segments(src):
        with open(seg, "rb") as fh, open(dst / seg.name, "wb") as sink:
            for line in fh:
                doc = json.loads(line)
                digest = doc["chain"].pop("hash")
                sink.write(canonicalize(doc).replace(b'"chain":{', b'"chain":{"hash":"%s",' % digest.encode(), 1)
                           + b"\n")
    return out


def verify_canonical(store: Path, public: Path) -> dict[str, float | int]:
    key = cp.load_public(public)
    times: dict[str, float | int] = {}
    for name, workers in (("canonical", default_workers()), ("canonical_1core", 1)):
        start = time.perf_counter()
        report = verify_store(store, "bench", key, None, workers=workers)
        times[name] = time.perf_counter() - start
        assert report.intact, report.findings[:3]
    return times


def print_verify(t: dict[str, float | int]) -> None:
    records = t["records"]
    print(f"verify (local store, {default_workers()} workers): {records / t['verify']:10.0f} records/s"
          f"  ({t['verify']:.2f} s)")
    print(f"verify fast path, 1 worker   : {records / t['verify_1core']:10.0f} records/s  ({t['verify_1core']:.2f} s)")
    print(f"verify full path (before)    : {records / t['full']:10.0f} records/s  ({t['full']:.2f} s)")
    print(f"raw hashlib SHA-256          : {records / t['hash']:10.0f} records/s  ({t['hash']:.2f} s)")
    print(f"  ratio verify / raw hash    : {t['hash'] / t['verify']:10.3f}   (target >= 0.5; 1 worker "
          f"{t['hash'] / t['verify_1core']:.3f}, full path {t['hash'] / t['full']:.3f})")
    if "canonical" in t:
        print(f"verify, lines in RFC 8785 form ({default_workers()} workers): {records / t['canonical']:10.0f} records/s"
              f"  (1 worker {records / t['canonical_1core']:.0f}/s); ratio {t['hash'] / t['canonical']:.3f}"
              f" (1 worker {t['hash'] / t['canonical_1core']:.3f})")


def verify_only(n: int) -> None:
    """Ship N events into a local store (no Elasticsearch), then the verify measurements alone."""
    with tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp_name:
        tmp = Path(tmp_name)
        cp.generate(tmp / "keys")
        write_journal(tmp / "journal.jsonl", n)
        store = tmp / "store"
        ship(["--signing-key", str(tmp / "keys/audit.key"), "--chain", "bench", "--source", str(tmp / "journal.jsonl"),
              "--store", str(store), "--spool.dir", str(tmp / "spool")])
        times = verify_vs_hash(store, tmp / "keys/audit.pub")
        times |= verify_canonical(canonical_copy(store, tmp / "canonical"), tmp / "keys/audit.pub")
        print(f"events: {n}  (verify only)")
        print_verify(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--es", help="an Elasticsearch to use instead of starting one")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5, help="ship / bare loader rounds, alternating")
    parser.add_argument("--verify-only", action="store_true", help="only ship into a local store and verify it")
    parser.add_argument("--ship-only", action="store_true", help="only ship vs the bare loader (no verify, RSS)")
    parser.add_argument("--with-store", action="store_true",
                        help="the ship side also writes a local store (records, Merkle tiles, notes) in the run")
    parser.add_argument("--witness", action="store_true",
                        help="the ship side gets every tree checkpoint cosigned by a real litewitness (started here)")
    opts = parser.parse_args()
    n = opts.events
    if opts.verify_only:
        (ROOT / ".cache").mkdir(exist_ok=True)
        verify_only(n)
        return
    port = os.environ.get("TEE_BENCH_ES_PORT") or str(free_ports((0, 100)))
    with elasticsearch(opts.es, port) as url, tempfile.TemporaryDirectory(dir=ROOT / ".cache") as tmp_name, \
            witnessing(opts.witness) as witness:
        run(Path(tmp_name), url, n, opts.batch, opts.rounds, opts.ship_only, opts.with_store, witness)


@contextlib.contextmanager
def witnessing(wanted: bool) -> Iterator[Litewitness | None]:
    """A running litewitness (tests/fixtures/litewitness.py) when ``wanted``."""
    if not wanted:
        yield None
        return
    with running(build()) as witness:
        yield witness


def _spread(values: list[float]) -> str:
    return f"median {statistics.median(values):8.0f}  (min {min(values):.0f}, max {max(values):.0f})"


def ship_vs_bare(tmp: Path, url: str, n: int, batch: int, rounds: int, store: Path,
                 common: list[str], with_store: bool = False, witness: Litewitness | None = None) -> None:
    """Alternate ``ship --once`` and the bare loader (each into a fresh data stream, the order swapped every
    round, so drift in the machine's load hits both alike), then one replay after a rollover (issue 15's slow
    path: every record is already stored, found by one search per batch and skipped)."""
    ns = f"bench{int(time.time())}"
    rates: dict[str, list[float]] = {"ship": [], "bare": []}
    last_ship, chain_args = "", []
    for r in range(rounds):
        sides = ["ship", "bare"] if r % 2 == 0 else ["bare", "ship"]
        for side in sides:
            if side == "ship":
                last_ship = f"{ns}s{r}"
                subprocess.run([*TEE_AUDIT, "setup", "--es", url, "--es.namespace", last_ship], check=True,
                               capture_output=True, timeout=120)  # untimed: the administrator's one-time step
                extra = ["--store", str(tmp / f"store-ship{r}")] if with_store else []
                if witness is not None:  # a chain per round: the witness remembers each origin's size
                    chain_args = ["--chain", f"benchw{r}", "--witness.urls", witness.url]
                    origin = f"tee-audit/benchw{r}"
                    witness.register(origin, cp.vkey(origin, cp.load_public(tmp / "keys/audit.pub")))
                seconds, _ = ship([*common, "--es", url, "--es.namespace", last_ship, "--es.batch-size", str(batch),
                                   "--spool.dir", str(tmp / f"spool-es{r}"), *extra, *chain_args])
                if witness is not None and witness.known(origin)[0] != n:
                    raise SystemExit(f"the witness cosigned {witness.known(origin)[0]} of {n} records")
            else:
                seconds = bare_loader(url, store / "bench", f"logs-tee.audit-{ns}b{r}", batch)
            rates[side].append(n / seconds)
        print(f"  round {r + 1}: ship {rates['ship'][-1]:8.0f} ev/s   bare {rates['bare'][-1]:8.0f} ev/s   "
              f"ratio {rates['ship'][-1] / rates['bare'][-1]:.2f}", flush=True)
    ratios = [s / b for s, b in zip(rates["ship"], rates["bare"], strict=True)]
    print(f"events: {n}  (Elasticsearch at {url}, batch {batch}, {rounds} rounds alternating)")
    target = "Elasticsearch + store" if with_store else "Elasticsearch"
    target += " + witness" if witness is not None else ""
    print(f"ship --once -> {target:<14}: {_spread(rates['ship'])} events/s")
    print(f"bare helpers.bulk loader     : {_spread(rates['bare'])} events/s")
    print(f"  ratio ship / bare          : {statistics.median(rates['ship']) / statistics.median(rates['bare']):.2f}"
          f" of the medians; per round {', '.join(f'{x:.2f}' for x in ratios)}   (target >= 0.8)")
    es = Elasticsearch(url, request_timeout=120)
    es.indices.rollover(alias=f"logs-tee.audit-{last_ship}")
    (tmp / f"spool-es{rounds - 1}" / "cursor-elasticsearch.json").unlink()
    seconds, _ = ship([*common, "--es", url, "--es.namespace", last_ship, "--es.batch-size", str(batch),
                       "--spool.dir", str(tmp / f"spool-es{rounds - 1}"), *chain_args])
    es.indices.refresh(index=f"logs-tee.audit-{last_ship}")
    stored = es.count(index=f"logs-tee.audit-{last_ship}", query={"exists": {"field": "chain.seq"}})["count"]
    assert stored == n, stored
    print(f"replay of all {n} after a rollover (cursor lost): {n / seconds:8.0f} events/s, nothing written twice")


def run(tmp: Path, url: str, n: int, batch: int, rounds: int = 1, ship_only: bool = False,
        with_store: bool = False, witness: Litewitness | None = None) -> None:
    cp.generate(tmp / "keys")
    key, public = tmp / "keys/audit.key", tmp / "keys/audit.pub"
    journal = tmp / "journal.jsonl"
    write_journal(journal, n)
    common = ["--signing-key", str(key), "--chain", "bench", "--source", str(journal)]
    store = tmp / "store"
    store_s, store_rss = ship([*common, "--store", str(store), "--spool.dir", str(tmp / "spool-store")])
    ship_vs_bare(tmp, url, n, batch, rounds, store, common, with_store, witness)
    print(f"ship --once -> local store   : {n / store_s:10.0f} events/s  ({store_s:.1f} s, peak RSS {store_rss:.0f} MB)")
    if ship_only:
        return
    quarter = tmp / "quarter.jsonl"
    with open(journal, "rb") as src, open(quarter, "wb") as dst:
        for i, line in enumerate(src):
            if i >= n // 4:
                break
            dst.write(line)
    _, q_rss = ship(["--signing-key", str(key), "--chain", "bench", "--source", str(quarter),
                     "--store", str(tmp / "store-q"), "--spool.dir", str(tmp / "spool-q")])
    verify_t = verify_vs_hash(store, public)
    print_verify(verify_t)
    print(f"peak RSS, {n // 4} vs {n} events backlog (local store): {q_rss:.0f} MB vs {store_rss:.0f} MB"
          f"  (ratio {store_rss / q_rss:.2f}; flat = 1.0)")


if __name__ == "__main__":
    main()
