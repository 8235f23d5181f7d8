"""``tee-audit prove`` cost on a large log, and receipt size, measured in one run.

1. Tiles for ``--memory-leaves`` synthetic leaf hashes are written with the shipper's TileWriter, flushed every
   1000 (the local store sink flushes once per batch): the tile write cost per record. Then the tiles of
   ``--leaves`` (default 10 million) leaves, flushed every 50 000 (only their proofs are timed).
2. Inclusion proofs from those tiles for random indexes against the full tree size, each with a fresh TileReader
   (no warm tile cache; the OS page cache is warm, as it is for a host answering auditors), alternating with the
   peer: the same proof from an in-memory tree (``MemoryTree``, all levels in RAM, built in the same run only for
   the first ``--memory-leaves``).
3. Record lookup: ``find_record`` (binary search in the segment) vs a linear scan of the segment, on a store
   shipped by the real shipper (``--records``, default 200 000).
4. The size of a real receipt with the proof length of a ``--leaves`` tree, and with the record uncompressed.

    .venv/bin/python bench/prove_bench.py [--leaves 10000000] [--records 200000] [--proofs 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from audit import merkle
from audit.proof import build
from audit.readers import localstore as reader
from audit.sinks import localstore
from audit.tiles import TileReader, TileWriter
from bench.audit_bench import write_journal

TEE_AUDIT = [sys.executable, "-m", "audit"]


def leaf(i: int) -> bytes:
    return merkle.leaf_hash(b"record %d" % i)


def build_tiles(directory: Path, n: int, per_flush: int = 1000) -> float:
    """Seconds to write the tiles of ``n`` leaves, ``per_flush`` per flush (the sink flushes once per batch)."""
    writer = TileWriter(directory)
    start = time.perf_counter()
    for lo in range(0, n, per_flush):
        writer.append(hashlib.sha256(b"\x00record %d" % i).digest() for i in range(lo, min(n, lo + per_flush)))
        writer.flush()
    return time.perf_counter() - start


def time_proofs(directory: Path, n: int, indexes: list[int]) -> list[float]:
    """Seconds per proof (tiles, fresh reader each), each checked against the root."""
    root = merkle.root(TileReader(directory).subtree, n)
    out = []
    for index in indexes:
        start = time.perf_counter()
        proof = merkle.inclusion_proof(TileReader(directory).subtree, index, n)
        out.append(time.perf_counter() - start)
        merkle.verify_inclusion(leaf(index), index, n, proof, root)
    return out


def time_memory_proofs(tree: merkle.MemoryTree, indexes: list[int]) -> list[float]:
    out = []
    for index in indexes:
        start = time.perf_counter()
        merkle.inclusion_proof(tree.subtree, index, tree.size)
        out.append(time.perf_counter() - start)
    return out


def time_lookups(store: Path, seqs: list[int]) -> tuple[list[float], list[float]]:
    lay = reader.layout(store, "bench")
    binary, linear = [], []
    for seq in seqs:
        start = time.perf_counter()
        line = reader.find_record(lay, seq)
        binary.append(time.perf_counter() - start)
        start = time.perf_counter()
        scanned = next(line for at, line in reader.seq_lines(lay, seq) if at == seq)
        linear.append(time.perf_counter() - start)
        assert line == scanned
    return binary, linear


def ms(values: list[float]) -> str:
    q = statistics.quantiles(values, n=20)
    return f"median {statistics.median(values) * 1e3:7.3f} ms  (p5 {q[0] * 1e3:.3f}, p95 {q[-1] * 1e3:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leaves", type=int, default=10_000_000)
    parser.add_argument("--memory-leaves", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--proofs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rng = random.Random(7)
    with tempfile.TemporaryDirectory(prefix="prove-bench-") as tmp_name:
        tmp = Path(tmp_name)
        memory_tiles = tmp / "memory-tiles"
        seconds = build_tiles(memory_tiles, args.memory_leaves)
        print(f"tile writes, {args.memory_leaves} leaves, 1000 per flush (the sink's batch): {seconds:.1f} s "
              f"({seconds / args.memory_leaves * 1e6:.2f} us/record)")
        build_tiles(tmp / "tiles", args.leaves, 50_000)  # the big tree, built faster: only its proofs are timed
        memory = merkle.MemoryTree([leaf(i) for i in range(args.memory_leaves)])
        tiles_big, tiles_small, in_memory = [], [], []
        for _ in range(args.rounds):  # alternate the sides, round by round
            big = [rng.randrange(args.leaves) for _ in range(args.proofs)]
            small = [rng.randrange(args.memory_leaves) for _ in range(args.proofs)]
            tiles_big += time_proofs(tmp / "tiles", args.leaves, big)
            in_memory += time_memory_proofs(memory, small)
            tiles_small += time_proofs(memory_tiles, args.memory_leaves, small)
        print(f"proof from tiles, {args.leaves} leaves      : {ms(tiles_big)}")
        print(f"proof from tiles, {args.memory_leaves} leaves       : {ms(tiles_small)}")
        print(f"proof from RAM (peer), {args.memory_leaves} leaves  : {ms(in_memory)}")
        print(f"  ratio tiles / RAM at {args.memory_leaves}: {statistics.median(tiles_small) / statistics.median(in_memory):.1f}x")

        journal, store = tmp / "journal.jsonl", tmp / "store"
        write_journal(journal, args.records)
        subprocess.run([*TEE_AUDIT, "keygen", "--out", str(tmp / "keys")], check=True, capture_output=True)
        subprocess.run([*TEE_AUDIT, "ship", "--once", "--log.level", "error", "--source", str(journal), "--store",
                        str(store), "--signing-key", str(tmp / "keys/audit.key"), "--chain", "bench",
                        "--spool.dir", str(tmp / "spool")], check=True)
        seqs = [rng.randrange(args.records) for _ in range(min(200, args.proofs))]
        binary, linear = time_lookups(store, seqs)
        print(f"record lookup, binary search ({args.records} records): {ms(binary)}")
        print(f"record lookup, linear scan (peer)                 : {ms(linear)}")

        line = reader.find_record(reader.layout(store, "bench"), args.records // 2)  # a record with a real prev_hash
        assert line is not None
        note = localstore.read_checkpoints(store / "bench")[-1]
        cosig = "\u2014 witness.example/w1 " + "A" * 104 + "\n"  # a cosignature line: base64 of 4+8+64 bytes
        depth = (args.leaves - 1).bit_length()
        receipt = build(line, 0, [b"\x00" * 32] * depth, note + cosig)
        extra = receipt.split("\n")[1]
        whole = len(receipt) - len(extra) + len("extra ") + len(base64.b64encode(line))  # the record uncompressed
        print(f"receipt: record {len(line)} B, {depth} proof hashes, note {len(note)} B + 1 cosignature: "
              f"{len(receipt.encode())} B (record as its compressed hashed body: {len(extra) - 6} B of base64; "
              f"the whole record uncompressed would make it {whole} B)")
        per_proof = statistics.median(tiles_big) + statistics.median(binary)
        print(f"prove (proof + lookup) at {args.leaves} leaves: ~{per_proof * 1e3:.2f} ms per record (target < 10)")


if __name__ == "__main__":
    main()
