"""``tee-audit verify``: pick the storage (local store or Elasticsearch), stream the chain, print the report.

Everything the verifier API raises is a ``VerifyError`` (exit 2 at the command line): no input, however crafted,
produces a traceback. Each chain's report is complete before it is printed.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from audit import checkpoint as cp
from audit.canonical import canonicalize
from audit.cosign import Policy, WitnessKeyError, load_policy
from audit.prove_cli import cosignatures
from audit.readers import localstore as store_reader
from audit.readers.elasticsearch import EsOptions
from audit.readers.localstore import CHUNK_BYTES, default_workers
from audit.tiles import TileReader
from audit.treeverify import TreeNote, TreeWalk, tree_notes
from audit.verify import (
    Finding,
    Promise,
    Rec,
    Report,
    VerifyError,
    judge_tail,
    sealed_size,
    trusted_checkpoint,
    verify,
    verify_chunked,
    verify_in_order,
)

__all__ = ["EsOptions", "default_workers", "local_records", "run", "verify_es", "verify_store"]


def local_records(chain_dir: Path) -> Iterator[Rec | Finding]:
    """The full path's input for one chain directory (records, then findings about the directory)."""
    return store_reader.records(store_reader.layout(chain_dir.parent, chain_dir.name))


def verify_store(store: Path, chain: str | None, key: Ed25519PublicKey, trusted: cp.Checkpoint | None,
                 progress: bool = False, workers: int = 1, chunk_bytes: int = CHUNK_BYTES,
                 promise: Promise | None = None, now: float | None = None,
                 known: Sequence[Known] = (), policy: Policy | None = None) -> Report:
    """Chunk summaries computed by ``workers`` processes, the full path only around chunks that are not intact
    (``verify_chunked``); from a trusted checkpoint, the fast path when the chain is stored intact and in order,
    else the full path. Anything in the directory that is not a record: the full path. ``promise``: judge the
    uncovered tail. The tree checkpoints are checked from the leaf hashes the workers computed along the way
    (``tree_walk``, ``feed_tree``)."""
    try:
        lay = store_reader.layout(store, chain or (trusted.chain_id if trusted else None), trusted is None)
        report, walk = None, None
        if not lay.findings:
            wanted, sizes = scan_targets(lay, known, trusted)
            with closing(store_reader.chunks(lay, wanted, workers, chunk_bytes, sizes)) as chunks:
                walk = tree_walk(store, lay, key, trusted, known)  # checks signatures while the workers start
                fed = feed_tree(walk, lay, chunks) if walk else chunks
                if trusted is None:
                    report = verify_chunked(lay.chain, fed, lay.notes, key)
                else:
                    report = verify_in_order(lay.chain, (summary for summary, _ in fed), lay.notes, key,
                                             trusted, progress)
                if walk is not None:
                    for _ in fed:
                        pass  # the fast path stopped at a chunk it cannot judge: the walk still needs the rest
        else:
            walk = tree_walk(store, lay, key, trusted, known)
            if walk is not None:
                for seq, line in store_reader.seq_lines(lay, walk.begin):
                    walk.add(seq, line)
        if report is not None and report.unsealed_tail and not store_reader.unsealed_lines_are_records(
                lay, report.last_seq - report.unsealed_tail + 1):
            report = None  # a forged line in the unsealed tail took the shortcut: the full path parses it
        if report is None:
            sealed = max(sealed_size(lay.chain, lay.notes, key), trusted.size if trusted else 0)
            report = verify(lay.chain, store_reader.records(lay, sealed), lay.notes, key, trusted,
                            progress=progress)
        if policy is not None:
            apply_policy(report, policy, Path(store) / lay.chain, lay.notes, key)
        first = report.last_seq - report.unsealed_tail + 1
        judge_tail(report, promise, time.time() if now is None else now, store_reader.tail(lay, first))
        if walk is not None:
            add_findings(report, walk.finish())
    except OSError as exc:
        raise VerifyError(f"{store}: cannot read: {exc}") from None
    return report


def scan_targets(lay: store_reader.Layout, known: Sequence[Known], trusted: cp.Checkpoint | None
                 ) -> tuple[frozenset[int], tuple[int, ...] | None]:
    """What the workers compute, from the notes as parsed, before any signature is checked (the walks check them
    while the workers run): the seqs at which a checkpoint may compare a record's hash (a superset of
    ``verify.checked_seqs``: a hash recorded at another seq is never read), and the sizes of the notes that look like
    tree checkpoints (a head line), for the leaf hashes; None when there are none. The walks take only the verified
    notes, and the tree walk computes itself what the workers did not."""
    wanted = {trusted.size - 1 if trusted else 0}
    sizes = set()
    for text in [*lay.notes, *(item.text for item in known), *([trusted.text] if trusted else [])]:
        try:
            note = cp.parse(text)
        except (cp.CheckpointError, UnicodeError):
            continue
        if note.size > 0:
            wanted.add(note.size - 1)
        if note.head is not None:
            sizes.add(note.size)
    return frozenset(wanted), (tuple(sorted(sizes)) if sizes else None)


def tree_walk(store: Path, lay: store_reader.Layout, key: Ed25519PublicKey, trusted: cp.Checkpoint | None,
              known: Sequence[Known]) -> TreeWalk | None:
    """The walk that checks the tree checkpoints against the stored records and tiles (audit/treeverify.py), or
    None when there are none."""
    notes = outside_notes(known, lay.chain, key, trusted) + tree_notes(lay.notes, lay.chain, key, "store")
    if not notes:
        return None
    return TreeWalk(trusted.size - 1 if trusted else 0, notes, TileReader(Path(store) / lay.chain))


def feed_tree(walk: TreeWalk, lay: store_reader.Layout, chunks: Iterable[store_reader.Chunk]
              ) -> Iterator[store_reader.Chunk]:
    """The chunks, passed on after the walk has taken each: by the leaf hashes its worker computed when it is
    intact, else by its lines read again, exactly as ``seq_lines`` gives them (the same segments, the same
    lines), so that the findings do not depend on which."""
    chain_json = canonicalize(lay.chain)
    paths = {seg.path for seg in store_reader.tree_segments(lay, walk.begin)}
    for summary, reread in chunks:
        if reread.path in paths:
            if summary.ok and summary.leaves:
                walk.add_run(summary.first_seq, summary.leaves, summary.groups, summary.pieces)
            else:
                for seq, line in store_reader.seqs_of(reread(), chain_json, walk.begin):
                    walk.add(seq, line)
        yield summary, reread


def apply_policy(report: Report, policy: Policy, chain_dir: Path, notes: list[str], key: Ed25519PublicKey) -> None:
    """A checkpoint without the policy's quorum of witness cosignatures does not seal: the records past the
    newest one with it count as the unsealed tail (judged by the checkpoint promise like any other)."""
    witnessed = 0
    for text in notes:
        try:
            note = cp.parse(text)
            cosigned = cp.parse(text + cosignatures(chain_dir, note.size))
        except (cp.CheckpointError, UnicodeError):
            continue  # the chain walk reports it
        if cp.is_tree(note, key) and note.size > witnessed and policy.met(cosigned)[0]:
            witnessed = note.size
    report.witnessed_size = witnessed
    report.unsealed_tail = max(report.unsealed_tail, report.last_seq + 1 - witnessed)


def load_policy_for(path: Path, key: Ed25519PublicKey) -> Policy:
    """The policy file; its ``log`` key, when it names one, must be the ``--public-key``."""
    try:
        policy = load_policy(path)
        if policy.log and cp.load_public_text(policy.log) != cp.raw_public(key):
            raise VerifyError(f"{path}: its log key is not the --public-key")
    except (WitnessKeyError, cp.CheckpointError) as exc:
        raise VerifyError(str(exc)) from None
    return policy


@dataclass(frozen=True)
class Known:
    """A checkpoint the auditor knows from outside the log (``--known-checkpoint``)."""

    source: str
    text: str


def outside_notes(known: Sequence[Known], chain: str, key: Ed25519PublicKey,
                  trusted: cp.Checkpoint | None) -> list[TreeNote]:
    """The known checkpoints of ``chain`` and the trusted one, as tree notes. A known checkpoint that is not a tree
    checkpoint of this chain signed by ``key`` cannot be judged: ``VerifyError``."""
    notes = tree_notes([trusted.text], chain, key, "the trusted checkpoint", walked=True) if trusted else []
    for item in known:
        found = tree_notes([item.text], chain, key, item.source)
        if not found:
            raise VerifyError(f"{item.source}: not a tree checkpoint of chain {chain!r} signed by the public key")
        notes += found
    return notes


def add_findings(report: Report, findings: list[Finding]) -> None:
    """The tree walk's findings, less those the chain walk's findings already explain: a tree root disagreeing
    with records found damaged at or before it (a modified record changes every later root), and the tiles
    disagreeing with records found damaged anywhere (the tiles kept the leaves of the records as shipped, which
    is why they differ). A report is not intact either way; the finding at the record says where."""
    damaged = min((f.seq for f in report.findings if f.seq is not None), default=None)

    def explained(f: Finding) -> bool:
        if damaged is None or f.seq is None:
            return False
        return f.kind == "bad-tiles" or (f.kind == "checkpoint-mismatch" and f.seq >= damaged)

    report.findings.extend(f for f in findings if not explained(f))
    report.findings.sort(key=lambda f: (f.seq is None, f.seq or 0, f.kind))  # verify.py's order


def verify_es(conn: EsOptions, chain: str | None, key: Ed25519PublicKey, trusted: cp.Checkpoint | None,
              progress: bool = False, promise: Promise | None = None, now: float | None = None,
              known: Sequence[Known] = (), policy: Policy | None = None) -> Report:
    from audit.readers import elasticsearch as reader
    from audit.sinks import elasticsearch as es

    client = reader.connect(conn)
    stream = conn.data_stream or es.data_stream_name("default")
    try:
        _refresh_quietly(client, stream)
        chain = chain or (trusted.chain_id if trusted else None) or _only_chain(reader.chains(client, stream), stream)
        return _verify_es_chain(client, stream, chain, key, trusted, progress, promise, now, known, policy)
    except es.EsError as exc:
        raise VerifyError(str(exc)) from None
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise VerifyError(f"{stream}: unexpected answer from Elasticsearch ({type(exc).__name__}: {exc})") from None
    finally:
        client.close()


def _refresh_quietly(client: Any, stream: str) -> None:
    """Refresh the records and checkpoint streams, to see writes of the last second too; an auditor may lack the
    privilege, and then reads what is already searchable."""
    from audit.sinks import elasticsearch as es

    try:
        es.refresh(client, f"{stream},{es.checkpoint_stream_name(stream)}")
    except es.EsError:
        pass


def _only_chain(names: list[str], stream: str) -> str:
    if len(names) != 1:
        raise VerifyError(f"{stream} holds chains {names[:20]}; pick one with --chain or give --all-chains")
    return names[0]


def _verify_es_chain(client: Any, stream: str, chain: str, key: Ed25519PublicKey, trusted: cp.Checkpoint | None,
                     progress: bool, promise: Promise | None, now: float | None,
                     known: Sequence[Known] = (), policy: Policy | None = None) -> Report:
    from audit.readers import elasticsearch as reader

    notes = reader.checkpoints(client, stream, chain)
    floor, _ = reader.retention_floor(client, stream, chain)
    # the tree from the first record still stored: its frontier there, and what retention deleted, from the tiles
    trees = tree_notes(notes, chain, key, "store") + outside_notes(known, chain, key, None)
    walk = TreeWalk(floor, trees, reader.tiles(client, stream, chain, ahead=256)) if trees else None
    sealed = max(sealed_size(chain, notes, key), trusted.size if trusted else 0)
    stored = reader.records(client, stream, chain, tap=walk.add if walk else None, sealed=sealed)
    report = verify(chain, stored, notes, key, trusted, progress=progress, window=0, floor=floor)
    if report.records == 0 and not notes and trusted is None:
        raise VerifyError(f"{stream}: no records and no checkpoints of chain {chain!r}")
    report.failure_store = reader.failures(client, stream, chain)
    if policy is not None:
        cosigs = reader.cosignatures(client, stream, chain)
        seal_by_witnesses(report, policy, notes, key, lambda size: cosigs.get(size, ""))
    first = report.last_seq - report.unsealed_tail + 1
    judge_tail(report, promise, time.time() if now is None else now, reader.tail(client, stream, chain, first))
    if walk is not None:  # after the tail is judged, as for the store: findings there explain the tiles' ones
        add_findings(report, walk.finish())
    return report


def seal_by_witnesses(report: Report, policy: Policy, notes: list[str], key: Ed25519PublicKey,
                      cosigs: Callable[[int], str]) -> None:
    """``apply_policy`` for cosignatures kept in Elasticsearch (``cosigs``: size -> lines)."""
    witnessed = 0
    for text in notes:
        try:
            note = cp.parse(text)
            sealed = cp.is_tree(note, key) and note.size > witnessed and policy.met(cp.parse(text + cosigs(note.size)))[0]
        except (cp.CheckpointError, UnicodeError):
            continue  # the chain walk reports it
        if sealed:
            witnessed = note.size
    report.witnessed_size = witnessed
    report.unsealed_tail = max(report.unsealed_tail, report.last_seq + 1 - witnessed)


@dataclass(frozen=True)
class ChainResult:
    chain: str
    report: Report | None
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        if self.report is None:
            return {"chain": self.chain, "intact": None, "error": self.error}
        return self.report.as_dict()

    @property
    def code(self) -> int:
        return 2 if self.report is None else (0 if self.report.intact else 1)


def _one_chain(args: tuple[EsOptions, str, str, bytes, Promise | None, float]) -> ChainResult:
    """One chain of ``--all-chains``, in a worker process with its own connection (keys travel as raw bytes)."""
    from audit.readers import elasticsearch as reader

    conn, stream, chain, raw_key, promise, now = args
    key = Ed25519PublicKey.from_public_bytes(raw_key)
    try:
        client = reader.connect(conn)
        try:
            return ChainResult(chain, _verify_es_chain(client, stream, chain, key, None, False, promise, now))
        finally:
            client.close()
    except VerifyError as exc:
        return ChainResult(chain, None, str(exc))
    except Exception as exc:  # noqa: BLE001 - EsError; one chain's failure must not hide the others' results
        return ChainResult(chain, None, f"{type(exc).__name__}: {exc}")


def verify_all_es(conn: EsOptions, key: Ed25519PublicKey, promise: Promise | None, workers: int,
                  now: float | None = None) -> list[ChainResult]:
    """Every chain in the data stream, ``workers`` at a time (processes: verifying is CPU-bound Python)."""
    from audit.readers import elasticsearch as reader
    from audit.sinks import elasticsearch as es

    stream = conn.data_stream or es.data_stream_name("default")
    client = reader.connect(conn)
    try:
        _refresh_quietly(client, stream)
        names = reader.chains(client, stream)
    except es.EsError as exc:
        raise VerifyError(str(exc)) from None
    except (KeyError, TypeError, IndexError, AttributeError) as exc:
        raise VerifyError(f"{stream}: unexpected answer from Elasticsearch ({type(exc).__name__}: {exc})") from None
    finally:
        client.close()
    if not names:
        raise VerifyError(f"{stream}: holds no chains")
    stamp = time.time() if now is None else now
    raw_key = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jobs = [(conn, stream, name, raw_key, promise, stamp) for name in names]
    if workers <= 1:
        return [_one_chain(job) for job in jobs]
    try:
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) as pool:
            return list(pool.map(_one_chain, jobs))
    except (BrokenProcessPool, OSError) as exc:
        raise VerifyError(f"the verifying processes failed: {exc}") from None


def run(store: Path | None, conn: EsOptions, public_key: Path, chain: str | None, from_checkpoint: Path | None,
        as_json: bool, promise: Promise | None = None, all_chains: bool = False,
        known_paths: Sequence[Path] = (), policy_path: Path | None = None) -> int:
    try:
        if (store is None) == (conn.url is None):
            raise VerifyError("give exactly one of --store or --es")
        if policy_path is not None and all_chains:
            raise VerifyError("--policy goes with one chain, not --all-chains")
        key = cp.load_public(public_key)
        known = [Known(f"known checkpoint {path}", _read_note(path)) for path in known_paths]
        policy = load_policy_for(policy_path, key) if policy_path else None
        trusted = trusted_checkpoint(_read_note(from_checkpoint), key) if from_checkpoint else None
        if trusted is not None and chain is not None and trusted.chain_id != chain:
            raise VerifyError(f"the trusted checkpoint is of chain {trusted.chain_id!r}, not {chain!r}")
        if all_chains:
            if store is not None or chain or trusted or known:
                raise VerifyError("--all-chains goes with --es, without --chain, --from-checkpoint or "
                                  "--known-checkpoint")
            return _print_all(verify_all_es(conn, key, promise, default_workers()), as_json)
        progress = True  # every 250k records, on stderr (stdout stays clean for --json)
        if store is not None:
            report = verify_store(store, chain, key, trusted, progress, default_workers(), promise=promise,
                                  known=known, policy=policy)
        else:
            report = verify_es(conn, chain, key, trusted, progress, promise, known=known, policy=policy)
    except (VerifyError, cp.CheckpointError) as exc:
        click.echo(f"tee-audit verify: cannot verify: {exc}", err=True)
        return 2
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        _print_human(report)
    return 0 if report.intact else 1


def _read_note(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise VerifyError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise VerifyError(f"{path}: not UTF-8 at byte {exc.start}") from None


def _print_all(results: list[ChainResult], as_json: bool) -> int:
    code = max(r.code for r in results)
    totals = {"chains": len(results), "intact": sum(r.code == 0 for r in results),
              "not_intact": sum(r.code == 1 for r in results), "errors": sum(r.code == 2 for r in results),
              "records": sum(r.report.records for r in results if r.report)}
    if as_json:
        click.echo(json.dumps({"totals": totals, "chains": [r.as_dict() for r in results]}))
        return code
    for r in results:
        if r.report is None:
            click.echo(f"chain {r.chain}: CANNOT VERIFY: {r.error}")
        else:
            _print_human(r.report)
    click.echo(f"{totals['chains']} chains: {totals['intact']} intact, {totals['not_intact']} not intact, "
               f"{totals['errors']} could not be verified; {totals['records']} records")
    return code


def _print_human(report: Report) -> None:
    state = "INTACT" if report.intact else "NOT INTACT"
    click.echo(f"chain {report.chain}: {state}: {report.records} records, {report.checkpoints} signed checkpoints,"
               f" {report.unsealed_tail} records after the last checkpoint (not yet sealed)")
    if report.expired:
        click.echo(f"  records 0..{report.expired - 1} expired (deleted by retention; checkpoints remain)")
    for entry in report.failure_store:
        click.echo(f"  in the failure store: seq={entry['seq']} {entry['error']}")
    for f in report.findings:
        click.echo(f"  {f.kind:<20} seq={f.seq if f.seq is not None else '-'}  {f.detail}")
    if report.truncated_findings:
        click.echo(f"  ... and {report.truncated_findings} more findings")
