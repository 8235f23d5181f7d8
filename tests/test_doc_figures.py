"""The figures the docs give for limits, timeouts and defaults are the code's: each row names the doc, the exact
phrase that states the figure, and the code value it states. Changing either side alone fails here, so a doc can
neither keep a figure the code dropped nor promise one it never had. (Behaviour behind the figures is tested where
it lives; this pins the numbers.)"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest

from audit import spool
from audit.config import ShipSettings
from audit.readers import elasticsearch as es_reader
from audit.setup import wanted
from audit.ship import BACKOFF_MAX
from audit.sinks import elasticsearch as es_sink
from audit.sinks import localstore
from audit.sources import alertmanager
from audit.verify import WINDOW
from common.backoff import Backoff
from exporter.config import Settings
from exporter.virt import bulk_stats, cache
from exporter.virt.connection import LibvirtConnection

ROOT = Path(__file__).resolve().parents[1]
MiB = 1024 * 1024
_connection = inspect.signature(LibvirtConnection).parameters

FIGURES: list[tuple[str, str, Any, Any]] = [
    ("docs/exporter.md", "reconnects\n  with capped exponential backoff (0.5 s doubling to 30 s)",
     (Backoff().initial, Backoff().cap), (0.5, 30.0)),
    ("docs/exporter.md", "libvirt keepalive (5 s x 3)",
     (_connection["keepalive_interval"].default, _connection["keepalive_count"].default), (5, 3)),
    ("docs/exporter.md", "is waited for at most 5 s", _connection["open_timeout"].default, 5.0),
    ("docs/exporter.md", "| `--collector.timeout` | `8` |", Settings().collector_timeout, 8.0),
    ("docs/exporter.md", "waits for the call at most 2 s (`STATS_WAIT`)", bulk_stats.STATS_WAIT, 2.0),
    ("docs/exporter.md", "bulk call was not answered within 2 s, or because their XML was not answered within 1 s",
     (bulk_stats.STATS_WAIT, cache.XML_WAIT), (2.0, 1.0)),
    ("docs/exporter.md", "| `--web.max-requests` | `40` |", Settings().web_max_requests, 40),
    ("docs/exporter.md", "64 MiB, off | the event journal", Settings().journal_max_bytes, 64 * MiB),
    ("docs/audit.md", "refuses bodies over 4 MiB (413)", alertmanager.MAX_BODY, 4 * MiB),
    ("docs/audit.md", "not\n  happen within 10 s", alertmanager.WAIT_SECONDS, 10.0),
    ("docs/audit.md", "at most 8 MiB of documents\n  per request", es_sink.BULK_BYTES, 8 * MiB),
    ("docs/audit.md", "exponential backoff (0.4 s .. 10 s)", BACKOFF_MAX, 10.0),
    ("docs/audit.md", "segments of 64 MiB", localstore.SEGMENT_BYTES, 64 * MiB),
    ("docs/audit.md", "smaller than one 16 MiB spool segment", spool.SEGMENT_BYTES, 16 * MiB),
    ("docs/audit.md", "`spool.max-bytes` (default 256 MiB)", ShipSettings.spool_max_bytes, 256 * MiB),
    ("docs/audit.md", "Every `checkpoint.every-records` records (default 1000)", ShipSettings.checkpoint_every_records,
     1000),
    ("docs/audit.md", "`checkpoint.every-seconds` (default 60", ShipSettings.checkpoint_every_seconds, 60.0),
    ("docs/audit.md", "| `verify.every-seconds` | 300 |", ShipSettings.verify_every_seconds, 300.0),
    ("docs/audit.md", "| `source.max-line-bytes` / `source.poll-seconds` | 1 MiB / 0.5 |",
     (ShipSettings.source_max_line_bytes, ShipSettings.source_poll_seconds), (MiB, 0.5)),
    ("docs/audit.md", "sorted by `chain.seq`, 5000 per page", es_reader.PAGE, 5000),
    ("docs/audit.md", "(4096 records each side)", WINDOW, 4096),
]


@pytest.mark.parametrize(("doc", "phrase", "actual", "stated"), FIGURES, ids=[f[1][:40] for f in FIGURES])
def test_documented_figure_is_the_code_value(doc: str, phrase: str, actual: Any, stated: Any) -> None:
    text = (ROOT / doc).read_text()
    assert phrase in text or phrase.replace("\n  ", " ") in " ".join(text.split()), f"{doc} no longer says {phrase!r}"
    assert actual == stated, f"{doc} says {phrase!r}; the code has {actual!r}"


def test_xml_wait_bounds_the_scrape_below_libvirts_job_timeout() -> None:
    # exporter/virt/cache.py: a locked domain's XMLDesc waits up to libvirt's 30 s job timeout; the scrape waits
    # XML_WAIT, well inside the default --collector.timeout
    assert cache.XML_WAIT < Settings().collector_timeout / 4


def test_a_scrape_waits_on_unanswered_libvirt_calls_less_than_its_deadline() -> None:
    # exporter/virt/bulk_stats.py and cache.py: a scrape waits STATS_WAIT for the bulk call, then XML_WAIT for at
    # most FETCH_THREADS late definitions (beyond them a domain is late at once); the job-free calls are answered
    # without QEMU. All of it within the default --collector.timeout, with time left for the answered calls.
    assert bulk_stats.STATS_WAIT + cache.FETCH_THREADS * cache.XML_WAIT < Settings().collector_timeout * 3 / 4


def test_setup_example_shows_the_fingerprints_this_version_installs() -> None:
    """An administrator compares ``tee-audit setup``'s output with the docs' example: its template fingerprints are
    the ones this version writes."""
    text = (ROOT / "docs" / "audit.md").read_text()
    for template in wanted("default"):
        assert f"# template {template.name}: installed ({template.fingerprint})" in text
