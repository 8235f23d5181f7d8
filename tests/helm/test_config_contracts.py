"""What the chart writes into the two processes' configuration is what they accept, and every path it names is
mounted in the container that reads it (writable where the process writes)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import click
import pytest
import yaml

from audit import config as audit_config
from exporter import config as exporter_config
from exporter.attest.policy import parse_policy
from exporter.cli import main as exporter_main
from tests.helm.render import VARIANTS, Helm, container, one

EXPORTER_PATH_KEYS = ("journal.path", "path.procfs", "path.sysfs", "path.cgroupfs", "attestation.evidence-dir",
                      "attestation.policy-file", "attestation.collateral-dir", "attestation.log-path",
                      "kbs.log-path", "web.config.file", "attestation.trust-root", "host.qgs-socket")
EXPORTER_WRITES = ("journal.path", "attestation.evidence-dir")
AUDIT_PATH_KEYS = ("source", "store", "spool.dir", "signing-key", "es.ca-file", "es.api-key-file",
                   "es.password-file", "web.config.file")
AUDIT_WRITES = ("store", "spool.dir")


def _config(manifests: list[dict[str, Any]], suffix: str) -> dict[str, Any]:
    return yaml.safe_load(one(manifests, "ConfigMap", suffix)["data"]["config.yml"])


def _write(tmp_path: Path, name: str, cfg: dict[str, Any]) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


def _mount_for(ctr: dict[str, Any], path: str) -> dict[str, Any] | None:
    """The deepest volumeMount holding ``path`` (a directory mount, or the file itself)."""
    target = PurePosixPath(path)
    holders = [m for m in ctr.get("volumeMounts", []) if target.is_relative_to(m["mountPath"])]
    return max(holders, key=lambda m: len(m["mountPath"]), default=None)


def _paths(cfg: dict[str, Any], keys: tuple[str, ...]) -> list[tuple[str, str]]:
    out = []
    for key in keys:
        value = cfg.get(key)
        for item in value if isinstance(value, list) else [value] if value else []:
            out.append((key, item))
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_exporter_accepts_the_rendered_config(helm: Helm, tmp_path: Path, variant: str) -> None:
    cfg = _config(helm.manifests(VARIANTS[variant], tmp_path), "-exporter")
    settings = exporter_config.load(_write(tmp_path, "exporter.yml", cfg), {})
    assert settings.journal_path == Path("/var/lib/tee-monitor/journal/journal.jsonl")
    assert settings.proc_root == Path("/host/proc")


@pytest.mark.parametrize("variant", ["defaults", "all-switches-flipped", "es-api-key"])
def test_shipper_accepts_the_rendered_config(helm: Helm, tmp_path: Path, variant: str) -> None:
    manifests = helm.manifests(VARIANTS[variant], tmp_path)
    cfg = _config(manifests, "-audit")
    # --chain comes from the container's arguments (the node name), like the real start-up.
    settings = audit_config.load(_write(tmp_path, "audit.yml", cfg), {"chain": "node-1"})
    exporter_cfg = _config(manifests, "-exporter")
    assert settings.sources == (Path(exporter_cfg["journal.path"]),)
    assert settings.signing_key is not None


def test_rendered_policy_is_accepted_by_the_policy_parser(helm: Helm, tmp_path: Path) -> None:
    # The seed's policy exactly as operators copy it (issue 14), sgx_tcb and network_policy included.
    policy = {"version": "1.0",
              "attestation_policy": {"tee_type": "tdx",
                                     "min_tcb_level": {"sgx_tcb": "0xFFFFFFFFFFFFFFFF", "tdx_tcb": "0x03000000"},
                                     "allowed_measurements": ["sha384:" + "ab" * 48],
                                     "enforce_debug_disabled": True, "require_secure_boot": True},
              "runtime_policy": {"max_memory": "16GB", "max_cpus": 8,
                                 "allowed_devices": ["virtio-net", "virtio-blk"],
                                 "network_policy": {"allow_egress": ["10.0.0.0/8"], "deny_egress": ["0.0.0.0/0"]}}}
    manifests = helm.manifests({"exporter": {"attestation": {"policy": policy}}}, tmp_path)
    text = one(manifests, "ConfigMap", "-policy")["data"]["policy.json"]
    parsed = parse_policy(yaml.safe_load(text))
    assert parsed.attestation is not None and parsed.attestation.tee_type == "tdx"
    assert parsed.runtime is not None and parsed.runtime.max_cpus == 8
    assert parsed.runtime.network is not None and parsed.runtime.network.judge("10.1.1.1").verdict == "allowed"


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_configured_path_is_mounted_in_the_container_that_uses_it(helm: Helm, tmp_path: Path,
                                                                        variant: str) -> None:
    manifests = helm.manifests(VARIANTS[variant], tmp_path)
    checks = [("exporter", "-exporter", EXPORTER_PATH_KEYS, EXPORTER_WRITES)]
    if VARIANTS[variant].get("audit", {}).get("enabled", True):
        checks.append(("audit", "-audit", AUDIT_PATH_KEYS, AUDIT_WRITES))
    for name, suffix, keys, writes in checks:
        ctr = container(manifests, name)
        for key, path in _paths(_config(manifests, suffix), keys):
            mount = _mount_for(ctr, path)
            assert mount is not None, f"{name}: {key}={path} is not under any volumeMount"
            assert bool(mount.get("readOnly")) == (key not in writes), f"{name}: {key} mount {mount}"


def test_listen_ports_match_the_container_and_service_ports(helm: Helm) -> None:
    manifests = helm.manifests()
    exporter_cfg, audit_cfg = _config(manifests, "-exporter"), _config(manifests, "-audit")
    declared = {p["name"]: p["containerPort"] for name in ("exporter", "audit")
                for p in container(manifests, name)["ports"]}
    assert exporter_cfg["web.listen-address"] == f":{declared['metrics']}" == ":9940"
    assert audit_cfg["web.listen-address"] == f":{declared['audit-metrics']}" == ":9941"
    assert audit_cfg["alertmanager.listen-address"] == f":{declared['alertmanager']}"
    service_ports = {p["name"]: p["targetPort"] for p in one(manifests, "Service")["spec"]["ports"]}
    assert set(service_ports.values()) == set(declared)


def _cli_options(command: click.Command) -> set[str]:
    return {opt for param in command.params for opt in getattr(param, "opts", [])}


def test_container_arguments_are_real_cli_flags(helm: Helm) -> None:
    from audit.cli import main as audit_main

    manifests = helm.manifests()
    exporter, audit = container(manifests, "exporter"), container(manifests, "audit")
    assert exporter["command"] == ["tee-exporter"]
    assert {a.split("=")[0] for a in exporter["args"]} <= _cli_options(exporter_main)
    assert audit["command"] == ["tee-audit"] and audit["args"][0] == "ship"
    ship = audit_main.commands["ship"]  # type: ignore[attr-defined]
    assert {a.split("=")[0] for a in audit["args"][1:]} <= _cli_options(ship)


def test_chain_and_host_name_follow_the_node_not_the_pod(helm: Helm) -> None:
    """A replaced pod gets a new host name; the chain and the journal's host.name must not change with it."""
    manifests = helm.manifests()
    for name, flag in (("exporter", "--host.name"), ("audit", "--chain")):
        ctr = container(manifests, name)
        assert f"{flag}=$(NODE_NAME)" in ctr["args"]
        env = {e["name"]: e for e in ctr["env"]}
        assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_collector_switches_cover_exactly_the_exporters_collectors(helm: Helm) -> None:
    from exporter.collectors import SPECS

    cfg = _config(helm.manifests(), "-exporter")
    switches = {k.removeprefix("collector.") for k in cfg if k.startswith("collector.") and k != "collector.timeout"}
    assert switches == {spec.name for spec in SPECS}


def test_qgs_socket_directory_is_mounted_by_default_and_can_be_left_out(helm: Helm, tmp_path: Path) -> None:
    """The QGS probe needs the host's socket: mounted read-only, the exporter pointed at it; off, neither."""
    on = helm.manifests()
    assert _config(on, "-exporter")["host.qgs-socket"] == "/host/run/tdx-qgs/qgs.socket"
    volume = next(v for v in one(on, "DaemonSet")["spec"]["template"]["spec"]["volumes"] if v["name"] == "qgs-socket")
    assert volume["hostPath"] == {"path": "/var/run/tdx-qgs", "type": "DirectoryOrCreate"}
    off = helm.manifests({"hostPaths": {"qgsSocketDir": ""}}, tmp_path)
    assert "host.qgs-socket" not in _config(off, "-exporter")
    assert all(m["name"] != "qgs-socket" for m in container(off, "exporter")["volumeMounts"])
