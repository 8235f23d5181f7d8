"""README / docs/audit.md: "the shipper's memory does not grow with the backlog". Peak RSS of a real ``tee-audit
ship --once`` over a backlog of 5,000 and of 40,000 journal events: the backlog lives in the journal and the spool
on disk, read and shipped in batches, so eight times the backlog adds a small fraction of its bytes to the peak.
No timing is asserted; the bound is on memory relative to the backlog's size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.audit.kit import TEE_AUDIT, keys, write_journal

# Runs the shipper as its only child and prints the child's peak RSS (ru_maxrss, KiB on Linux).
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r.returncode == 0 else -1)")


def _peak_rss_bytes(tmp_path: Path, events: int) -> tuple[int, int]:
    """(peak RSS of ship --once over ``events`` backlog, journal bytes)."""
    key, _ = keys(tmp_path / f"keys{events}")
    journal = tmp_path / f"journal{events}.jsonl"
    write_journal(journal, events)
    out = subprocess.run([sys.executable, "-c", PEAK, *TEE_AUDIT, "ship", "--source", str(journal),
                          "--store", str(tmp_path / f"store{events}"), "--chain", "h1", "--signing-key", str(key),
                          "--once"], capture_output=True, text=True, timeout=600, check=True)
    peak = int(out.stdout.split()[-1])
    assert peak > 0, out.stderr
    return peak * 1024, journal.stat().st_size


def test_shipper_memory_does_not_grow_with_the_backlog(tmp_path: Path) -> None:
    small_rss, small_bytes = _peak_rss_bytes(tmp_path, 5_000)
    large_rss, large_bytes = _peak_rss_bytes(tmp_path, 40_000)
    extra_backlog = large_bytes - small_bytes  # ~13 MB more journal, all of it backlog
    # Holding the backlog would cost more than its bytes (Python objects); a quarter of it is far below that and
    # far above the noise of a flat process (allocator, batch sizes).
    print(f"peak RSS {small_rss / 1e6:.1f} MB at 5k, {large_rss / 1e6:.1f} MB at 40k; backlog +{extra_backlog / 1e6:.1f} MB")
    assert large_rss - small_rss < extra_backlog / 4, (small_rss, large_rss, extra_backlog)
