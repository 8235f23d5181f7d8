"""The exporter core the collectors stand on: registry deadlines, settings, the journal."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.core import GaugeMetricFamily

from exporter import config
from exporter.collectors.base import Collector, CollectorError
from exporter.journal import Journal
from exporter.registry import ScrapeCollector
from tests.exporter.helpers import assert_schema_valid, exposition, value
from tests.fixtures.tmpfs import mounted_tmpfs


class Hung(Collector):
    name = "hung"

    def __init__(self) -> None:
        self.release = threading.Event()

    def collect(self):
        self.release.wait(30)
        yield GaugeMetricFamily("tee_test_late", "x", value=1)


class Broken(Collector):
    name = "broken"

    def collect(self):
        yield GaugeMetricFamily("tee_test_up", "x", value=0)
        raise CollectorError("source gone")


class Fine(Collector):
    name = "fine"

    def collect(self):
        yield GaugeMetricFamily("tee_test_fine", "x", value=1)


def test_hung_collector_does_not_hang_the_scrape():
    hung = Hung()
    scrape = ScrapeCollector([hung, Fine()], timeout=0.2)
    try:
        text = exposition(scrape)  # returns although "hung" never finishes
        assert value(text, "tee_exporter_collector_success", collector="hung") == 0
        assert value(text, "tee_exporter_collector_success", collector="fine") == 1
        assert value(text, "tee_test_fine") == 1
        assert "tee_test_late" not in text
        # still stuck: the next scrape reports it failed at once instead of starting another thread
        threads = threading.active_count()
        text = exposition(scrape)
        assert value(text, "tee_exporter_collector_success", collector="hung") == 0
        assert threading.active_count() <= threads + 1  # only the fine collector's thread was started
    finally:
        hung.release.set()


def test_hung_collector_recovers_once_it_finishes():
    hung = Hung()
    scrape = ScrapeCollector([hung], timeout=0.1)
    exposition(scrape)
    hung.release.set()
    for thread in threading.enumerate():
        if thread.name == "collect-hung":
            thread.join(5)
    assert value(exposition(scrape), "tee_exporter_collector_success", collector="hung") == 1


def test_failed_collector_reports_zero_and_keeps_what_it_said_before_failing():
    text = exposition(ScrapeCollector([Broken()], timeout=5))
    assert value(text, "tee_exporter_collector_success", collector="broken") == 0
    assert value(text, "tee_test_up") == 0


def test_yaml_then_flags_precedence(tmp_path):
    path = tmp_path / "cfg.yml"
    path.write_text("web.listen-address: ':9999'\nlibvirt.uri: test:///default\ncollector.qemu: false\n"
                    "attestation.log-path: [/a.log, /b.log]\ncollector.timeout: 3\n")
    settings = config.load(path, {"web.listen-address": ":1234"})
    assert settings.web_listen_address == ":1234"  # flag wins
    assert settings.libvirt_uri == "test:///default"
    assert settings.collectors["qemu"] is False and settings.collectors["libvirt"] is True
    assert settings.attestation_log_paths == (Path("/a.log"), Path("/b.log"))
    assert settings.collector_timeout == 3.0


def test_path_flags_arrive_as_paths_from_click():
    settings = config.load(None, {"journal.path": Path("/j.jsonl"), "kbs.log-path": [Path("/k.log")]})
    assert settings.journal_path == Path("/j.jsonl") and settings.kbs_log_paths == (Path("/k.log"),)


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("libvirt.urii: x\n", "unknown setting 'libvirt.urii'"),
    ("collector.timeout: soon\n", "collector.timeout: expected a positive number"),
    ("journal.fsync: 'yes'\n", "journal.fsync: expected true or false"),
    ("collector.qemu: 1\n", "collector.qemu: expected true or false"),
    ("- a list\n", "expected a mapping"),
    ("a: [\n", "not valid YAML"),
])
def test_bad_config_file_is_a_clear_error(tmp_path, yaml_text, message):
    path = tmp_path / "cfg.yml"
    path.write_text(yaml_text)
    with pytest.raises(config.ConfigError, match=message.replace("[", r"\[")):
        config.load(path, {})


def test_cli_rejects_unknown_config_key(tmp_path):
    path = tmp_path / "cfg.yml"
    path.write_text("no.such-key: 1\n")
    proc = subprocess.run([str(Path(".venv/bin/tee-exporter").resolve()), "--config.file", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unknown setting 'no.such-key'" in proc.stderr


def lifecycle_event(journal: Journal, n: int) -> dict:
    return journal.event(action="domain-started", category=["host"], type=["start"], dataset="tee.lifecycle",
                         outcome="success", tee={"type": "sev-snp", "vm": {"name": f"vm{n}", "uuid": "u"}})


def test_journal_lines_are_schema_valid_json(tmp_path):
    journal = Journal(tmp_path / "j.jsonl", host="h1")
    for n in range(3):
        journal.append(lifecycle_event(journal, n))
    lines = [json.loads(line) for line in (tmp_path / "j.jsonl").read_text().splitlines()]
    assert [e["tee"]["vm"]["name"] for e in lines] == ["vm0", "vm1", "vm2"]
    assert len({e["event"]["id"] for e in lines}) == 3
    assert_schema_valid(lines)


def test_journal_rotates_by_size_keeping_every_line(tmp_path):
    path = tmp_path / "j.jsonl"
    journal = Journal(path, max_bytes=2000, host="h1")
    for n in range(20):
        journal.append(lifecycle_event(journal, n))
    journal.close()
    rotated = (tmp_path / "j.jsonl.1").read_text().splitlines()
    current = path.read_text().splitlines()
    assert path.stat().st_size <= 2000
    names = [json.loads(line)["tee"]["vm"]["name"] for line in rotated + current]
    assert names[-len(current):] == [f"vm{n}" for n in range(20 - len(current), 20)]
    assert all(line.endswith("}") for line in rotated + current)  # whole lines only


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    """A 64 KiB tmpfs: a real disk that fills up."""
    with mounted_tmpfs(tmp_path / "mnt", "64k") as mnt:
        yield mnt


def test_full_disk_keeps_events_in_backlog_and_writes_them_when_space_returns(tiny_fs):
    filler = tiny_fs / "filler"
    with open(filler, "wb", buffering=0) as f:  # fill the file system up to the last byte
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    journal = Journal(tiny_fs / "j.jsonl", max_bytes=0, host="h1")
    for n in range(5):
        journal.append(lifecycle_event(journal, n))
    assert journal.backlog == 5 and journal.write_errors >= 1 and journal.appended == 0
    filler.unlink()
    journal.flush()
    journal.close()
    lines = (tiny_fs / "j.jsonl").read_text().splitlines()
    assert [json.loads(line)["tee"]["vm"]["name"] for line in lines] == [f"vm{n}" for n in range(5)]
    assert journal.backlog == 0 and journal.dropped == 0


def test_backlog_overflow_is_counted_as_dropped(tmp_path):
    journal = Journal(Path("/dev/full"), max_bytes=0, host="h1")  # every write fails with ENOSPC
    journal.backlog_limit = 3
    for n in range(5):
        journal.append(lifecycle_event(journal, n))
    assert (journal.backlog, journal.dropped) == (3, 2)


def test_number_bounds_are_declared_once_and_checked():
    assert config.load(None, {"collector.timeout": 0.5}).collector_timeout == 0.5  # positive, not >= 1
    assert config.load(None, {"web.max-requests": 0}).web_max_requests == 0  # 0 = no limit
    with pytest.raises(config.ConfigError, match="collector.timeout: expected a positive number"):
        config.load(None, {"collector.timeout": 0})
    with pytest.raises(config.ConfigError, match="web.max-requests: expected a non-negative integer"):
        config.load(None, {"web.max-requests": -1})
    with pytest.raises(config.ConfigError, match="log.level: expected one of debug, info, warning, error"):
        config.load(None, {"log.level": "verbose"})  # from YAML too, not only through click.Choice
