"""Witnessing against a real litewitness, and the attacks of a host that holds the signing key.

The host can rewrite its records, rebuild the tiles and re-sign every checkpoint with the real key: every signature
then verifies. What it cannot do is get a witness to cosign the rewritten or rolled-back tree, nor make it extend a
checkpoint an auditor kept; both are shown here, with the witness refusing and ``verify`` reporting.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from audit import checkpoint as cp
from audit import merkle
from audit.canonical import loads
from audit.sinks import localstore
from audit.tiles import TileReader, TileWriter
from audit.witness import WitnessError, Witnessing, add_checkpoint
from tests.audit.kit import keys, ship_once, verify_json, write_journal
from tests.audit.tamper import resealed
from tests.fixtures.litewitness import Litewitness

CHAIN = "h1"
ORIGIN = f"tee-audit/{CHAIN}"


class Host:
    """A shipper with a local store, witnessed by ``witness``; the tests then play the host gone bad."""

    def __init__(self, tmp: Path, witness: Litewitness) -> None:
        self.tmp, self.witness = tmp, witness
        self.key_file, self.public_file = keys(tmp / "keys")
        self.key = cp.load_private(self.key_file)
        witness.register(ORIGIN, cp.vkey(ORIGIN, cp.load_public(self.public_file)))
        self.journal = tmp / "journal.jsonl"
        self.store = tmp / "store"
        self.dir = self.store / CHAIN
        self.shipped = 0
        self.policy = tmp / "policy"
        self.policy.write_text(f"log {cp.vkey(ORIGIN, cp.load_public(self.public_file))}\n"
                               f"witness {witness.name} {witness.vkey}\nquorum 1\n")

    def ship(self, count: int) -> None:
        write_journal(self.journal, count, start=self.shipped)
        self.shipped += count
        assert ship_once([self.journal], self.key_file, self.tmp / "spool", store=self.store, every=100,
                         witness_urls=self.witness.url) == 0

    def note(self, size: int) -> str:
        return (self.dir / "checkpoints" / f"{size:020d}.note").read_text()

    def cosigned_note(self, size: int) -> str:
        return self.note(size) + (self.dir / "checkpoints" / f"{size:020d}.cosig").read_text()

    def verify(self, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
        return verify_json("--store", str(self.store), "--public-key", str(self.public_file),
                           "--checkpoint-every-records", "100", *extra)

    def rewrite_history(self, from_seq: int, until: int | None = None) -> None:
        """The host with the key: record ``from_seq`` edited, the chain re-sealed from there (and cut at ``until``),
        the tiles rebuilt, every checkpoint re-signed with the real key. Cosignature files are left as they were."""
        out = resealed(list(localstore.read_lines(self.dir))[:until], CHAIN, from_seq)
        for segment in localstore.segments(self.dir):
            segment.unlink()
        (self.dir / f"records-{0:020d}.jsonl").write_bytes(b"".join(line + b"\n" for line in out))
        shutil.rmtree(self.dir / "tile")
        tiles = TileWriter(self.dir)
        tiles.append(merkle.leaf_hash(line) for line in out)
        tiles.flush()
        for path in (self.dir / "checkpoints").glob("*.note"):
            size = cp.parse(path.read_text()).size
            if size > len(out):
                path.unlink()
            elif size > from_seq:
                head_hex = loads(out[size - 1]).value["chain"]["hash"]
                path.write_text(cp.sign_tree(self.key, CHAIN, size, merkle.root(tiles_reader(self.dir), size),
                                             head_hex))
        spool = self.tmp / "spool"
        shutil.rmtree(spool)  # the shipper's own state goes with the rewrite (it would refuse the store otherwise)


def tiles_reader(directory: Path) -> merkle.Subtrees:
    return TileReader(directory).subtree


@pytest.fixture
def host(tmp_path: Path, litewitness: Litewitness) -> Host:
    h = Host(tmp_path, litewitness)
    h.ship(300)
    return h


def test_shipper_gets_each_checkpoint_cosigned_and_the_witness_follows_the_log(host: Host) -> None:
    note = cp.parse(host.cosigned_note(300))
    assert host.witness.known(ORIGIN) == (300, cp.parse(host.note(300)).body.split("\n")[2])
    assert [name for name, _, _ in note.signatures] == [ORIGIN, host.witness.name]
    host.ship(250)  # the witness must accept the consistency proof from 300 to 550
    assert host.witness.known(ORIGIN)[0] == 550
    assert json.loads((host.dir / "checkpoints" / "witnesses.json").read_text()) == {host.witness.url: 550}
    code, report = host.verify("--policy", str(host.policy))
    assert code == 0 and report["intact"] and report["witnessed_size"] == 550, report["findings"]


def test_history_rewritten_and_resigned_by_the_host_is_refused_by_the_witness(host: Host) -> None:
    kept = host.tmp / "kept.note"
    kept.write_text(host.cosigned_note(300))  # what an auditor (or the witness) saw
    host.rewrite_history(150)
    code, report = host.verify()
    assert code == 0, "every signature verifies: the key alone cannot protect against its holder"
    forged = host.note(300)
    with pytest.raises(WitnessError) as refused:
        add_checkpoint(host.witness.url, 300, [], forged)
    assert refused.value.status == 422  # litewitness: "bad consistency proof" for another root at size 300
    assert host.witness.known(ORIGIN)[0] == 300
    code, report = host.verify("--known-checkpoint", str(kept))
    assert code == 1 and [(f["kind"], f["seq"]) for f in report["findings"]] == [("fork", 299)], report
    code, report = host.verify("--policy", str(host.policy))
    assert code == 1 and report["witnessed_size"] == 0
    assert [(f["kind"], f["seq"]) for f in report["findings"]] == [("unsealed", 0)], report


def test_forked_log_extended_past_the_witness_cannot_get_the_extension_cosigned(host: Host) -> None:
    original_root = cp.parse(host.note(300)).root
    host.rewrite_history(150)
    more = host.tmp / "more"  # the forked log grows: it gets a checkpoint of size 400 signed by the real key
    tiles = TileWriter.open(host.dir)
    tiles.append(merkle.leaf_hash(b"forged %d" % i) for i in range(100))
    tiles.flush()
    note = cp.sign_tree(host.key, CHAIN, 400, merkle.root(tiles_reader(host.dir), 400), "00" * 32)
    more.write_text(note)
    proof = merkle.consistency_proof(tiles_reader(host.dir), 300, 400)
    with pytest.raises(WitnessError) as refused:
        add_checkpoint(host.witness.url, 300, proof, note)
    assert refused.value.status == 422
    assert cp.parse(host.note(300)).root != original_root
    assert host.witness.known(ORIGIN)[0] == 300


def test_rolled_back_log_is_refused_by_the_witness_and_caught_by_verify(host: Host) -> None:
    host.ship(200)
    kept = host.tmp / "kept.note"
    kept.write_text(host.cosigned_note(500))
    host.rewrite_history(250, until=300)  # back to 300 records, rewritten from 250 on, re-signed
    with pytest.raises(WitnessError) as refused:
        add_checkpoint(host.witness.url, 0, [], host.note(300))
    assert refused.value.status == 409 and refused.value.known == 500
    code, report = host.verify("--known-checkpoint", str(kept))
    assert code == 1 and ("fork", 300) in [(f["kind"], f["seq"]) for f in report["findings"]], report
    assert "rolled back" in report["findings"][-1]["detail"]


def test_checkpoint_older_than_the_records_left_is_checked_by_consistency_proof_from_the_tiles(host: Host) -> None:
    """From a trusted recent checkpoint on (older records may be gone), a kept older one is judged by the tiles."""
    kept = host.tmp / "kept.note"
    kept.write_text(host.note(100))
    trusted = host.tmp / "trusted.note"
    trusted.write_text(host.note(300))
    code, report = host.verify("--from-checkpoint", str(trusted), "--known-checkpoint", str(kept))
    assert code == 0, report
    host.rewrite_history(50)
    trusted.write_text(host.note(300))  # the auditor now takes the host's re-signed checkpoint as its start
    code, report = host.verify("--from-checkpoint", str(trusted), "--known-checkpoint", str(kept))
    assert code == 1 and [(f["kind"], f["seq"]) for f in report["findings"]] == [("fork", 99)], report
    assert "is not extended by the log's checkpoint of size 300" in report["findings"][0]["detail"]


def test_witness_that_is_down_does_not_stop_shipping(tmp_path: Path, litewitness: Litewitness) -> None:
    host = Host(tmp_path, litewitness)
    host.witness = Litewitness("http://127.0.0.1:9", litewitness.name, litewitness.vkey, litewitness.db,
                               litewitness.log)
    host.ship(120)
    assert len(localstore.read_checkpoints(host.dir)) == 2
    assert not list((host.dir / "checkpoints").glob("*.cosig"))
    assert Witnessing(host.dir, (litewitness.url,)).submit(host.note(120), tiles_reader(host.dir)) == {
        litewitness.url: 120}, "the next attempt catches up from size 0"


def test_policy_with_an_impossible_quorum_cannot_be_used(host: Host) -> None:
    host.policy.write_text(f"witness {host.witness.name} {host.witness.vkey}\nquorum 2\n")
    code, _ = host.verify("--policy", str(host.policy))
    assert code == 2


def _store_cursor(spool: Path) -> int:
    try:
        return json.loads((spool / "cursor-localstore.json").read_text())["next_seq"]
    except (OSError, ValueError):
        return 0


def test_kill_9_while_tiles_and_checkpoints_are_written_then_rerun_is_intact_and_witnessed(
        tmp_path: Path, litewitness: Litewitness) -> None:
    """Small batches (a tile and note write every 50 records, a cosignature every 100) so the kills land among
    those writes; after a rerun the tiles are the records' tree, verify is intact and the witness accepted it all."""
    import os
    import signal
    import subprocess
    import time

    from tests.audit.kit import TEE_AUDIT

    host = Host(tmp_path, litewitness)
    events = 6000
    write_journal(host.journal, events)
    spool = tmp_path / "spool"
    cmd = [*TEE_AUDIT, "ship", "--once", "--source", str(host.journal), "--store", str(host.store),
           "--signing-key", str(host.key_file), "--spool.dir", str(spool), "--chain", CHAIN,
           "--checkpoint.every-records", "100", "--es.batch-size", "50", "--witness.urls", litewitness.url,
           "--log.level", "error"]
    kills = 0
    for i in range(6):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        mark = (i + 1) * events // 8
        while proc.poll() is None and _store_cursor(spool) < mark:
            time.sleep(0.005)
        time.sleep(0.007 * i)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 5, "the kills must land while the run is still going"
    assert subprocess.run(cmd, check=False, timeout=300).returncode == 0
    leaves = [merkle.leaf_hash(line) for line in localstore.read_lines(host.dir)]
    assert len(leaves) == events
    tree = merkle.MemoryTree(leaves)
    assert TileReader(host.dir).size() == events
    assert merkle.root(tiles_reader(host.dir), events) == merkle.root(tree.subtree, events)
    assert host.witness.known(ORIGIN)[0] == events
    code, report = host.verify("--policy", str(host.policy))
    assert code == 0 and report["witnessed_size"] == events, report["findings"]


def test_witness_key_command_prints_what_the_witness_is_registered_with(tmp_path: Path) -> None:
    import subprocess

    from tests.audit.kit import TEE_AUDIT

    _, public = keys(tmp_path / "keys")
    out = subprocess.run([*TEE_AUDIT, "witness-key", "--public-key", str(public), "--chain", CHAIN],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert out == f"origin: {ORIGIN}\nvkey: {cp.vkey(ORIGIN, cp.load_public(public))}\n"


def test_daemon_exposes_signed_and_witnessed_sizes(tmp_path: Path, litewitness: Litewitness) -> None:
    import signal
    import subprocess

    from tests.audit.kit import TEE_AUDIT
    from tests.audit.test_daemon import _scrape, _wait
    from tests.fixtures.prometheus import free_port

    host = Host(tmp_path, litewitness)
    write_journal(host.journal, 300)
    port = free_port()
    proc = subprocess.Popen([*TEE_AUDIT, "ship", "--source", str(host.journal), "--store", str(host.store),
                             "--chain", CHAIN, "--signing-key", str(host.key_file), "--spool.dir",
                             str(tmp_path / "spool"), "--web.listen-address", f"127.0.0.1:{port}",
                             "--checkpoint.every-seconds", "0.3", "--source.poll-seconds", "0.1",
                             "--witness.urls", litewitness.url], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def sizes() -> tuple[float | None, float | None]:
            try:
                metrics = _scrape(f"http://127.0.0.1:{port}/metrics")
            except OSError:
                return None, None
            return (metrics.get(("tee_audit_signed_size", (("chain", CHAIN),))),
                    metrics.get(("tee_audit_witnessed_size", (("chain", CHAIN), ("witness", litewitness.url)))))

        _wait(lambda: sizes() == (300, 300), "signed and witnessed size 300")
        assert litewitness.known(ORIGIN)[0] == 300
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
