"""The dashboards: generated from code, complete (variables, units), and every query valid PromQL that returns
data from a real Prometheus scraping a real tee-exporter wherever the metrics it reads exist."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.dashboards import queries
from tests.fixtures.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "dashboards" / "generate.py"
# The six views the project promises; the encryption-overhead one compares confidential and plain guests.
EXPECTED = {"tee-vm-performance", "tee-attestation", "tee-encryption-overhead", "tee-capacity",
            "tee-key-access", "tee-audit-pipeline"}

# What the demo host (libvirt's test driver, a misc cgroup with SEV ASIDs, one Kata SNP process, the host platform
# files of tests/fixtures/prometheus.py) must feed. Not fed there: the SEV-SNP status panels (no /dev/sev on a
# test machine; the decoder is tested in tests/exporter/test_platform.py) and the QGS connect time (its socket is
# a stale one, probed as down).
DEMO_HOST_PANELS = {"tee-vm-performance/Guests", "tee-vm-performance/vCPUs", "tee-vm-performance/Memory used",
                    "tee-vm-performance/Memory", "tee-capacity/Guests by TEE type", "tee-capacity/Encrypted memory",
                    "tee-capacity/TEE capacity used", "tee-capacity/Guests running and capacity",
                    "tee-capacity/TEE support", "tee-capacity/Unmanaged confidential guests",
                    "tee-audit-pipeline/Exporter journal", "tee-capacity/Unmanaged guest size",
                    "tee-capacity/Unmanaged guest vCPUs", "tee-capacity/KVM TEE enabled",
                    "tee-capacity/TEE requested on the kernel command line", "tee-capacity/Key limits per cgroup",
                    "tee-capacity/Key allocations refused", "tee-capacity/PSP firmware", "tee-capacity/TDX module",
                    "tee-capacity/TDX runtime updates left", "tee-capacity/TDX quote-generation service",
                    "tee-capacity/Platform files malformed"}
DEMO_HOST_RECORDS = {"tee:domain_memory_used:ratio", "tee:host_memory_encrypted_bytes:sum", "tee:host_domains:count",
                     "tee:host_tee_capacity_used:ratio"}


def _generator():
    spec = importlib.util.spec_from_file_location("dashboards_generate", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def test_committed_json_is_what_the_generator_produces() -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr


def test_drift_check_fails_when_committed_json_differs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _generator()
    monkeypatch.setattr(generator, "OUT_DIR", tmp_path)
    assert generator.main([]) == 0
    edited = tmp_path / "tee-capacity.json"
    edited.write_text(edited.read_text().replace("TEE capacity used", "capacity"))
    assert generator.main(["--check"]) == 1


def test_all_promised_dashboards_exist() -> None:
    assert set(queries.dashboards()) == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_dashboard_has_datasource_host_and_tee_type_variables(name: str) -> None:
    dashboard = queries.dashboards()[name]
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"host", "tee_type"} <= set(variables)
    for panel in queries.panels(dashboard):
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"]), panel["title"]


def test_guest_dashboard_has_a_domain_variable() -> None:
    variables = {var["name"] for var in queries.dashboards()["tee-vm-performance"]["templating"]["list"]}
    assert "domain" in variables


def test_every_panel_has_a_unit_and_a_description() -> None:
    for name, dashboard in queries.dashboards().items():
        for panel in queries.panels(dashboard):
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{name}/{panel['title']}"
            assert panel.get("description"), f"{name}/{panel['title']}"


def test_encryption_overhead_compares_by_tee_type() -> None:
    for panel in queries.panels(queries.dashboards()["tee-encryption-overhead"]):
        assert all("by (tee_type)" in t["expr"] or "{{tee_type}}" in t["legendFormat"]
                   for t in panel["targets"]), panel["title"]


@pytest.mark.parametrize("query", queries.panel_queries(), ids=lambda q: q.id)
def test_panel_query_is_valid_promql(demo_prometheus: PrometheusServer, query: queries.PanelQuery) -> None:
    demo_prometheus.query(query.expr)  # raises with Prometheus' parse or evaluation error


def test_panel_queries_return_data_where_their_metrics_exist(demo_prometheus: PrometheusServer) -> None:
    present = demo_prometheus.metric_names()
    checked, empty = [], []
    for query in queries.panel_queries():
        if queries.raw_metrics(query.expr) <= present:
            checked.append(query.id)
            if not demo_prometheus.query(query.expr):
                empty.append(f"{query.id}: {query.expr}")
    assert not empty, "queries without data although their metrics exist:\n" + "\n".join(empty)
    # What the demo host on libvirt's test driver feeds (its bulk stats hold only the domain state, so CPU and
    # I/O panels are proven by the end-to-end test on a real QEMU domain): a vacuous pass is a failure.
    assert DEMO_HOST_PANELS <= set(checked), DEMO_HOST_PANELS - set(checked)


def test_variable_queries_return_values(demo_prometheus: PrometheusServer) -> None:
    present = demo_prometheus.metric_names()
    for dashboard, variable, selector, label in queries.variable_queries():
        if not queries.raw_metrics(selector) <= present:
            continue
        values = demo_prometheus.api(f"label/{label}/values", **{"match[]": selector})
        assert values, f"{dashboard}: variable {variable} ({selector}) has no values"


def test_recording_rules_evaluate_without_errors(demo_prometheus: PrometheusServer) -> None:
    rules = demo_prometheus.rules()
    assert {rule["name"] for rule in rules if rule["type"] == "recording"} == set(queries.recording_rules())
    bad = [f"{rule['name']}: {rule.get('lastError')}" for rule in rules if rule["health"] != "ok"]
    assert not bad, bad


def test_recording_rules_return_data_where_their_inputs_exist(demo_prometheus: PrometheusServer) -> None:
    present = demo_prometheus.metric_names()
    recorded = queries.recording_rules()
    checked, empty = [], []
    for name, expr in recorded.items():
        if queries.raw_metrics(expr, recorded) <= present:
            checked.append(name)
            if not demo_prometheus.query(name):
                empty.append(name)
    assert not empty, f"recorded series without data although their inputs exist: {empty}"
    assert DEMO_HOST_RECORDS <= set(checked), DEMO_HOST_RECORDS - set(checked)


def known_metrics(prometheus: PrometheusServer) -> set[str]:
    """What a real tee-exporter exposes on the demo host, plus what the docs promise for the rest (metrics the
    test driver cannot produce: CPU, block and network counters, the shipper's, egress...)."""
    return prometheus.metric_names() | queries.documented_metrics()


def test_every_metric_a_panel_reads_is_exposed_or_documented(demo_prometheus: PrometheusServer) -> None:
    """A panel whose metric is misspelt shows "No data" (or, behind `or vector(0)`, a reassuring 0) forever; the
    data tests above skip queries whose metrics are absent (none of the six fallback queries has all its metrics
    on the demo host), so names are checked here, fallback or not."""
    known = known_metrics(demo_prometheus)
    unknown = {q.id: sorted(names) for q in queries.panel_queries() if (names := queries.unknown_metrics(q.expr, known))}
    unknown |= {f"{d}/${v}": sorted(names) for d, v, selector, _ in queries.variable_queries()
                if (names := queries.unknown_metrics(selector, known))}
    assert not unknown, unknown


def test_a_misspelt_metric_is_caught_even_behind_or_vector_0(demo_prometheus: PrometheusServer) -> None:
    known = known_metrics(demo_prometheus)
    fallback = [q for q in queries.panel_queries() if queries.has_fallback(q.expr)]
    assert len(fallback) == 6, [q.id for q in fallback]  # the six panels that show 0 rather than "No data"
    still_data = []
    for query in fallback:
        name = queries.names_in(query.expr)[0]  # a raw metric or a recorded series
        misspelt = re.sub(rf"\b{re.escape(name)}\b", name + "x", query.expr, count=1)  # the guarded part
        assert queries.unknown_metrics(misspelt, known) == {name + "x"}, query.id
        if demo_prometheus.query(misspelt):
            still_data.append(query.id)
    # the point of the check: Prometheus itself "returns data" for most of the misspelt queries
    assert len(still_data) >= 4, still_data


def test_documented_metric_names_expand_alternatives_and_drop_labels(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("| `tee_domain_block_{read,write}_bytes_total` | `tee_audit_records_in_total{source}` |\n"
                   "`tee_vm_creation_duration_seconds` |\n")
    assert queries.documented_metrics([doc]) == {
        "tee_domain_block_read_bytes_total", "tee_domain_block_write_bytes_total", "tee_audit_records_in_total",
        *(f"tee_vm_creation_duration_seconds{s}" for s in ("", "_bucket", "_count", "_sum")),
        *(f"{n}{s}" for n in ("tee_domain_block_read_bytes_total", "tee_domain_block_write_bytes_total",
                              "tee_audit_records_in_total") for s in queries.HISTOGRAM_SERIES)}
