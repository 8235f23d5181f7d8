"""values.schema.json refuses wrong values at render time with a message naming the value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.helm.render import Helm

BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("port out of range", {"exporter": {"port": 70000}}, "/exporter/port"),
    ("port as text", {"audit": {"port": "9941"}}, "/audit/port"),
    ("misspelt collector", {"exporter": {"collectors": {"libvrt": False}}}, "libvrt"),
    ("collector switch not a boolean", {"exporter": {"collectors": {"kbs": "no"}}}, "/exporter/collectors/kbs"),
    ("unknown top-level key", {"exporterr": {}}, "exporterr"),
    ("relative host path", {"hostPaths": {"spool": "var/spool"}}, "/hostPaths/spool"),
    ("log file with a directory", {"exporter": {"kbs": {"logDir": "/var/log", "logFiles": ["kbs/kbs.log"]}}},
     "/exporter/kbs/logFiles/0"),
    ("log level", {"exporter": {"logLevel": "verbose"}}, "/exporter/logLevel"),
    ("negative timeout", {"exporter": {"collectorTimeout": 0}}, "/exporter/collectorTimeout"),
    ("policy: unknown field", {"exporter": {"attestation": {"policy": {"version": "1.0", "attestation_polcy": {}}}}},
     "attestation_polcy"),
    ("policy: bad measurement",
     {"exporter": {"attestation": {"policy": {"version": "1.0",
                                              "attestation_policy": {"allowed_measurements": ["sha256:00"]}}}}},
     "/exporter/attestation/policy/attestation_policy/allowed_measurements/0"),
    ("policy: version", {"exporter": {"attestation": {"policy": {"version": "2.0"}}}},
     "/exporter/attestation/policy/version"),
    ("chart-managed exporter key in extraConfig", {"exporter": {"extraConfig": {"journal.path": "/tmp/j"}}},
     "journal.path"),
    ("chart-managed shipper key in extraConfig", {"audit": {"extraConfig": {"signing-key": "/k"}}}, "signing-key"),
    ("secret name not a DNS name", {"audit": {"signingKeySecret": {"name": "My_Key"}}}, "/audit/signingKeySecret/name"),
    ("elasticsearch url scheme", {"audit": {"elasticsearch": {"url": "es:9200"}}}, "/audit/elasticsearch/url"),
    ("data stream namespace with a dash", {"audit": {"elasticsearch": {"namespace": "my-ns"}}},
     "/audit/elasticsearch/namespace"),
    ("scrape interval", {"serviceMonitor": {"interval": "30"}}, "/serviceMonitor/interval"),
    ("image digest", {"image": {"digest": "latest"}}, "/image/digest"),
    ("pull policy", {"image": {"pullPolicy": "Sometimes"}}, "/image/pullPolicy"),
]


@pytest.mark.parametrize("values, where", [(v, w) for _, v, w in BAD_VALUES], ids=[n for n, _, _ in BAD_VALUES])
def test_schema_refuses_bad_value_naming_it(helm: Helm, tmp_path: Path, values: dict[str, Any], where: str) -> None:
    result = helm.template(values, tmp_path)
    assert result.returncode != 0, f"accepted: {values}"
    assert "values don't meet the specifications of the schema" in result.stderr
    assert where in result.stderr, result.stderr


@pytest.mark.parametrize("values, message", [
    ({"audit": {"elasticsearch": {"enabled": True}}}, "audit.elasticsearch.enabled needs credentials"),
    ({"audit": {"elasticsearch": {"enabled": True, "username": "u"}}}, "passwordSecret.name is empty"),
    ({"audit": {"elasticsearch": {"enabled": True, "username": "u", "passwordSecret": {"name": "p"},
                                  "apiKeySecret": {"name": "k"}}}}, "not both"),
])
def test_inconsistent_elasticsearch_credentials_fail_with_a_clear_message(helm: Helm, tmp_path: Path,
                                                                          values: dict[str, Any],
                                                                          message: str) -> None:
    result = helm.template(values, tmp_path)
    assert result.returncode != 0
    assert message in result.stderr


def test_schema_accepts_the_documented_policy_shape(helm: Helm, tmp_path: Path) -> None:
    policy = {"version": "1.0",
              "attestation_policy": {"tee_type": "sev-snp", "min_tcb_level": {"snp": 22, "microcode": "0xd5"},
                                     "enforce_debug_disabled": True},
              "runtime_policy": {"max_memory": "16GB", "max_cpus": 8, "allowed_devices": ["virtio-net"]}}
    result = helm.template({"exporter": {"attestation": {"policy": policy}}}, tmp_path)
    assert result.returncode == 0, result.stderr
