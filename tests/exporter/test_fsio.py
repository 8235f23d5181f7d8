"""common.fsio: a replaced file holds the old content or the new one, never a part of either."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from common.fsio import write_atomic


def test_write_atomic_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    write_atomic(target, b"new")
    assert target.read_bytes() == b"new" and sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_failed_write_keeps_the_old_content(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")
    (tmp_path / "state.json.tmp").mkdir()  # the temporary cannot be created: the write fails before the rename
    with pytest.raises(OSError):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.path.isdir(tmp_path / "state.json.tmp")


def test_symlink_planted_at_the_temporary_name_is_not_followed(tmp_path: Path) -> None:
    """Whoever can write the directory plants ``state.json.tmp -> victim``: the write must not land in the victim."""
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    target = tmp_path / "state.json"
    (tmp_path / "state.json.tmp").symlink_to(victim)
    write_atomic(target, b"new")
    assert victim.read_bytes() == b"precious"
    assert target.read_bytes() == b"new" and not target.is_symlink()
