"""Running helm on the chart and reading what it renders: shared by the chart tests."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "tee-monitor"
# The Kubernetes minor the manifests are validated for; helm is built to assume the same (scripts/install-helm.sh).
KUBE_VERSION = "1.34.0"


@dataclass(frozen=True)
class Helm:
    binary: Path

    def run(self, *args: str, chart: Path = CHART) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.binary), *args, str(chart)], capture_output=True, text=True,
                              timeout=120, check=False)

    def template(self, values: dict[str, Any] | None = None, tmp: Path | None = None,
                 chart: Path = CHART) -> subprocess.CompletedProcess[str]:
        args = ["template", "tm", "--namespace", "monitoring", "--kube-version", KUBE_VERSION]
        if values:
            assert tmp is not None, "values need a directory for the values file"
            path = tmp / f"values-{len(list(tmp.glob('values-*.yaml')))}.yaml"
            path.write_text(yaml.safe_dump(values))
            args += ["--values", str(path)]
        return self.run(*args, chart=chart)

    def lint(self, values: dict[str, Any] | None = None, tmp: Path | None = None) -> subprocess.CompletedProcess[str]:
        args = ["lint", "--strict", "--kube-version", KUBE_VERSION]
        if values:
            assert tmp is not None
            path = tmp / "lint-values.yaml"
            path.write_text(yaml.safe_dump(values))
            args += ["--values", str(path)]
        return self.run(*args)

    def manifests(self, values: dict[str, Any] | None = None, tmp: Path | None = None,
                  chart: Path = CHART) -> list[dict[str, Any]]:
        result = self.template(values, tmp, chart)
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(manifests: list[dict[str, Any]], kind: str, name_suffix: str = "") -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)]


def one(manifests: list[dict[str, Any]], kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = find(manifests, kind, name_suffix)
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {[m['metadata']['name'] for m in found]}"
    return found[0]


def container(manifests: list[dict[str, Any]], name: str) -> dict[str, Any]:
    pod = one(manifests, "DaemonSet")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] + pod.get("initContainers", []) if c["name"] == name)


# Values that turn every switch away from its default, with the Secret references each needs.
ALL_SWITCHES_FLIPPED: dict[str, Any] = {
    "serviceAccount": {"create": False, "name": "tee-sa"},
    "automountServiceAccountToken": True,
    "teeNodeAffinity": {"enabled": False},
    "exporter": {
        "collectors": {"libvirt": False, "host": False, "lifecycle": False, "qemu": False,
                       "attestation": False, "kbs": False},
        "journal": {"fsync": True},
        "attestation": {"evidenceDir": "", "collateralDir": "/var/lib/tdx/collateral",
                        "logDir": "/var/log/trustee", "logFiles": ["as.log", "as-2.log"], "policy": None},
        "kbs": {"logDir": "/var/log/kbs", "logFiles": ["kbs.log"]},
        "webConfig": {"secretName": "exporter-web", "key": "web.yml"},
        "extraConfig": {"attestation.trust-root": ["/etc/tee-exporter/trust/extra-root.pem"]},
        "extraArgs": ["--log.level=debug"],
        "extraVolumeMounts": [{"name": "trust", "mountPath": "/etc/tee-exporter/trust", "readOnly": True}],
    },
    "extraVolumes": [{"name": "trust", "configMap": {"name": "extra-trust-roots"}}],
    "audit": {
        "alertmanager": {"enabled": False},
        "elasticsearch": {"enabled": True, "url": "https://es.example:9200", "namespace": "prod",
                          "username": "tee-audit", "passwordSecret": {"name": "es-password"},
                          "caSecret": {"name": "es-ca"},
                          "setup": {"username": "tee-setup", "passwordSecret": {"name": "es-setup-password"}}},
        "localStore": True,
        "webConfig": {"secretName": "audit-web"},
        "signingKeySecret": {"name": "audit-signing", "key": "ed25519.pem"},
        "extraConfig": {"checkpoint.every-records": 100},
    },
    "serviceMonitor": {"enabled": True, "instanceFromNodeName": False,
                       "exporter": {"scheme": "https", "tlsConfig": {"insecureSkipVerify": False},
                                    "basicAuth": {"username": {"name": "scrape", "key": "user"},
                                                  "password": {"name": "scrape", "key": "password"}}}},
    "prometheusRule": {"enabled": True},
    "dashboards": {"enabled": False},
}

# The other Elasticsearch credential shape and a disabled shipper: the remaining branches.
API_KEY_AUTH: dict[str, Any] = {
    "audit": {"elasticsearch": {"enabled": True, "apiKeySecret": {"name": "es-api-key"},
                                "setup": {"apiKeySecret": {"name": "es-setup-api-key"}}}},
    "serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
}
AUDIT_DISABLED: dict[str, Any] = {"audit": {"enabled": False}, "serviceMonitor": {"enabled": True}}

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "all-switches-flipped": ALL_SWITCHES_FLIPPED,
    "es-api-key": API_KEY_AUTH,
    "audit-disabled": AUDIT_DISABLED,
}
