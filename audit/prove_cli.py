"""``tee-audit prove`` (a receipt for one record of a local store or of Elasticsearch) and ``tee-audit
verify-proof`` (check one offline).

A receipt is built from the tiles (audit/tiles.py files, audit/estiles.py documents): O(log n) tile reads and
hashes. In the store the record is found by binary search in its segment; in Elasticsearch by one search on its
seq, and the tiles are read one per request from the checkpoint stream, which has no retention: a record whose
backing index was deleted after its receipt was made stays proven, and one still stored is proven from the tiles
however old it is. So proving costs the same on a log of ten million records as on a small one.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from audit import checkpoint as cp
from audit import merkle
from audit.cosign import WitnessKey, WitnessKeyError, distinct
from audit.proof import ReceiptError, build, check
from audit.readers import localstore as store_reader
from audit.readers.elasticsearch import EsOptions
from audit.tiles import TileError, TileReader
from audit.verify import VerifyError


class ProveError(Exception):
    """No receipt can be made; the message says why."""


def cosignatures(chain_dir: Path, size: int) -> str:
    """The witnesses' cosignature lines stored for the checkpoint of ``size`` ('' when none)."""
    path = chain_dir / "checkpoints" / f"{size:020d}.cosig"
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _newest_tree_note(notes: list[str]) -> str:
    """The largest checkpoint that is a tree checkpoint (it carries the chain head line)."""
    best: tuple[int, str] | None = None
    for text in notes:
        try:
            note = cp.parse(text)
        except cp.CheckpointError:
            continue
        if note.head is not None and (best is None or note.size > best[0]):
            best = (note.size, text)
    if best is None:
        raise ProveError("the store holds no tree checkpoint (a chain begun before tee-audit v2 cannot be proven)")
    return best[1]


def prove_store(store: Path, chain: str | None, seq: int, note_text: str | None = None) -> str:
    """The receipt for record ``seq`` under ``note_text`` (default: the newest tree checkpoint of the store)."""
    try:
        lay = store_reader.layout(store, chain)
    except VerifyError as exc:
        raise ProveError(str(exc)) from None
    chain_dir = Path(store) / lay.chain
    text = note_text if note_text is not None else _newest_tree_note(lay.notes)
    note = _note_for(text, lay.chain, seq)
    line = store_reader.find_record(lay, seq)
    if line is None:
        raise ProveError(f"record {seq} is not in the store (deleted, or the store needs `tee-audit verify`)")
    tiles = TileReader(chain_dir)
    try:
        if tiles.size() < note.size:
            raise ProveError(f"the tiles cover {tiles.size()} records, the checkpoint {note.size}")
        proof = merkle.inclusion_proof(tiles.subtree, seq, note.size)
        merkle.verify_inclusion(merkle.leaf_hash(line), seq, note.size, proof, note.root)
    except (TileError, merkle.ProofError) as exc:
        raise ProveError(f"the store's record and tiles do not prove the checkpoint ({exc}); run `tee-audit "
                         "verify`") from None
    if note_text is None or note_text == (chain_dir / "checkpoints" / f"{note.size:020d}.note").read_text():
        text += cosignatures(chain_dir, note.size)
    return build(line, seq, proof, text)


def _note_for(text: str, chain: str, seq: int) -> cp.Checkpoint:
    """The checkpoint to prove against: of ``chain``, covering ``seq``."""
    try:
        note = cp.parse(text)
    except (cp.CheckpointError, UnicodeError) as exc:
        raise ProveError(f"the checkpoint cannot be read: {exc}") from None
    if note.origin != cp.origin_for(chain):
        raise ProveError(f"the checkpoint is of {note.origin!r}, not of chain {chain!r}")
    if not 0 <= seq < note.size:
        raise ProveError(f"the checkpoint of size {note.size} does not cover seq {seq}")
    return note


def prove_es(conn: EsOptions, chain: str | None, seq: int, note_text: str | None = None) -> str:
    """The receipt for record ``seq`` from Elasticsearch: the record by its seq, the proof from the tiles."""
    from audit.readers import elasticsearch as reader
    from audit.sinks import elasticsearch as es

    stream = conn.data_stream or es.data_stream_name("default")
    try:
        client = reader.connect(conn)
    except VerifyError as exc:
        raise ProveError(str(exc)) from None
    try:
        chain = chain or _only(reader.chains(client, stream), stream)
        notes = reader.checkpoints(client, stream, chain)
        text = note_text if note_text is not None else _newest_tree_note(notes)
        note = _note_for(text, chain, seq)
        tiles = reader.tiles(client, stream, chain)
        if tiles.size() < note.size:
            raise ProveError(f"the tiles cover {tiles.size()} records, the checkpoint {note.size}")
        proof = merkle.inclusion_proof(tiles.subtree, seq, note.size)
        line = _proven(reader.record_copies(client, stream, chain, seq), seq, proof, note)
        if note_text is None or note_text in notes:
            text += reader.cosignatures(client, stream, chain, note.size).get(note.size, "")
    except (es.EsError, VerifyError) as exc:
        raise ProveError(str(exc)) from None
    except (TileError, merkle.ProofError) as exc:
        raise ProveError(f"the tiles in Elasticsearch do not prove the checkpoint ({exc}); run `tee-audit verify "
                         "--es`") from None
    finally:
        client.close()
    return build(line, seq, proof, text)


def _only(names: list[str], stream: str) -> str:
    if len(names) != 1:
        raise ProveError(f"{stream} holds chains {names[:20]}; pick one with --chain")
    return names[0]


def _proven(copies: list[bytes], seq: int, proof: list[bytes], note: cp.Checkpoint) -> bytes:
    """The stored copy of record ``seq`` the proof leads from to the checkpoint's root (a copy someone added
    under the same seq does not)."""
    if not copies:
        raise ProveError(f"record {seq} is not in Elasticsearch (deleted by retention, or never shipped)")
    for line in copies:
        try:
            merkle.verify_inclusion(merkle.leaf_hash(line), seq, note.size, proof, note.root)
        except merkle.ProofError:
            continue
        return line
    raise ProveError(f"record {seq} and the tiles do not lead to the checkpoint's root (one of them was modified); "
                     "run `tee-audit verify --es`")


def run_prove(store: Path | None, conn: EsOptions, chain: str | None, seq: int, note: Path | None,
              out: Path | None) -> int:
    try:
        if (store is None) == (conn.url is None):
            raise ProveError("give exactly one of --store or --es")
        text = note.read_text() if note else None
        receipt = prove_store(store, chain, seq, text) if store is not None else prove_es(conn, chain, seq, text)
    except (ProveError, OSError, UnicodeDecodeError) as exc:
        click.echo(f"tee-audit prove: {exc}", err=True)
        return 2
    if out is None:
        click.echo(receipt, nl=False)
    else:
        out.write_text(receipt)
    return 0


def run_verify_proof(receipt: Path, public_key: Path, witness_keys: tuple[str, ...], quorum: int | None,
                     as_json: bool) -> int:
    """Exit 0: the receipt proves its record; 1: it does not (one reason); 2: the inputs cannot be read."""
    try:
        data = receipt.read_bytes()
        key = cp.load_public(public_key)
        witnesses = distinct([WitnessKey.parse(Path(k).read_text() if Path(k).is_file() else k)
                              for k in witness_keys])
    except (OSError, UnicodeDecodeError, cp.CheckpointError, WitnessKeyError) as exc:
        click.echo(f"tee-audit verify-proof: cannot verify: {exc}", err=True)
        return 2
    try:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ReceiptError(f"the receipt is not UTF-8 text (byte {exc.start})") from None
        result = check(text, key, witnesses, len(witnesses) if quorum is None else quorum)
    except ReceiptError as exc:
        click.echo(json.dumps({"valid": False, "reason": str(exc)}) if as_json else f"INVALID: {exc}")
        return 1
    if as_json:
        click.echo(json.dumps(result))
    else:
        click.echo(f"VALID: record {result['seq']} of chain {result['chain']} is in the log's tree of size "
                   f"{result['tree_size']}; cosigned by {', '.join(result['witnesses']) or 'no witness given'}")
    return 0
