"""The whole product running for real, once per module:

- tee-exporter "host" on the real libvirtd (QEMU/KVM) with a small real guest (disk and NIC, so every per-guest
  counter moves), the attestation evidence directory, the attestation-service and key-broker logs and the policy;
- tee-exporter "demo" on libvirt's test driver (the confidential SEV/SNP guests this machine cannot run, two of
  them with debugging allowed), with a SEV host's misc cgroup and one Kata SNP process;
- tee-audit ship tailing both journals into a fresh Elasticsearch data stream, with its Alertmanager receiver;
- Prometheus scraping all three with alerts/*.rules.yml, sending to Alertmanager configured from
  alerts/alertmanager.yml, whose security route posts to tee-audit.

Nothing is faked in between: the assertions read Prometheus' and Elasticsearch's HTTP APIs and run
`tee-audit verify` against Elasticsearch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.fixtures.libvirtd import start_libvirtd
from tests.fixtures.prometheus import (
    AlertmanagerServer,
    Daemon,
    PrometheusServer,
    TeeExporter,
    free_port,
    process_env,
    venv_bin,
    wait_until,
    write_demo_host_files,
)

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "exporter" / "demo"
ATTESTATION_DEMO = DEMO / "attestation"
RULE_FILES = sorted((ROOT / "alerts").glob("*.rules.yml"))


@dataclass
class Stack:
    prometheus: PrometheusServer
    alertmanager: AlertmanagerServer
    es_url: str
    data_stream: str
    chain: str
    public_key: Path
    evidence_dir: Path
    workdir: Path


def _guest_xml(name: str, disk: Path) -> str:
    """64 MiB, one vCPU, a raw disk and a tap NIC: it sits in the firmware, but block, net, CPU and KVM exit
    counters all exist, which is what the dashboards read."""
    return f"""<domain type='kvm'>
  <name>{name}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{disk}'/>
      <target dev='vda' bus='virtio'/></disk>
    <interface type='ethernet'><model type='virtio'/></interface>
  </devices>
</domain>"""


@pytest.fixture(scope="module")
def real_guest_factory(libvirtd: str) -> Iterator[Callable[[], str]]:
    """Starts a transient KVM guest on demand (after the exporter is up, so its start is a lifecycle event)."""
    import libvirt

    # QEMU runs unprivileged: its disk lives in a world-traversable directory, not in pytest's 0700 tmp.
    disk_dir = Path(tempfile.mkdtemp(prefix="tee-e2e-", dir="/var/tmp"))
    os.chmod(disk_dir, 0o755)
    started: list[str] = []

    def start() -> str:
        name = f"tee-e2e-{uuid.uuid4().hex[:8]}"
        disk = disk_dir / f"{name}.img"
        with disk.open("wb") as handle:
            handle.truncate(8 * 1024 * 1024)
        conn = libvirt.open(libvirtd)
        try:
            conn.createXML(_guest_xml(name, disk), 0)
        finally:
            conn.close()
        started.append(name)
        return name

    yield start
    # A fresh connection by name: other tests may restart libvirtd meanwhile (the guest survives that).
    start_libvirtd()
    conn = libvirt.open(libvirtd)
    for name in started:
        try:
            conn.lookupByName(name).destroy()
        except libvirt.libvirtError:
            pass
    conn.close()
    shutil.rmtree(disk_dir, ignore_errors=True)


def _es_url(elasticsearch: Any) -> str:
    for attr in ("url", "base_url", "address"):
        if isinstance(getattr(elasticsearch, attr, None), str):
            return getattr(elasticsearch, attr).rstrip("/")
    return str(elasticsearch).rstrip("/")


def alertmanager_config(webhook: str) -> str:
    """alerts/alertmanager.yml as shipped, pointed at this tee-audit and with short timers for a test."""
    config = yaml.safe_load((ROOT / "alerts" / "alertmanager.yml").read_text())
    for receiver in config["receivers"]:
        for hook in receiver.get("webhook_configs", []):
            hook["url"] = webhook
    for route in [config["route"], *config["route"].get("routes", [])]:
        route.update({"group_wait": "1s", "group_interval": "2s"})
    return yaml.safe_dump(config)


def _keygen(workdir: Path) -> tuple[Path, Path]:
    out = workdir / "keys"
    subprocess.run([venv_bin("tee-audit"), "keygen", "--out", str(out)], check=True, capture_output=True,
                   timeout=60)
    return out / "audit.key", out / "audit.pub"


def _start_shipper(workdir: Path, journals: list[Path], es_url: str, namespace: str, chain: str,
                   key: Path) -> tuple[Daemon, str, str]:
    metrics, webhook = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    config = {"source": [str(j) for j in journals], "es": es_url, "es.namespace": namespace,
              "signing-key": str(key), "chain": chain, "spool.dir": str(workdir / "spool"),
              "checkpoint.every-seconds": 1.0, "verify.every-seconds": 2.0, "source.poll-seconds": 0.2,
              "web.listen-address": metrics, "alertmanager.listen-address": webhook}
    (workdir / "ship.yml").write_text(yaml.safe_dump(config))
    subprocess.run([venv_bin("tee-audit"), "setup", "--es", es_url, "--es.namespace", namespace], check=True,
                   capture_output=True, timeout=120)  # the administrator's step: ship never writes templates
    daemon = Daemon("tee-audit ship", [venv_bin("tee-audit"), "ship", f"--config.file={workdir / 'ship.yml'}"],
                    workdir / "ship.log", env=process_env())
    daemon.start()
    daemon.wait_ready(f"http://{metrics}/metrics")
    return daemon, metrics, webhook


def _exporters(workdir: Path) -> tuple[TeeExporter, TeeExporter, Path]:
    evidence, logs = workdir / "evidence", workdir / "logs"
    for folder in (evidence, logs, workdir / "quarantine"):
        folder.mkdir()
    for log in ("kbs.log", "as.log"):
        (logs / log).touch()
    policy = str(ATTESTATION_DEMO / "policy.json")
    (workdir / "host").mkdir()
    host = TeeExporter(workdir / "host", {
        "libvirt.uri": "qemu:///system", "attestation.policy-file": policy,
        "attestation.evidence-dir": str(evidence), "attestation.quarantine-dir": str(workdir / "quarantine"),
        "attestation.collateral-dir": str(ATTESTATION_DEMO / "collateral"),
        "attestation.log-path": [str(logs / "as.log")], "kbs.log-path": [str(logs / "kbs.log")],
    })
    (workdir / "demo").mkdir()
    # egress: the demo's confidential guests are watched (their flow series exist at 0 from discovery)
    demo = TeeExporter(workdir / "demo", {"libvirt.uri": f"test://{DEMO / 'testnode.xml'}",
                                          "attestation.policy-file": policy, "collector.egress": True,
                                          **write_demo_host_files(workdir / "demo")})
    return host, demo, logs


@pytest.fixture(scope="module")
def stack(elasticsearch: Any, libvirtd: str, real_guest_factory: Callable[[], str],
          prometheus_servers: Callable[..., PrometheusServer],
          alertmanager_servers: Callable[[str], AlertmanagerServer],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("e2e")
    es_url = _es_url(elasticsearch)
    run_id = uuid.uuid4().hex[:10]
    namespace, chain = f"e2e{run_id}", f"e2e-host-{run_id}"
    host, demo, logs = _exporters(workdir)
    key, public_key = _keygen(workdir)
    daemons: list[Any] = []
    try:
        daemons += [host.start(), demo.start()]
        shipper, shipper_metrics, webhook = _start_shipper(workdir, [host.journal, demo.journal], es_url,
                                                           namespace, chain, key)
        daemons.append(shipper)
        alertmanager = alertmanager_servers(alertmanager_config(f"http://{webhook}/alerts"))
        prom = prometheus_servers(scrape={"tee-exporter": [host.address, demo.address],
                                          "tee-audit": [shipper_metrics]},
                                  rule_files=RULE_FILES, alertmanagers=[alertmanager.address])
        wait_until(prom.targets_up, 60, "every target up")
        real_guest_factory()
        _feed(workdir / "evidence", logs)
        # rate() ignores a counter's first sample: once the first verdicts are scraped, a second wave (one good,
        # one tampered report) makes both outcomes increase under Prometheus' eyes.
        wait_until(lambda: prom.query('tee_attestation_attempts_total{tee_type="sev-snp", outcome="success"}'), 60,
                   "the first attestation verdicts scraped")
        copy_evidence(workdir / "evidence", "snp-milan-2.bin", 1, "wave2")
        copy_evidence(workdir / "evidence", "snp-milan-2-tampered.bin", 1, "wave2")
        yield Stack(prom, alertmanager, es_url, f"logs-tee.audit-{namespace}", chain, public_key,
                    workdir / "evidence", workdir)
    finally:
        for daemon in reversed(daemons):
            daemon.stop()
        _delete_data_stream(es_url, f"logs-tee.audit-{namespace}")


def _feed(evidence: Path, logs: Path) -> None:
    """The demo's own feeder: certificates, then each report or quote renamed into place; log lines appended."""
    subprocess.run(["bash", str(ATTESTATION_DEMO / "feed.sh"), str(evidence), str(logs)], check=True,
                   timeout=60)


def copy_evidence(evidence: Path, name: str, count: int, prefix: str) -> None:
    """``count`` copies of one demo SNP report, each with its certificates beside it, renamed into place the way
    a producer should (the watcher never sees half a file)."""
    source = ATTESTATION_DEMO / "evidence" / name
    for i in range(count):
        copy = f"{prefix}-{i}-{name}"
        shutil.copytree(source.with_name(name + ".certs"), evidence / f"{copy}.certs")
        tmp = evidence / f".{copy}.tmp"
        shutil.copyfile(source, tmp)
        tmp.rename(evidence / copy)


def _delete_data_stream(es_url: str, name: str) -> None:
    import requests

    try:
        requests.delete(f"{es_url}/_data_stream/{name}", timeout=10)
    except requests.RequestException:
        pass
