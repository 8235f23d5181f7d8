"""``tee-exporter`` as a real process on the demo host (libvirt test driver): /, /metrics, /healthz, clean exit."""

from __future__ import annotations

import importlib.util
import signal
import socket
import subprocess
import time
from pathlib import Path

import requests

from tests.exporter.helpers import DEMO_URI, ROOT, promtool_check, value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def exporter_args(tmp_path: Path, address: str, *extra: str) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "tee-exporter"), "--libvirt.uri", DEMO_URI,
            "--web.listen-address", address, "--journal.path", str(tmp_path / "journal.jsonl"),
            "--path.sysfs", str(tmp_path), "--path.cgroupfs", str(tmp_path), "--path.procfs", str(tmp_path), *extra]


def wait_healthy(proc: subprocess.Popen, url: str) -> requests.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            assert proc.poll() is None and time.monotonic() < deadline, "exporter did not come up"
            time.sleep(0.1)


def test_daemon_serves_demo_host(tmp_path):
    port = free_port()
    args = exporter_args(tmp_path, f"127.0.0.1:{port}")
    for name in ("attestation", "kbs"):  # other people's collectors: covered here once they exist
        if importlib.util.find_spec(f"exporter.collectors.{name}") is None:
            args.append(f"--no-collector.{name}")
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_healthy(proc, f"{base}/healthz").status_code == 200
        assert "/metrics" in requests.get(base, timeout=5).text
        text = requests.get(f"{base}/metrics", timeout=10).text
        for collector in ("libvirt", "host", "lifecycle", "qemu"):
            assert value(text, "tee_exporter_collector_success", collector=collector) == 1, collector
        assert value(text, "tee_domain_info", domain="snp-app", uuid="7ee00000-0000-4000-8000-000000000007",
                     tee_type="sev-snp", debug_allowed="false") == 1
        assert value(text, "tee_exporter_build_info", version="0.1.0") == 1
        assert value(text, "process_resident_memory_bytes") > 0  # prometheus_client's process metrics
        assert promtool_check(text) == ""
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "shutting down" in err


def test_demo_node_path_is_shipped_in_the_package():
    spec = importlib.util.find_spec("exporter.demo")
    assert spec is not None and (Path(spec.origin).parent / "testnode.xml").is_file()


def test_port_only_listens_on_ipv4_and_ipv6_and_only_named_collectors_run(tmp_path):
    port = free_port()
    proc = subprocess.Popen(exporter_args(tmp_path, f":{port}", "--collector.disable-defaults", "--collector.libvirt",
                                          "--web.disable-exporter-metrics"), stderr=subprocess.PIPE, text=True)
    try:
        assert wait_healthy(proc, f"http://127.0.0.1:{port}/healthz").status_code == 200
        text = requests.get(f"http://[::1]:{port}/metrics", timeout=10).text
        assert value(text, "tee_exporter_collector_success", collector="libvirt") == 1
        assert value(text, "tee_exporter_collector_success", collector="host") is None  # not named: off
        assert "process_resident_memory_bytes" not in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)


def test_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(exporter_args(tmp_path, f"127.0.0.1:{port}", "--no-collector.attestation",
                                              "--no-collector.kbs"), check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert f"Error: cannot listen on 127.0.0.1:{port}: " in result.stderr
    assert "Address already in use" in result.stderr


def test_bad_listen_address_is_one_clear_line(tmp_path):
    result = subprocess.run(exporter_args(tmp_path, "::1:9940"), check=False, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "put an IPv6 address in brackets" in result.stderr
