"""Attacks by someone who can write to the store or to Elasticsearch but holds no signing key (issue 10): each one
made ``verify`` say INTACT, or crash, before. On both sinks where the attack applies."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path

import pytest

from audit import checkpoint as cp
from audit.canonical import canonicalize
from tests.audit import test_tamper
from tests.audit.kit import keys, kinds, ship_once, verify_json, write_journal
from tests.audit.tamper import EsTamper, LocalTamper, drop_checkpoint, forge, rehash_from
from tests.audit.test_tamper import CHAIN, RECORDS, Stored

stored = test_tamper.stored  # the two-sink fixture

COUNT = ("--checkpoint-every-records", "10")  # the shipper in these tests signs every 10 records


def _note(stored: Stored, size: int, tmp_path: Path) -> Path:
    path = tmp_path / f"trusted-{size}.note"
    path.write_text(stored.tamper.checkpoints()[size])
    return path


def _ago(seconds: float) -> str:
    return (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -- 2. rollback under a trusted checkpoint ----------------------------------------------------------------------

def test_rollback_below_a_trusted_checkpoint_is_missing(stored: Stored, tmp_path: Path) -> None:
    """The auditor trusts the note of size 50; the attacker removes the newer notes and cuts the chain back to
    40 records. Every later checkpoint is gone, so only the trusted note knows record 49 existed."""
    trusted = _note(stored, 50, tmp_path)
    for size in (40, 50, 55):
        drop_checkpoint(stored.tamper, size)
    stored.tamper.delete(*range(40, RECORDS))
    code, report = stored.verify("--from-checkpoint", str(trusted))
    assert (code, kinds(report)) == (1, [("missing", 49)])


def test_trusted_note_of_another_chain_is_an_error_not_a_switch(stored: Stored, tmp_path: Path) -> None:
    root = stored.tamper.doc(29)["chain"]["hash"]
    other = tmp_path / "other.note"
    other.write_text(cp.sign(cp.load_private(stored.key), "other-host", 30, root))
    code, report = stored.verify("--from-checkpoint", str(other), "--chain", CHAIN)
    assert (code, report) == (2, {})
    code, report = stored.verify("--from-checkpoint", str(other))  # vouches for other-host's records: none there
    assert (code, kinds(report)) == (1, [("missing", 29)])


def test_unsealed_tail_from_a_trusted_checkpoint_counts_from_its_size(stored: Stored, tmp_path: Path) -> None:
    trusted = _note(stored, 30, tmp_path)
    for size in (40, 50, 55):
        drop_checkpoint(stored.tamper, size)
    code, report = stored.verify("--from-checkpoint", str(trusted), "--checkpoint-every-records", "0")
    assert (code, report["records"], report["unsealed_tail"]) == (0, RECORDS - 29, RECORDS - 30)


# -- 3. the unsealed tail ----------------------------------------------------------------------------------------

def _append_forgery(stored: Stored, stamp: str) -> None:
    drop_checkpoint(stored.tamper, RECORDS)  # as if the shipper had not sealed 50..54 yet
    last = stored.tamper.doc(RECORDS - 1)
    event = dict(stored.tamper.doc(30), message="domain vm-evil started")
    event["@timestamp"] = stamp
    stored.tamper.append(forge(event, CHAIN, RECORDS, last["chain"]["hash"]))


def test_forged_record_older_than_the_promise_is_unsealed(stored: Stored) -> None:
    _append_forgery(stored, _ago(3600))
    code, report = stored.verify()
    assert (code, kinds(report)) == (1, [("unsealed", 50)])
    assert "50..55" in report["findings"][0]["detail"]


def test_fresh_unsealed_tail_within_the_promise_is_intact_and_counted(stored: Stored) -> None:
    """What verifying a live chain cannot do (docs/audit.md): records younger than the promise are reported as
    the unsealed tail only; a checkpoint within T seconds seals them, or the next verify flags them."""
    _append_forgery(stored, _ago(1))
    code, report = stored.verify()
    assert (code, report["findings"], report["unsealed_tail"]) == (0, [], 6)


def test_history_rewritten_past_deleted_checkpoints_breaks_the_count_promise(stored: Stored) -> None:
    for size in (30, 40, 50, 55):
        drop_checkpoint(stored.tamper, size)
    docs = [dict(d, chain=dict(d["chain"])) for d in stored.tamper.docs]
    docs[31]["message"] = "rewritten history"
    rehash_from(docs, 31)
    stored.tamper.rewrite(docs)
    code, report = stored.verify(*COUNT)
    assert (code, kinds(report)) == (1, [("unsealed", 20)])


# -- 4. nothing hidden, nothing pretended ------------------------------------------------------------------------

def test_unknown_chain_cannot_be_verified(stored: Stored) -> None:
    assert stored.verify("--chain", "no-such-chain") == (2, {})


def _split(store: Path, at: int) -> tuple[Path, Path]:
    """The chain's one segment cut into records 0..at-1 and at..end, as the writer would have rolled it."""
    chain_dir = store / CHAIN
    seg = chain_dir / f"records-{0:020d}.jsonl"
    lines = seg.read_bytes().splitlines(keepends=True)
    second = chain_dir / f"records-{at:020d}.jsonl"
    seg.write_bytes(b"".join(lines[:at]))
    second.write_bytes(b"".join(lines[at:]))
    return seg, second


@pytest.fixture
def local(tmp_path: Path) -> tuple[Path, Path]:
    key, public = keys(tmp_path / "keys")
    write_journal(tmp_path / "journal.jsonl", RECORDS)
    assert ship_once([tmp_path / "journal.jsonl"], key, tmp_path / "spool", store=tmp_path / "store") == 0
    return tmp_path / "store", public


def _verify_local(store: Path, public: Path, *extra: str) -> tuple[int, dict]:
    return verify_json("--store", str(store), "--public-key", str(public), *extra)


def test_empty_chain_directory_cannot_be_verified(local: tuple[Path, Path]) -> None:
    store, public = local
    (store / "h2").mkdir()
    assert _verify_local(store, public, "--chain", "h2") == (2, {})


def test_unterminated_line_at_the_end_of_a_non_last_segment_is_reported(local: tuple[Path, Path]) -> None:
    store, public = local
    first, _ = _split(store, 30)
    genuine = json.loads(first.read_bytes().splitlines()[17])
    forged = canonicalize(forge(dict(genuine, message="nothing to see"), CHAIN, 17, genuine["chain"]["prev_hash"]))
    with open(first, "ab") as fh:
        fh.write(forged)  # jq reads it; the writer never leaves a line without its newline
    code, report = _verify_local(store, public)
    assert (code, kinds(report)) == (1, [("stray", None)])
    assert "records-00000000000000000000.jsonl" in report["findings"][0]["detail"]


@pytest.mark.parametrize("name", ["records-17.jsonl", "notes.jsonl", "checkpoints/00000000000000000020.note.tmp"])
def test_stray_file_beside_the_segments_is_reported(local: tuple[Path, Path], name: str) -> None:
    store, public = local
    line = (store / CHAIN / f"records-{0:020d}.jsonl").read_bytes().splitlines()[17]
    (store / CHAIN / name).write_bytes(line + b"\n")
    code, report = _verify_local(store, public)
    assert (code, kinds(report)) == (1, [("stray", None)])
    assert Path(name).name in report["findings"][0]["detail"]


def test_whole_segment_swap_is_reported_once_per_segment(local: tuple[Path, Path]) -> None:
    store, public = local
    first, second = _split(store, 30)
    a, b = first.read_bytes(), second.read_bytes()
    first.write_bytes(b)
    second.write_bytes(a)
    code, report = _verify_local(store, public)
    assert (code, kinds(report)) == (1, [("reordered", 0), ("reordered", 30)])


def test_records_of_another_chain_are_not_this_chains(local: tuple[Path, Path], tmp_path: Path) -> None:
    """Chain ``h2`` (same signing key, as a fleet may have) copied over ``h1`` without its notes: every record
    hashes right and links up, but names another chain."""
    store, public = local
    write_journal(tmp_path / "j2.jsonl", 12, host="h2")
    assert ship_once([tmp_path / "j2.jsonl"], tmp_path / "keys/audit.key", tmp_path / "spool2", store=store,
                     chain="h2") == 0
    shutil.rmtree(store / CHAIN)
    (store / "h2").rename(store / CHAIN)
    shutil.rmtree(store / CHAIN / "checkpoints")
    (store / CHAIN / "checkpoints").mkdir()
    code, report = _verify_local(store, public)
    assert code == 1
    assert {(f["kind"], f["seq"]) for f in report["findings"]} >= {("inserted", s) for s in range(12)}
    assert "chain 'h2'" in report["findings"][0]["detail"]


# -- 8. no input crashes verify ----------------------------------------------------------------------------------

def test_deeply_nested_record_is_a_finding_not_a_crash(stored: Stored) -> None:
    genuine = canonicalize(stored.tamper.doc(17))
    stored.tamper.replace_raw(17, genuine[:-1] + b',"zz":' + b"[" * 980 + b"1" + b"]" * 980 + b"}")
    code, report = stored.verify()
    assert code == 1
    assert ("missing", 17) in kinds(report) or ("modified", 17) in kinds(report)


def test_record_with_an_integer_of_5000_digits_is_a_finding_not_a_crash(local: tuple[Path, Path]) -> None:
    """Python's int() refuses more than 4300 digits with a ValueError, which escaped the verifier as a traceback.
    (Local store only: Elasticsearch itself refuses to store a number of more than 1000 digits.)"""
    store, public = local
    (segment,) = (store / CHAIN).glob("records-*.jsonl")
    lines = segment.read_bytes().split(b"\n")
    lines[17] = lines[17][:-1] + b',"zz":' + b"9" * 5000 + b"}"
    segment.write_bytes(b"\n".join(lines))
    code, report = _verify_local(store, public)
    assert (code, kinds(report)) == (1, [("inserted", None), ("missing", 17)]), report  # unreadable: its seq unknown
    assert any("bad_number: an integer of 5000 digits" in f["detail"] for f in report["findings"]), report


@pytest.mark.parametrize("size", ["\u00b2", "6" * 5000], ids=["superscript two", "5000 digits"])
def test_checkpoint_size_int_refuses_is_a_finding_not_a_crash(stored: Stored, size: str) -> None:
    """str.isdigit takes "\u00b2" and 5000 digits, int() takes neither: the note must be unreadable, not fatal."""
    note = stored.tamper.checkpoints()[20].replace("\n20\n", f"\n{size}\n", 1)
    stored.tamper.put_checkpoint(20, note)
    code, report = stored.verify()
    assert (code, kinds(report)) == (1, [("bad-signature", None)])
    assert "is not a decimal number" in report["findings"][0]["detail"]


def test_checkpoint_that_is_not_utf8_is_a_finding(local: tuple[Path, Path]) -> None:
    store, public = local
    note = store / CHAIN / "checkpoints" / f"{20:020d}.note"
    note.write_bytes(note.read_bytes().replace(b"tee-audit/h1", b"tee-audit/\xff\xfe", 1))
    code, report = _verify_local(store, public)
    assert (code, kinds(report)) == (1, [("bad-signature", None)])


def test_checkpoint_with_a_lone_surrogate_is_a_finding(stored: Stored) -> None:
    if isinstance(stored.tamper, LocalTamper):
        (stored.tamper.dir / "checkpoints" / f"{20:020d}.note").write_bytes(b"tee-audit/h1\xed\xb0\x80\n20\n")
    else:
        stored.tamper.put_raw(f"{CHAIN}:checkpoint:20", b'{"@timestamp":"2026-01-01T00:00:00Z","chain":{"id":"h1"},'
                              b'"checkpoint":{"size":20,"note":"tee-audit/h1\\udc00\\n20\\n"}}')
    code, report = stored.verify()
    assert (code, kinds(report)) == (1, [("bad-signature", None)])


def test_trusted_checkpoint_file_that_is_not_utf8_cannot_be_used(stored: Stored, tmp_path: Path) -> None:
    bad = tmp_path / "bad.note"
    bad.write_bytes(b"\xff\xfe not a note")
    assert stored.verify("--from-checkpoint", str(bad)) == (2, {})


# -- the stored bytes are the contract ---------------------------------------------------------------------------

@pytest.mark.elasticsearch
def test_respelled_number_in_an_elasticsearch_document_is_modified(tmp_path: Path, elasticsearch: str,
                                                                   es_namespace: str) -> None:
    key, public = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    journal.write_text("".join(json.dumps({"@timestamp": _ago(1), "message": f"read {i}", "bytes": 12346 + i})
                               + "\n" for i in range(3)))
    assert ship_once([journal], key, tmp_path / "spool", es=elasticsearch, namespace=es_namespace) == 0
    stream = f"logs-tee.audit-{es_namespace}"
    tamper = EsTamper(elasticsearch, stream, CHAIN)
    genuine = canonicalize(tamper.doc(1))
    assert b'"bytes":12347' in genuine
    tamper.put_raw(f"{CHAIN}:1", genuine.replace(b'"bytes":12347', b'"bytes":1.2347e4'))
    code, report = verify_json("--es", elasticsearch, "--data-stream", stream, "--public-key", str(public))
    assert (code, kinds(report)) == (1, [("modified", 1)])
    assert "RFC 8785 form" in report["findings"][0]["detail"]


def test_duplicate_key_line_at_the_tail_gets_the_same_verdict_on_both_paths(local: tuple[Path, Path]) -> None:
    from audit.verify import verify
    from audit.verify_cli import local_records, verify_store

    store, public = local
    seg = store / CHAIN / f"records-{0:020d}.jsonl"
    lines = seg.read_bytes().splitlines()
    lines[-1] = lines[-1].replace(b'{"@timestamp"', b'{"message":"nothing to see here","@timestamp"', 1)
    seg.write_bytes(b"".join(line + b"\n" for line in lines))
    key = cp.load_public(public)
    texts = [p.read_text() for p in sorted((store / CHAIN / "checkpoints").glob("*.note"))]
    full = verify(CHAIN, local_records(store / CHAIN), texts, key)
    assert ("inserted", None) in [(f.kind, f.seq) for f in full.findings]
    assert verify_store(store, CHAIN, key, None).as_dict() == full.as_dict()
