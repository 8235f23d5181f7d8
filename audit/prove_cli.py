"""``tee-audit prove`` (a receipt for one record of a local store) and ``tee-audit verify-proof`` (check one offline).

A receipt is built from the store's tiles (audit/tiles.py): O(log n) tile reads and hashes, and the record is found
by binary search in its segment, so proving costs the same on a log of ten million records as on a small one.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from audit import checkpoint as cp
from audit import merkle
from audit.cosign import WitnessKey, WitnessKeyError
from audit.proof import ReceiptError, build, check
from audit.readers import localstore as store_reader
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


def _newest_tree_note(lay: store_reader.Layout) -> str:
    """The largest checkpoint that is a tree checkpoint (it carries the chain head line)."""
    best: tuple[int, str] | None = None
    for text in lay.notes:
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
    text = note_text if note_text is not None else _newest_tree_note(lay)
    try:
        note = cp.parse(text)
    except (cp.CheckpointError, UnicodeError) as exc:
        raise ProveError(f"the checkpoint cannot be read: {exc}") from None
    if note.origin != cp.origin_for(lay.chain):
        raise ProveError(f"the checkpoint is of {note.origin!r}, not of chain {lay.chain!r}")
    if not 0 <= seq < note.size:
        raise ProveError(f"the checkpoint of size {note.size} does not cover seq {seq}")
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


def run_prove(store: Path, chain: str | None, seq: int, note: Path | None, out: Path | None) -> int:
    try:
        receipt = prove_store(store, chain, seq, note.read_text() if note else None)
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
        witnesses = [WitnessKey.parse(Path(k).read_text() if Path(k).is_file() else k) for k in witness_keys]
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
