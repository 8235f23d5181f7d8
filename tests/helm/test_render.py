"""helm lint and helm template on the default values and with every switch flipped; every rendered object is
valid for the Kubernetes API (kubernetes-validate, strict: unknown fields are errors)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from tests.helm.render import KUBE_VERSION, VARIANTS, Helm, find

# Prometheus Operator kinds are not in the Kubernetes API schemas; test_prometheus_operator.py checks them.
OPERATOR_KINDS = {"ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_passes(helm: Helm, tmp_path: Path, variant: str) -> None:
    result = helm.lint(VARIANTS[variant], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


# The minor helm renders for, and the newest one kubernetes-validate knows.
API_VERSIONS = sorted({KUBE_VERSION, kubernetes_validate.latest_version()})


@pytest.mark.parametrize("kube_version", API_VERSIONS)
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_rendered_manifest_is_valid_for_the_kubernetes_api(helm: Helm, tmp_path: Path, variant: str,
                                                                 kube_version: str) -> None:
    manifests = helm.manifests(VARIANTS[variant], tmp_path)
    checked = set()
    for manifest in manifests:
        if manifest["kind"] in OPERATOR_KINDS:
            continue
        try:
            kubernetes_validate.validate(manifest, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {exc.message} at {list(exc.path)}")
        checked.add(manifest["kind"])
    assert {"DaemonSet", "Service", "ConfigMap"} <= checked


def test_defaults_render_the_daemonset_with_both_processes(helm: Helm) -> None:
    manifests = helm.manifests()
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds.count("DaemonSet") == 1 and kinds.count("Service") == 1
    assert not find(manifests, "ServiceMonitor") and not find(manifests, "PrometheusRule")
    pod = find(manifests, "DaemonSet")[0]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["exporter", "audit"]


def test_flipped_switches_change_what_is_rendered(helm: Helm, tmp_path: Path) -> None:
    flipped = helm.manifests(VARIANTS["all-switches-flipped"], tmp_path)
    assert find(flipped, "ServiceMonitor") and find(flipped, "PrometheusRule")
    assert not find(flipped, "ServiceAccount")
    assert not [m for m in flipped if m["kind"] == "ConfigMap" and m["metadata"]["name"].endswith("-policy")]
    pod = find(flipped, "DaemonSet")[0]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "tee-sa"
    assert "affinity" not in pod
    volumes = {v["name"] for v in pod["volumes"]}
    assert "libvirt-socket" not in volumes and "evidence" not in volumes
    assert {"kbs-logs", "attestation-logs", "collateral", "web-config", "es-password", "es-ca"} <= volumes


def test_audit_disabled_renders_the_exporter_alone(helm: Helm, tmp_path: Path) -> None:
    manifests = helm.manifests(VARIANTS["audit-disabled"], tmp_path)
    pod = find(manifests, "DaemonSet")[0]["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["containers"]] == ["exporter"]
    assert "initContainers" not in pod
    ports = {p["name"] for p in find(manifests, "Service")[0]["spec"]["ports"]}
    assert ports == {"metrics"}
    endpoints = find(manifests, "ServiceMonitor")[0]["spec"]["endpoints"]
    assert [e["port"] for e in endpoints] == ["metrics"]


def _names(manifests: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(m["kind"], m["metadata"]["name"]) for m in manifests]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_object_names_are_unique(helm: Helm, tmp_path: Path, variant: str) -> None:
    names = _names(helm.manifests(VARIANTS[variant], tmp_path))
    assert len(names) == len(set(names))
