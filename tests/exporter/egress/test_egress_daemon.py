"""The egress collector inside the real daemon: bad policy input stops start-up with the field named; conntrack
unavailable is reported and counted while the exporter keeps serving."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.exporter.helpers import value
from tests.fixtures.prometheus import TeeExporter, process_env, venv_bin, wait_until

NETWORK = {"allow_egress": ["10.0.0.0/8"], "deny_egress": ["0.0.0.0/0"]}


def _policy(tmp_path: Path, runtime: dict | None) -> Path:
    path = tmp_path / "policy.json"
    doc: dict = {"version": "1.0"}
    if runtime is not None:
        doc["runtime_policy"] = runtime
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(("runtime", "message"), [
    ({"network_policy": {"allow_egress": ["10.0.0.0/8"], "deny_egress": ["0.0.0.0/0", "10.1.2.3/8"]}},
     "runtime_policy.network_policy.deny_egress[1]: not a CIDR network"),
    ({"network_policy": {**NETWORK, "log": True}}, "runtime_policy.network_policy.log: unknown field"),
    ({"max_cpus": 8}, "collector.egress: "),  # nothing to judge flows by
    (None, "collector.egress: "),
])
def test_bad_policy_is_a_start_up_error_naming_it(tmp_path: Path, runtime: dict | None, message: str) -> None:
    proc = subprocess.run([venv_bin("tee-exporter"), "--collector.egress", "--libvirt.uri", "test:///default",
                           f"--attestation.policy-file={_policy(tmp_path, runtime)}",
                           f"--journal.path={tmp_path / 'journal.jsonl'}", "--web.listen-address=127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60, env=process_env(), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_missing_netns_is_a_start_up_error_naming_it(tmp_path: Path) -> None:
    proc = subprocess.run([venv_bin("tee-exporter"), "--collector.egress", "--libvirt.uri", "test:///default",
                           f"--attestation.policy-file={_policy(tmp_path, {'network_policy': NETWORK})}",
                           f"--egress.netns={tmp_path / 'no-such-ns'}", f"--journal.path={tmp_path / 'j.jsonl'}",
                           "--web.listen-address=127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60, env=process_env(), check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "egress.netns: " in proc.stderr and "no-such-ns" in proc.stderr and "Traceback" not in proc.stderr


def test_conntrack_unavailable_is_reported_and_counted_not_a_crash(tmp_path: Path) -> None:
    policy = _policy(tmp_path, {"network_policy": NETWORK})
    exporter = TeeExporter(tmp_path, {"libvirt.uri": "test:///default", "attestation.policy-file": str(policy),
                                      "collector.egress": True, "collector.host": False, "collector.qemu": False})
    tools = tmp_path / "bin"  # a host with coreutils and iproute2 but without the conntrack tool
    tools.mkdir()
    for tool in ("stdbuf", "ip"):
        (tools / tool).symlink_to(shutil.which(tool))
    exporter.daemon.env = {**process_env(), "PATH": str(tools)}
    exporter.start()
    try:
        def reported() -> bool:
            text = exporter.metrics()
            return (value(text, "tee_guest_egress_conntrack_errors_total", reason="not_installed") or 0) >= 1 \
                and value(text, "tee_guest_egress_conntrack_up") == 0 \
                and value(text, "tee_exporter_collector_success", collector="egress") == 1
        wait_until(reported, 20, "conntrack to be reported unavailable")
        assert exporter.daemon.running()
        log = exporter.daemon.log_path.read_text()
        assert "egress: conntrack unavailable" in log and "needs Debian's conntrack package" in log
        assert "failed to run command" in log  # stdbuf's own words, naming conntrack
        assert "Traceback" not in log
    finally:
        exporter.stop()
