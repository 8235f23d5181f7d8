"""The README demo's exact commands: keygen, ship --once into the local store, verify."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.audit.kit import TEE_AUDIT, write_journal


def test_keygen_ship_once_verify_as_in_the_readme(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 25)
    keydir, store = tmp_path / "keys", tmp_path / "store"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*TEE_AUDIT, *args], capture_output=True, text=True, check=False, timeout=120)

    assert run("keygen", "--out", str(keydir)).returncode == 0
    shipped = run("ship", "--source", str(journal), "--store", str(store), "--signing-key",
                  str(keydir / "audit.key"), "--once")
    assert shipped.returncode == 0, shipped.stderr
    verified = run("verify", "--store", str(store), "--public-key", str(keydir / "audit.pub"))
    assert verified.returncode == 0
    # the whole verdict line: "NOT INTACT: 25 records..." contains the same words
    assert re.search(r"^chain \S+: INTACT: 25 records, 1 signed checkpoints, 0 records after the last checkpoint",
                     verified.stdout, re.MULTILINE), verified.stdout
    (segment,) = (store).glob("*/records-*.jsonl")
    lines = segment.read_text().splitlines()
    lines[3] = lines[3].replace("vm-3", "vm-X")
    segment.write_text("\n".join(lines) + "\n")
    tampered = run("verify", "--store", str(store), "--public-key", str(keydir / "audit.pub"))
    assert tampered.returncode == 1 and "modified" in tampered.stdout and "seq=3" in tampered.stdout
    missing = run("verify", "--store", str(tmp_path / "nowhere"), "--public-key", str(keydir / "audit.pub"))
    assert missing.returncode == 2
