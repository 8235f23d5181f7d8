"""``tee-audit setup`` and the shipper's start-up check, against a real Elasticsearch (security off here; the
privilege side is in test_es_roles.py): setup is idempotent and says what it did; ``ship`` writes no template, and
a missing or outdated one stops it with one line naming it and the command that fixes it, the spool keeping every
record; an Elasticsearch that does not answer at start is no such answer: the shipper spools and retries."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from opentelemetry.trace import NoOpTracer

from audit.setup import FINGERPRINT, install, wanted
from audit.ship import SinkRunner
from audit.sinks import NotSetUp
from audit.sinks.elasticsearch import ElasticsearchSink, connect, data_stream_name, template
from audit.spool import Spool
from audit.telemetry import Telemetry
from tests.audit.kit import TEE_AUDIT, es_setup, keys, verify_json, write_journal
from tests.fixtures.prometheus import free_port

pytestmark = pytest.mark.elasticsearch


def _ship(tmp: Path, url: str, namespace: str, journal: Path, *extra: str) -> list[str]:
    key, _ = keys(tmp / "keys")
    return [*TEE_AUDIT, "ship", "--once", "--source", str(journal), "--es", url, "--es.namespace", namespace,
            "--signing-key", str(key), "--spool.dir", str(tmp / "spool"), "--chain", "h1", *extra]


def _spooled(spool: Path) -> int:
    """Records the spool holds (0 before its state is first written)."""
    try:
        return json.loads((spool / "state.json").read_text())["next_seq"]
    except FileNotFoundError:
        return 0


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "level=error" in line]


def _stream_exists(url: str, stream: str) -> bool:
    return requests.get(f"{url}/_resolve/index/{stream}", timeout=30).status_code == 200


def test_setup_installs_both_templates_once_then_reports_them_up_to_date(elasticsearch: str,
                                                                          es_namespace: str) -> None:
    cmd = [*TEE_AUDIT, "setup", "--es", elasticsearch, "--es.namespace", es_namespace, "--es.retention", "30d"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    stream = data_stream_name(es_namespace)
    records, checkpoints = wanted(es_namespace, "30d")
    assert first.stdout.splitlines()[1:] == [
        f"template {stream}: installed ({records.fingerprint})",
        f"template {checkpoints.name}: installed ({checkpoints.fingerprint})",
        f"data stream {stream}: not created yet (the shipper's first write creates it with retention 30d)"]
    assert first.stdout.startswith("cluster: Elasticsearch ")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert again[1:3] == [f"template {stream}: up to date ({records.fingerprint})",
                          f"template {checkpoints.name}: up to date ({checkpoints.fingerprint})"]
    stored = requests.get(f"{elasticsearch}/_index_template/{stream}", timeout=30).json()
    tpl = stored["index_templates"][0]["index_template"]
    assert tpl["template"]["lifecycle"]["data_retention"] == "30d"
    assert tpl["_meta"][FINGERPRINT] == records.fingerprint


def test_ship_without_setup_stops_with_one_line_naming_the_template_and_setup_and_writes_nothing(
        tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 30)
    run = subprocess.run(_ship(tmp_path, elasticsearch, es_namespace, journal), capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 2
    (line,) = _errors(run.stderr)
    assert f"index template logs-tee.audit-{es_namespace} is missing" in line
    assert f"run `tee-audit setup --es.namespace {es_namespace}`" in line
    assert "Traceback" not in run.stderr
    assert _spooled(tmp_path / "spool") == 30  # every record kept for the run after setup
    # no auto-created stream from the stack's own logs-*-* template (LogsDB would rewrite _source)
    assert not _stream_exists(elasticsearch, data_stream_name(es_namespace))
    assert requests.get(f"{elasticsearch}/_index_template/{data_stream_name(es_namespace)}",
                        timeout=30).status_code == 404


def test_a_template_tee_audit_did_not_write_stops_ship_until_setup_replaces_it(
        tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    """Present is not enough: a template under our name that maps differently (here LogsDB, whose synthetic
    ``_source`` would break record hashes) is refused by its fingerprint, and setup replaces it."""
    stream = data_stream_name(es_namespace)
    foreign = template(es_namespace, "90d")
    foreign["template"]["settings"]["index.mode"] = "logsdb"
    requests.put(f"{elasticsearch}/_index_template/{stream}", json=foreign, timeout=30).raise_for_status()
    (_, checkpoints) = wanted(es_namespace)
    requests.put(f"{elasticsearch}/_index_template/{checkpoints.name}", json=checkpoints.body,
                 timeout=30).raise_for_status()
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 20)
    run = subprocess.run(_ship(tmp_path, elasticsearch, es_namespace, journal), capture_output=True, text=True,
                         timeout=120, check=False)
    assert run.returncode == 2
    (line,) = _errors(run.stderr)
    assert f"index template {stream} is not the one this tee-audit expects (found none" in line

    lines = es_setup(elasticsearch, es_namespace)
    assert f"template {stream}: updated from one tee-audit did not write to {wanted(es_namespace)[0].fingerprint}" \
        in lines
    assert f"template {checkpoints.name}: up to date ({checkpoints.fingerprint})" in lines
    assert subprocess.run(_ship(tmp_path, elasticsearch, es_namespace, journal), timeout=120,
                          check=False).returncode == 0
    code, report = verify_json("--es", elasticsearch, "--data-stream", stream, "--public-key",
                               str(tmp_path / "keys" / "audit.pub"))
    assert (code, report["records"], report["findings"]) == (0, 20, [])


class _LateProxy:
    """A TCP port that refuses connections until ``open()``, then forwards each connection to Elasticsearch:
    an Elasticsearch that is not there yet when the shipper starts."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.port = free_port()
        self._server: socket.socket | None = None
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    def open(self) -> None:
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: socket.socket) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._server is not None
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                self._start(self._pipe, a, b)

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):  # shutdown, not close: it also wakes the other direction's blocked recv()
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        """Stops every thread, so later tests (the forking verifier's) run in a process without stray ones."""
        for sock in ([self._server] if self._server else []) + self._sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked accept() or recv()
            except OSError:
                pass
            sock.close()
        for thread in self._threads:
            thread.join(10)


@pytest.fixture
def late_proxy(elasticsearch: str) -> Iterator[_LateProxy]:
    proxy = _LateProxy(elasticsearch)
    yield proxy
    proxy.close()


def test_elasticsearch_unreachable_at_start_is_not_fatal_the_shipper_spools_and_ships_once_it_answers(
        tmp_path: Path, elasticsearch: str, es_namespace: str, late_proxy: _LateProxy) -> None:
    es_setup(elasticsearch, es_namespace)
    journal = tmp_path / "journal.jsonl"
    write_journal(journal, 40)
    log = tmp_path / "ship.log"
    url = f"http://127.0.0.1:{late_proxy.port}"
    proc = subprocess.Popen(_ship(tmp_path, url, es_namespace, journal), stdout=subprocess.DEVNULL,
                            stderr=log.open("wb"))
    try:
        deadline = time.monotonic() + 60  # the sink may fail at start, before the records are spooled
        while time.monotonic() < deadline and (b"sink write failed, retrying" not in log.read_bytes()
                                               or _spooled(tmp_path / "spool") < 40):
            time.sleep(0.1)
        assert b"reason=connection" in log.read_bytes()
        assert proc.poll() is None and _spooled(tmp_path / "spool") == 40
        late_proxy.open()
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()
    code, report = verify_json("--es", elasticsearch, "--data-stream", data_stream_name(es_namespace),
                               "--public-key", str(tmp_path / "keys" / "audit.pub"))
    assert (code, report["records"], report["findings"]) == (0, 40, [])


class _Nodes:
    """Answers ``GET /_nodes`` with the given versions, and nothing else: a cluster older than supported must be
    refused before anything is written."""

    def __init__(self, *versions: str) -> None:
        self.versions = versions
        self.calls: list[str] = []

    def perform_request(self, method: str, path: str, **_: object) -> SimpleNamespace:
        self.calls.append(f"{method} {path}")
        assert path.startswith("/_nodes"), path
        return SimpleNamespace(body={"nodes": {str(i): {"version": v} for i, v in enumerate(self.versions)}})


def test_setup_refuses_a_cluster_with_a_node_older_than_supported_before_writing_anything() -> None:
    cluster = _Nodes("9.2.4", "8.13.4", "8.19.3")  # one old node in a mixed cluster is enough
    with pytest.raises(NotSetUp, match=r"Elasticsearch 8\.13\.4 at https://es:9200 is older than 8\.14"):
        list(install(cluster, "https://es:9200", "default", "90d"))  # type: ignore[arg-type]
    assert cluster.calls == ["GET /_nodes?filter_path=nodes.*.version"]


def test_a_sink_not_set_up_is_counted_and_stops_its_runner_before_any_record(
        tmp_path: Path, elasticsearch: str, es_namespace: str) -> None:
    spool = Spool(tmp_path / "spool", "h1")
    metrics = Telemetry("h1", [], ["elasticsearch"])
    runner = SinkRunner(ElasticsearchSink(connect(elasticsearch), "h1", es_namespace), spool, 100, metrics,
                        NoOpTracer())
    assert runner.step(1.0) is False  # an empty spool: the check runs at start all the same
    assert runner.abort and f"index template {data_stream_name(es_namespace)} is missing" in runner.abort
    assert metrics.registry.get_sample_value("tee_audit_sink_errors_total",
                                             {"sink": "elasticsearch", "reason": "not_set_up"}) == 1
    runner.retry_at = 0.0
    assert runner.step(2.0) is False and runner.failures == 1  # stopped for good: the shipper exits
