"""``tee-audit verify``: pick the storage (local store or Elasticsearch), stream the chain, print the report."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import click

from audit import checkpoint as cp
from audit.sinks import localstore
from audit.verify import (
    ChunkSummary,
    Finding,
    Rec,
    Report,
    VerifyError,
    checked_seqs,
    flag_misplaced,
    parse_record,
    scan_chunk,
    trusted_checkpoint,
    verify,
    verify_in_order,
)

CHUNK_BYTES = 4 * 1024 * 1024  # ~7k records: small enough to balance the workers, large enough to amortise IPC


@dataclass(frozen=True)
class EsOptions:
    url: str | None
    data_stream: str | None = None
    ca_file: Path | None = None
    api_key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None


def local_records(chain_dir: Path) -> Iterator[Rec | Finding]:
    def parsed() -> Iterator[Rec]:
        for i, line in enumerate(localstore.read_lines(chain_dir)):
            item = parse_record(line, i)
            if isinstance(item, Finding):
                findings.append(item)
            else:
                yield item

    findings: list[Finding] = []
    yield from flag_misplaced(parsed())
    yield from findings


def _worker(conn: Connection, tasks: list[tuple[Path, int, int]], wanted: frozenset[int], chain_id: str) -> None:
    """Summaries of its share of the ranges, in order, through its own pipe; stops at the first not ok."""
    for task in tasks:
        summary = scan_chunk(localstore.read_range(*task), wanted, chain_id)
        conn.send(summary)
        if not summary.ok:
            break
    conn.close()


def local_chunks(chain_dir: Path, wanted: frozenset[int], workers: int,
                 chunk_bytes: int = CHUNK_BYTES) -> Iterator[ChunkSummary]:
    """Chunk summaries in file order. With ``workers`` > 1, worker k scans ranges k, k+W, k+2W... and the results are
    read back round-robin: no shared queue or lock, so stopping early is a plain kill. Forked (cheap to start) and
    only from a process without other threads, so no lock can be inherited held; otherwise in process."""
    ranges = list(localstore.line_ranges(chain_dir, chunk_bytes))
    workers = min(workers, len(ranges))
    if workers <= 1 or threading.active_count() > 1:
        for task in ranges:
            yield scan_chunk(localstore.read_range(*task), wanted, chain_dir.name)
        return
    ctx = multiprocessing.get_context("fork")
    procs, pipes = [], []
    try:
        for k in range(workers):
            receiver, sender = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(sender, ranges[k::workers], wanted, chain_dir.name), daemon=True)
            proc.start()
            sender.close()
            procs.append(proc)
            pipes.append(receiver)
        for i in range(len(ranges)):
            summary = pipes[i % workers].recv()
            yield summary
            if not summary.ok:
                return
    except EOFError:
        yield ChunkSummary(False)  # a worker died: let the full path verify instead
    finally:
        for proc in procs:
            proc.kill()
            proc.join()
        for receiver in pipes:
            receiver.close()


def default_workers() -> int:
    """One per usable core, at most 8 (each holds one chunk's lines: memory stays a few tens of MB)."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def verify_store(store: Path, chain: str | None, key: object, trusted: cp.Checkpoint | None,
                 progress: bool = False, workers: int = 1, chunk_bytes: int = CHUNK_BYTES) -> Report:
    """The fast path when the chain is stored intact and in order, else the full path (which alone judges
    records); ``workers`` > 1 spreads the fast path over processes."""
    present = localstore.chains(store)
    if chain is None:
        if len(present) != 1:
            raise VerifyError(f"{store}: holds chains {present}; pick one with --chain")
        chain = present[0]
    chain_dir = Path(store) / chain
    if not chain_dir.is_dir():
        raise VerifyError(f"{store}: no chain {chain!r}")
    texts = localstore.read_checkpoints(chain_dir)
    wanted = checked_seqs(texts, chain, key, trusted)
    with closing(local_chunks(chain_dir, wanted, workers, chunk_bytes)) as chunks:
        report = verify_in_order(chain, chunks, texts, key, trusted, progress)
    if report is not None:
        return report
    return verify(chain, local_records(chain_dir), texts, key, trusted, progress=progress)


def verify_es(conn: EsOptions, chain: str | None, key: object, trusted: cp.Checkpoint | None,
              progress: bool = False) -> Report:
    from audit.sinks import elasticsearch as es

    client = es.connect(conn.url or "", conn.ca_file, conn.api_key_file, conn.username, conn.password_file)
    stream = conn.data_stream or es.data_stream_name("default")
    try:
        try:
            es.refresh(client, stream)  # see writes of the last second too; an auditor may lack the privilege
        except es.EsError:
            pass
        chain = chain or es.only_chain(client, stream)
        return verify(chain, es.scan_records(client, stream, chain), es.scan_checkpoints(client, stream, chain),
                      key, trusted, progress=progress)
    except es.EsError as exc:
        raise VerifyError(str(exc)) from None
    finally:
        client.close()


def run(store: Path | None, conn: EsOptions, public_key: Path, chain: str | None, from_checkpoint: Path | None,
        as_json: bool) -> int:
    try:
        if (store is None) == (conn.url is None):
            raise VerifyError("give exactly one of --store or --es")
        key = cp.load_public(public_key)
        trusted = trusted_checkpoint(from_checkpoint.read_text(), key) if from_checkpoint else None
        if trusted is not None and chain is None:
            chain = trusted.chain_id
        progress = True  # every 250k records, on stderr (stdout stays clean for --json)
        if store is not None:
            report = verify_store(store, chain, key, trusted, progress, default_workers())
        else:
            report = verify_es(conn, chain, key, trusted, progress)
    except (VerifyError, cp.CheckpointError, OSError) as exc:
        click.echo(f"tee-audit verify: cannot verify: {exc}", err=True)
        return 2
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        _print_human(report)
    return 0 if report.intact else 1


def _print_human(report: Report) -> None:
    state = "INTACT" if report.intact else "NOT INTACT"
    click.echo(f"chain {report.chain}: {state}: {report.records} records, {report.checkpoints} signed checkpoints,"
               f" {report.unsealed_tail} records after the last checkpoint (not yet sealed)")
    for f in report.findings:
        click.echo(f"  {f.kind:<20} seq={f.seq if f.seq is not None else '-'}  {f.detail}")
    if report.truncated_findings:
        click.echo(f"  ... and {report.truncated_findings} more findings")
