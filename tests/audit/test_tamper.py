"""The tamper suite, on both sinks: every manipulation is reported with its exact kind and seq."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from audit import checkpoint as cp
from audit.sinks.elasticsearch import data_stream_name
from tests.audit.kit import keys, kinds, ship_once, verify_json, write_journal
from tests.audit.tamper import EsTamper, LocalTamper, drop_checkpoint, forge, rehash_from

CHAIN = "h1"
RECORDS = 55  # checkpoints every 10 records, plus the final one --once signs: sizes 10, 20, 30, 40, 50, 55


class Stored:
    """A freshly shipped chain in one sink, the tamper handle on it, and how to verify it."""

    def __init__(self, tamper: LocalTamper | EsTamper, args: list[str], public: Path, key: Path) -> None:
        self.tamper, self.args, self.public, self.key = tamper, args, public, key

    def verify(self, *extra: str) -> tuple[int, dict[str, Any]]:
        if isinstance(self.tamper, EsTamper):
            self.tamper.es.indices.refresh(index=self.tamper.stream)
        return verify_json(*self.args, "--public-key", str(self.public), *extra)


@pytest.fixture(params=["localstore", pytest.param("elasticsearch", marks=pytest.mark.elasticsearch)])
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> Stored:
    key, public = keys(tmp_path / "keys")
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, RECORDS)
    if request.param == "localstore":
        store = tmp_path / "store"
        assert ship_once([journal], key, tmp_path / "spool", store=store) == 0
        return Stored(LocalTamper(store, CHAIN), ["--store", str(store)], public, key)
    url: str = request.getfixturevalue("elasticsearch")
    namespace: str = request.getfixturevalue("es_namespace")
    assert ship_once([journal], key, tmp_path / "spool", es=url, namespace=namespace) == 0
    stream = data_stream_name(namespace)
    return Stored(EsTamper(url, stream, CHAIN), ["--es", url, "--data-stream", stream], public, key)


def test_untouched_chain_verifies_intact_with_exit_0(stored: Stored) -> None:
    code, report = stored.verify()
    assert (code, report["intact"], report["findings"]) == (0, True, [])
    assert (report["records"], report["checkpoints"], report["unsealed_tail"]) == (RECORDS, 6, 0)


def _modify(t: LocalTamper | EsTamper) -> None:
    doc = t.doc(17)
    doc["message"] = "nothing to see here"
    t.replace(17, doc)


def _insert(t: LocalTamper | EsTamper) -> None:
    t.insert_after(17, forge(t.doc(30), CHAIN, 18, t.doc(17)["chain"]["hash"]))


def _rewrite(t: LocalTamper | EsTamper) -> None:
    docs = [dict(d, chain=dict(d["chain"])) for d in t.docs]
    docs[12]["message"] = "rewritten history"
    rehash_from(docs, 12)
    t.rewrite(docs)


CASES: dict[str, tuple[Callable[[Any], None], list[tuple[str, int]]]] = {
    "modified field": (_modify, [("modified", 17)]),
    "deleted record": (lambda t: t.delete(17), [("missing", 17)]),
    "inserted forgery": (_insert, [("inserted", 18)]),
    "swapped pair": (lambda t: t.swap(17, 18), [("reordered", 17), ("reordered", 18)]),
    "duplicated record": (lambda t: t.duplicate(17), [("duplicate", 17)]),
    "tail truncated before last checkpoint": (lambda t: t.delete(*range(45, RECORDS)),
                                              [("missing", s) for s in range(45, RECORDS)]),
    "history rewritten and rehashed": (_rewrite, [("checkpoint-mismatch", s) for s in (19, 29, 39, 49, 54)]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_tampering_is_found_with_exact_kind_and_seq(stored: Stored, case: str) -> None:
    tamper, expected = CASES[case]
    tamper(stored.tamper)
    code, report = stored.verify()
    assert code == 1 and report["intact"] is False
    assert kinds(report) == sorted(expected)


def test_tail_truncated_after_last_checkpoint_only_shortens_the_unsealed_tail(stored: Stored) -> None:
    drop_checkpoint(stored.tamper, RECORDS)  # as if the shipper had not sealed 50..54 yet
    stored.tamper.delete(52, 53, 54)
    code, report = stored.verify()
    assert (code, report["findings"], report["unsealed_tail"], report["records"]) == (0, [], 2, 52)


def test_checkpoint_signed_by_another_key_is_a_bad_signature(stored: Stored, tmp_path: Path) -> None:
    other, _ = keys(tmp_path / "other-keys")
    root = stored.tamper.doc(29)["chain"]["hash"]
    stored.tamper.put_checkpoint(30, cp.sign(cp.load_private(other), CHAIN, 30, root))
    code, report = stored.verify()
    assert (code, kinds(report)) == (1, [("bad-signature", 29)])


def test_checkpoint_replayed_from_another_chain_is_a_mismatch(stored: Stored) -> None:
    root = stored.tamper.doc(19)["chain"]["hash"]
    foreign = cp.sign(cp.load_private(stored.key), "other-host", 20, root)
    stored.tamper.put_checkpoint(20, foreign, replace=False)
    code, report = stored.verify()
    assert (code, kinds(report)) == (1, [("checkpoint-mismatch", 19)])


def test_verification_from_trusted_checkpoint_survives_retention(stored: Stored, tmp_path: Path) -> None:
    trusted = tmp_path / "trusted.note"
    trusted.write_text(stored.tamper.checkpoints()[30])
    stored.tamper.delete(*range(29))
    for size in (10, 20):
        drop_checkpoint(stored.tamper, size)
    code, report = stored.verify("--from-checkpoint", str(trusted))
    assert (code, report["findings"], report["records"]) == (0, [], RECORDS - 29)
    code, report = stored.verify()
    assert code == 1 and kinds(report)[0] == ("missing", 0)
