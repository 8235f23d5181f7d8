"""The PrometheusRules and dashboard ConfigMaps are the repository's alerts/ and dashboards/ files themselves,
read through the chart's symlinks: equal to the files, none missing, none extra."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.helm.render import CHART, REPO, Helm, find

ALERTS = REPO / "alerts"
DASHBOARDS = REPO / "dashboards"
OPERATOR = {"prometheusRule": {"enabled": True}, "serviceMonitor": {"enabled": True}}


def _rule_files() -> dict[str, dict[str, Any]]:
    """alerts/*.yml|yaml that are Prometheus rule files (a top-level "groups"), by chart-relative path."""
    files = {}
    for path in sorted([*ALERTS.glob("*.yml"), *ALERTS.glob("*.yaml")]):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "groups" in doc:
            files[f"alerts/{path.name}"] = doc
    return files


def _rendered_rules(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["annotations"]["tee-monitor/source-file"]: m["spec"]
            for m in find(manifests, "PrometheusRule")}


def test_chart_reads_alerts_and_dashboards_through_symlinks_to_the_repository() -> None:
    assert (CHART / "alerts").resolve() == ALERTS.resolve()
    assert (CHART / "dashboards").resolve() == DASHBOARDS.resolve()


def test_prometheus_rules_equal_the_rule_files_in_alerts(helm: Helm, tmp_path: Path) -> None:
    rendered = _rendered_rules(helm.manifests(OPERATOR, tmp_path))
    files = _rule_files()
    assert files, "alerts/ holds no rule files"
    assert sorted(rendered) == sorted(files)
    for path, doc in files.items():
        assert rendered[path] == {"groups": doc["groups"]}, f"{path} differs from its PrometheusRule"


def test_every_rule_file_the_promtool_tests_load_is_deployed(helm: Helm, tmp_path: Path) -> None:
    rendered = _rendered_rules(helm.manifests(OPERATOR, tmp_path))
    tested = set()
    for test_file in (ALERTS / "tests").glob("*.y*ml"):
        for rule_file in yaml.safe_load(test_file.read_text()).get("rule_files", []):
            tested.add(f"alerts/{(test_file.parent / rule_file).resolve().relative_to(ALERTS.resolve())}")
    assert tested, "no promtool test names a rule file"
    assert tested <= set(rendered)


def test_prometheus_template_expressions_reach_prometheus_unrendered(helm: Helm, tmp_path: Path) -> None:
    """Helm must not evaluate {{ $labels.x }} in annotations: that is Prometheus' template, not the chart's."""
    rendered = json.dumps(_rendered_rules(helm.manifests(OPERATOR, tmp_path)))
    in_files = sum(json.dumps(doc).count("{{ $labels.") for doc in _rule_files().values())
    assert rendered.count("{{ $labels.") == in_files > 0


def test_alert_rules_select_the_jobs_the_service_monitor_sets(helm: Helm, tmp_path: Path) -> None:
    monitor = find(helm.manifests(OPERATOR, tmp_path), "ServiceMonitor")[0]
    jobs = {r["replacement"] for e in monitor["spec"]["endpoints"] for r in e["relabelings"]
            if r["targetLabel"] == "job"}
    assert jobs == {"tee-exporter", "tee-audit"}
    selectors = set()
    for doc in _rule_files().values():
        for group in doc["groups"]:
            for rule in group["rules"]:
                selectors |= set(re.findall(r'job=~"([^"]+)"', rule["expr"]))
                selectors |= {re.escape(j) for j in re.findall(r'job="([^"]+)"', rule["expr"])}
    for selector in selectors:
        assert any(re.fullmatch(selector, job) for job in jobs), f"job selector {selector!r} matches no job"


def _dashboard_configmaps(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["annotations"]["tee-monitor/source-file"]: m for m in find(manifests, "ConfigMap")
            if "tee-monitor/source-file" in m["metadata"].get("annotations", {})}


def test_every_dashboard_is_a_sidecar_configmap_holding_the_file_unchanged(helm: Helm) -> None:
    rendered = _dashboard_configmaps(helm.manifests())
    files = {f"dashboards/{p.name}": p for p in DASHBOARDS.glob("*.json")}
    assert sorted(rendered) == sorted(files)
    for path, file in files.items():
        configmap = rendered[path]
        assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert configmap["data"] == {file.name: file.read_text()}


def _chart_copy_with_dashboards(tmp_path: Path, dashboards: dict[str, str]) -> Path:
    """The chart with its dashboards symlink pointing at a directory of our own."""
    chart = tmp_path / "tee-monitor"
    shutil.copytree(CHART, chart, symlinks=True, ignore=shutil.ignore_patterns("dashboards", "alerts"))
    (chart / "alerts").symlink_to(ALERTS)
    own = tmp_path / "own-dashboards"
    own.mkdir()
    for name, text in dashboards.items():
        (own / name).write_text(text)
    (chart / "dashboards").symlink_to(own)
    return chart


def test_dashboards_keep_their_exact_bytes_and_get_valid_names(helm: Helm, tmp_path: Path) -> None:
    texts = {
        "TEE VM Performance.json": '{"title": "perf", "expr": "rate(x[5m]) > 0 <tab>\\t"}\n',
        "attestation_success.json": '{\n  "title": "att",\n  "templating": {"list": [{"name": "datasource"}]}\n}',
    }
    chart = _chart_copy_with_dashboards(tmp_path, texts)
    rendered = _dashboard_configmaps(helm.manifests(chart=chart))
    assert sorted(rendered) == sorted(f"dashboards/{n}" for n in texts)
    for name, text in texts.items():
        configmap = rendered[f"dashboards/{name}"]
        assert list(configmap["data"].values()) == [text]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", configmap["metadata"]["name"])
        assert re.fullmatch(r"[-._a-zA-Z0-9]+", next(iter(configmap["data"])))


def test_broken_dashboard_json_fails_the_render_naming_the_file(helm: Helm, tmp_path: Path) -> None:
    chart = _chart_copy_with_dashboards(tmp_path, {"broken.json": '{"title": '})
    result = helm.template(chart=chart)
    assert result.returncode != 0
    assert "dashboards/broken.json is not valid JSON" in result.stderr


def test_packaged_chart_carries_the_alerts_and_dashboards_themselves(helm: Helm, tmp_path: Path) -> None:
    """helm package follows the symlinks: the archive holds the files' content, not links."""
    result = helm.run("package", "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    archive = next(tmp_path.glob("tee-monitor-*.tgz"))
    unpacked = tmp_path / "unpacked"
    shutil.unpack_archive(archive, unpacked)
    packaged = unpacked / "tee-monitor"
    assert not (packaged / "alerts").is_symlink()
    for path in _rule_files():
        assert (packaged / path).read_bytes() == (REPO / path).read_bytes()
    assert not list(packaged.glob("alerts/tests/*")), "promtool tests are excluded by .helmignore"
    for dashboard in DASHBOARDS.glob("*.json"):
        assert (packaged / "dashboards" / dashboard.name).read_bytes() == dashboard.read_bytes()
    # The packaged chart renders the same rules as the source tree.
    assert _rendered_rules(helm.manifests(OPERATOR, tmp_path, chart=packaged)) == \
        _rendered_rules(helm.manifests(OPERATOR, tmp_path))


def test_rendered_rules_pass_promtool(helm: Helm, tmp_path: Path) -> None:
    """The rules as Prometheus gets them from the operator (after helm's YAML round trip) still load."""
    rendered = _rendered_rules(helm.manifests(OPERATOR, tmp_path))
    files = []
    for path, spec in rendered.items():
        out = tmp_path / Path(path).name
        out.write_text(yaml.safe_dump(spec))
        files.append(str(out))
    result = subprocess.run(["promtool", "check", "rules", *files], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(files)
