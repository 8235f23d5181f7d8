"""ServiceMonitor and PrometheusRule decode strictly into the Prometheus Operator's own Go types
(tests/helm/crdcheck, built by scripts/install-helm.sh): unknown fields and wrong types are errors."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helm.render import VARIANTS, Helm

OPERATOR_VARIANTS = [name for name, values in VARIANTS.items() if values.get("serviceMonitor", {}).get("enabled")]


def _crdcheck(helm: Helm, documents: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(helm.binary.parent / "crdcheck")], input=yaml.safe_dump_all(documents),
                          capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.parametrize("variant", OPERATOR_VARIANTS)
def test_operator_objects_decode_into_the_operator_types(helm: Helm, tmp_path: Path, variant: str) -> None:
    objects = [m for m in helm.manifests(VARIANTS[variant], tmp_path)
               if m["kind"] in ("ServiceMonitor", "PrometheusRule")]
    assert {m["kind"] for m in objects} >= {"ServiceMonitor"}
    result = _crdcheck(helm, objects)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(objects)} document(s)" in result.stderr


def test_crdcheck_refuses_a_misspelt_endpoint_field(helm: Helm, tmp_path: Path) -> None:
    """The checker itself catches what it is there for."""
    monitor = next(m for m in helm.manifests({"serviceMonitor": {"enabled": True}}, tmp_path)
                   if m["kind"] == "ServiceMonitor")
    monitor["spec"]["endpoints"][0]["scrapeTimout"] = "10s"
    result = _crdcheck(helm, [monitor])
    assert result.returncode == 1
    assert 'unknown field "scrapeTimout"' in result.stdout
