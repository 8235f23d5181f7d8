"""Secrets are referenced, never rendered; the pod runs with the least privilege the collectors allow."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helm.render import ALL_SWITCHES_FLIPPED, VARIANTS, Helm, container, find, one


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_chart_renders_no_secret_object(helm: Helm, tmp_path: Path, variant: str) -> None:
    assert not find(helm.manifests(VARIANTS[variant], tmp_path), "Secret")


@pytest.mark.parametrize("field, value", [
    ("password", "hunter2"),
    ("apiKey", "VnVhQ2ZHY0JDZGJrUW0tZTVhT3g6dWkybHAyYXhUTm1zeWFrdzl0dk5udw=="),
])
def test_schema_has_no_place_for_a_credential_value(helm: Helm, tmp_path: Path, field: str, value: str) -> None:
    result = helm.template({"audit": {"elasticsearch": {"enabled": True, field: value}}}, tmp_path)
    assert result.returncode != 0
    assert f"additional properties '{field}' not allowed" in result.stderr
    assert value not in result.stdout


def test_secret_references_become_volumes_projecting_only_the_named_key(helm: Helm, tmp_path: Path) -> None:
    manifests = helm.manifests(ALL_SWITCHES_FLIPPED, tmp_path)
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    secrets = {v["secret"]["secretName"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    assert set(secrets) == {"exporter-web", "audit-web", "audit-signing", "es-password", "es-ca"}
    assert secrets["audit-signing"]["items"] == [{"key": "ed25519.pem", "path": "ed25519.pem"}]
    assert secrets["es-password"]["items"] == [{"key": "password", "path": "password"}]
    for secret in secrets.values():
        assert secret["defaultMode"] == 0o440


def test_signing_key_secret_defaults_to_a_name_derived_from_the_release(helm: Helm) -> None:
    pod = one(helm.manifests(), "DaemonSet")["spec"]["template"]["spec"]
    signing = next(v for v in pod["volumes"] if v["name"] == "signing-key")
    assert signing["secret"]["secretName"] == "tm-tee-monitor-signing-key"


@pytest.mark.parametrize("name", ["exporter", "audit", "audit-dirs"])
def test_containers_drop_capabilities_and_keep_the_root_filesystem_read_only(helm: Helm, name: str) -> None:
    ctx = container(helm.manifests(), name)["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"]["drop"] == ["ALL"]
    assert ctx.get("privileged", False) is False
    assert set(ctx["capabilities"].get("add", [])) <= {"CHOWN"}


def test_only_the_exporter_and_the_directory_setup_run_as_root(helm: Helm) -> None:
    manifests = helm.manifests()
    audit = container(manifests, "audit")["securityContext"]
    assert audit["runAsNonRoot"] is True and audit["runAsUser"] != 0
    assert container(manifests, "exporter")["securityContext"]["runAsUser"] == 0
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert not pod.get("hostPID") and not pod.get("hostNetwork")


def test_every_container_has_requests_and_limits(helm: Helm) -> None:
    pod = one(helm.manifests(), "DaemonSet")["spec"]["template"]["spec"]
    for ctr in pod["containers"] + pod["initContainers"]:
        assert {"cpu", "memory"} <= set(ctr["resources"]["requests"]), ctr["name"]
        assert {"cpu", "memory"} <= set(ctr["resources"]["limits"]), ctr["name"]


def test_host_state_lives_on_host_paths_and_host_views_are_read_only(helm: Helm) -> None:
    manifests = helm.manifests()
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    host = {v["name"]: v["hostPath"]["path"] for v in pod["volumes"] if "hostPath" in v}
    assert host["journal"] == "/var/lib/tee-monitor/journal"
    assert host["spool"] == "/var/lib/tee-monitor/spool"
    exporter_mounts = {m["name"]: m for m in container(manifests, "exporter")["volumeMounts"]}
    for view in ("proc", "sys", "libvirt-socket"):
        assert exporter_mounts[view]["readOnly"] is True
    audit_mounts = {m["name"]: m for m in container(manifests, "audit")["volumeMounts"]}
    assert audit_mounts["journal"]["readOnly"] is True
    assert not audit_mounts["spool"].get("readOnly")


def test_default_affinity_requires_a_tee_capable_node(helm: Helm) -> None:
    pod = one(helm.manifests(), "DaemonSet")["spec"]["template"]["spec"]
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    keys = {expr["key"] for term in terms for expr in term["matchExpressions"]}
    assert keys == {f"feature.node.kubernetes.io/cpu-security.{t}.enabled" for t in ("sev", "sev.es", "sev.snp", "tdx")}
    assert all(expr["values"] == ["true"] for term in terms for expr in term["matchExpressions"])


def test_egress_collector_gets_the_host_network_and_net_admin_only(helm: Helm, tmp_path: Path) -> None:
    manifests = helm.manifests({"exporter": {"collectors": {"egress": True}}}, tmp_path)
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert not pod.get("hostPID")
    exporter = container(manifests, "exporter")["securityContext"]
    assert exporter["capabilities"] == {"drop": ["ALL"], "add": ["NET_ADMIN"]}
    assert exporter["readOnlyRootFilesystem"] is True and exporter["allowPrivilegeEscalation"] is False
    assert "add" not in container(manifests, "audit")["securityContext"]["capabilities"]
