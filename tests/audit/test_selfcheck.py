"""The self-verification thread never dies silently: whatever verify raises is counted and the thread goes on."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from audit import checkpoint as cp
from audit import selfcheck
from audit.selfcheck import SelfCheck
from audit.telemetry import Telemetry
from tests.audit.kit import keys, ship_once, write_journal


def _settings(store: Path, every: float = 3600.0) -> SimpleNamespace:
    return SimpleNamespace(store=store, es=None, chain="h1", verify_every_seconds=every)


def _value(metrics: Telemetry, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_an_unexpected_exception_is_counted_and_the_thread_lives_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Telemetry("h1", [], ["localstore"])
    calls = []

    def explode(*_: object) -> None:
        calls.append(1)
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(selfcheck, "verify_sink", explode)
    check = SelfCheck(_settings(tmp_path, every=0.05), None, metrics)  # type: ignore[arg-type]
    check.start()
    deadline = time.monotonic() + 10
    while len(calls) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    check.stop()
    assert len(calls) >= 3  # still running after the first failure
    assert _value(metrics, "tee_audit_selfcheck_errors_total", sink="localstore") >= 3
    assert _value(metrics, "tee_audit_selfcheck_last_run_timestamp_seconds", sink="localstore") is None


def test_a_note_that_is_not_utf8_gives_a_verdict_or_a_counted_error_never_silence(tmp_path: Path) -> None:
    """Real store, real verify: a forged non-UTF-8 note either makes the chain not intact or is a counted error."""
    key, public = keys(tmp_path / "keys")
    journal, store = tmp_path / "journal.jsonl", tmp_path / "store"
    write_journal(journal, 10)
    assert ship_once([journal], key, tmp_path / "spool", store=store) == 0
    metrics = Telemetry("h1", [], ["localstore"])
    check = SelfCheck(_settings(store), cp.load_public(public), metrics)  # type: ignore[arg-type]
    check.run_once()
    assert _value(metrics, "tee_audit_chain_intact", chain="h1", sink="localstore") == 1
    (store / "h1" / "checkpoints" / f"{20:020d}.note").write_bytes(b"tee-audit/h1\n20\n\xff\xfe\n")
    check.run_once()
    errors = _value(metrics, "tee_audit_selfcheck_errors_total", sink="localstore")
    intact = _value(metrics, "tee_audit_chain_intact", chain="h1", sink="localstore")
    assert errors == 1 or intact == 0, (errors, intact)
