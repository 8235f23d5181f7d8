"""The Grafana dashboards of tee-monitor, as code (grafana-foundation-sdk, Grafana 11.6 schema).

    .venv/bin/python dashboards/generate.py          # rewrite dashboards/*.json
    .venv/bin/python dashboards/generate.py --check  # exit 1 if the committed JSON differs from this file

The committed JSON is what Grafana (and the Helm chart's sidecar ConfigMaps) load; this file is what people edit.
Every dashboard has the same variables: `datasource`, `host` (the host part of `instance`, so one value selects
both the exporter and the shipper of a host), `tee_type` and, where guests are shown, `domain`. Queries prefer the
recorded series of alerts/recording.rules.yml, so a panel and the alert about it show the same number.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    ValueMap,
    ValueMappingResult,
    VariableOption,
    VariableRefresh,
    VariableSort,
)

OUT_DIR = Path(__file__).resolve().parent
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
# The instance label is host:port; the host variable holds the host part, so match with an optional port.
HOST = 'instance=~"$host(:[0-9]+)?"'
GUEST = f'{HOST}, tee_type=~"$tee_type", domain=~"$domain"'
TEE = f'{HOST}, tee_type=~"$tee_type"'
TAGS = ["tee-monitor", "confidential-computing"]
TEE_TYPE_SOURCES = "tee_domain_info|tee_host_tee_supported|tee_attestation_attempts_total"

DOMAIN_STATES = {"0": "no state", "1": "running", "2": "blocked", "3": "paused", "4": "shutting down",
                 "5": "shut off", "6": "crashed", "7": "pm suspended"}


# ---- building blocks -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Q:
    """One query of a panel: the PromQL and the legend Grafana draws for each series."""

    expr: str
    legend: str = ""


def _targets(queries: list[Q]) -> list[prometheus.Dataquery]:
    refs = "ABCDEFGH"
    return [prometheus.Dataquery().expr(q.expr).legend_format(q.legend or "__auto").ref_id(refs[i])
            .datasource(DATASOURCE) for i, q in enumerate(queries)]


def ts(title: str, description: str, unit: str, *queries: Q, width: int = 12, stack: bool = False,
       max_val: float | None = None) -> timeseries.Panel:
    panel = (timeseries.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .targets(_targets(list(queries))).height(8).span(width).fill_opacity(10).min(0)
             .legend(common_b.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True)))
    if stack:
        panel = panel.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    if max_val is not None:
        panel = panel.max(max_val)
    return panel


def single(title: str, description: str, unit: str, query: Q, width: int = 6,
           mappings: dict[str, str] | None = None) -> stat.Panel:
    panel = (stat.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .targets(_targets([query])).height(5).span(width)
             .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"])))
    if mappings:
        panel = panel.mappings([_value_map(mappings)])
    return panel


def grid(title: str, description: str, unit: str, query: Q, width: int = 24,
         mappings: dict[str, str] | None = None) -> table.Panel:
    """A table of the latest value of each series (instant query), one row per label set."""
    target = (prometheus.Dataquery().expr(query.expr).instant().format("table").ref_id("A")
              .datasource(DATASOURCE))
    panel = (table.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE)
             .targets([target]).height(8).span(width))
    if mappings:
        panel = panel.mappings([_value_map(mappings)])
    return panel


def _value_map(mappings: dict[str, str]) -> ValueMap:
    return ValueMap(options={value: ValueMappingResult(text=text) for value, text in mappings.items()})


def _variables(host_metric: str, with_domain: bool) -> list:
    variables = [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        _query_var("host", "Host", f'label_values({host_metric}, instance)', regex="/^([^:]+)/"),
        # Guests, host capability and attestation verdicts all carry tee_type; offer every type any of them has.
        _query_var("tee_type", "TEE type",
                   f'label_values({{__name__=~"{TEE_TYPE_SOURCES}", {HOST}}}, tee_type)'),
    ]
    if with_domain:
        variables.append(_query_var("domain", "Domain",
                                    f'label_values(tee_domain_info{{{TEE}}}, domain)'))
    return variables


def _query_var(name: str, label: str, query: str, regex: str = "") -> dash.QueryVariable:
    var = (dash.QueryVariable(name).label(label).datasource(DATASOURCE)
           .query(query)  # the classic label_values() string, which every Grafana 11 understands
           .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
           .multi(True).include_all(True).all_value(".*")
           .current(VariableOption(selected=True, text="All", value="$__all")))
    return var.regex(regex) if regex else var


def _dashboard(uid: str, title: str, description: str, host_metric: str, with_domain: bool) -> dash.Dashboard:
    return (dash.Dashboard(title).uid(uid).description(description).tags(TAGS).editable()
            .time("now-6h", "now").refresh("1m").timezone("browser")
            .variables(_variables(host_metric, with_domain)))


# ---- the dashboards --------------------------------------------------------------------------------------------

def vm_performance() -> dash.Dashboard:
    return (_dashboard("tee-vm-performance", "TEE VM performance",
                       "Per-guest CPU, memory, VM exits, disk and network of confidential and plain guests.",
                       "tee_exporter_build_info", with_domain=True)
            .with_row(dash.Row("Guests"))
            .with_panel(grid("Guests", "Every guest with its TEE type, debug policy and libvirt state.", "none",
                             Q(f'tee_domain_state{{{HOST}, domain=~"$domain"}} * on (instance, job, domain) '
                               f'group_left (tee_type, debug_allowed, uuid) tee_domain_info{{{GUEST}}}'),
                             mappings=DOMAIN_STATES))
            .with_row(dash.Row("CPU and memory"))
            .with_panel(ts("CPU utilization", "CPU time per vCPU: 100% means every vCPU busy.", "percent",
                           Q(f'tee_cpu_utilization_percent{{{GUEST}}}', "{{domain}} ({{tee_type}})")))
            .with_panel(ts("vCPUs", "Virtual CPUs per guest.", "short",
                           Q(f'tee_domain_vcpus{{{HOST}, domain=~"$domain"}} * on (instance, job, domain) '
                             f'group_left (tee_type) tee_domain_info{{{GUEST}}}', "{{domain}}"), stack=True))
            .with_panel(ts("Memory used", "Current (balloon) memory over maximum memory.", "percentunit",
                           Q(f'tee:domain_memory_used:ratio{{{GUEST}}}', "{{domain}} ({{tee_type}})"),
                           max_val=1))
            .with_panel(ts("Memory", "Current memory of each guest.", "bytes",
                           Q(f'tee_domain_memory_bytes{{{HOST}, domain=~"$domain"}} * on (instance, job, domain) '
                             f'group_left (tee_type) tee_domain_info{{{GUEST}}}', "{{domain}}"), stack=True))
            .with_row(dash.Row("vCPUs and VM exits"))
            .with_panel(ts("VM exits by reason", "KVM exits per second by reason (io, mmio, halt, irq, irq_window, "
                           "nmi_window, hypercall, other), summed over vCPUs: what to reduce first.", "ops",
                           Q(f'sum by (domain, reason) (rate(tee_vm_exits_total{{{HOST}, domain=~"$domain"}}[5m]))',
                             "{{domain}} {{reason}}"), stack=True))
            .with_panel(ts("vCPU steal time", "Share of time the vCPU threads waited in the host run queue "
                           "(libvirt vcpu.delay, the guest's steal time), per vCPU.", "percentunit",
                           Q(f'sum by (instance, job, domain) (rate(tee_domain_vcpu_delay_seconds_total{{{HOST}, '
                             f'domain=~"$domain"}}[5m])) / on (instance, job, domain) '
                             f'(tee_domain_vcpus{{{HOST}, domain=~"$domain"}} > 0)', "{{domain}}")))
            .with_row(dash.Row("I/O"))
            .with_panel(ts("Disk throughput", "Bytes read plus written per second.", "Bps",
                           Q(f'tee:domain_block_bytes:rate5m{{{GUEST}}}', "{{domain}} ({{tee_type}})")))
            .with_panel(ts("Disk operations", "Read plus write requests per second.", "iops",
                           Q(f'tee:domain_block_requests:rate5m{{{GUEST}}}', "{{domain}} ({{tee_type}})")))
            .with_panel(ts("Network throughput", "Bytes received plus transmitted per second, with each "
                           "confidential guest's baseline (mean of the last hour) that the traffic alert uses.",
                           "Bps",
                           Q(f'tee:domain_network_bytes:rate5m{{{GUEST}}}', "{{domain}}"),
                           Q(f'tee:domain_network_bytes:avg_rate5m_1h{{{GUEST}}}', "{{domain}} baseline"),
                           width=24))
            .with_row(dash.Row("Network policy"))
            .with_panel(ts("Egress flows by network_policy verdict",
                           "New connections each confidential guest starts per second, judged by the policy's "
                           "runtime_policy.network_policy; any denied flow fires TEEGuestEgressPolicyViolation and "
                           "is journaled with its destination.", "cps",
                           Q(f'sum by (domain, verdict) (rate(tee_guest_egress_flows_total{{{HOST}, '
                             f'domain=~"$domain"}}[5m]))', "{{domain}} {{verdict}}"),
                           width=24)))


def attestation() -> dash.Dashboard:
    return (_dashboard("tee-attestation", "Attestation",
                       "Attestation attempts, success rate, failure reasons, latency and reported TCB.",
                       "tee_exporter_build_info", with_domain=False)
            .with_panel(single("Success rate (5m)", "Share of attempts that verified, all TEE types.",
                               "percentunit",
                               Q(f'sum(rate(tee_attestation_attempts_total{{{TEE}, outcome="success"}}[5m]) '
                                 f'or vector(0)) / sum(rate(tee_attestation_attempts_total{{{TEE}}}[5m]))')))
            .with_panel(single("Failures (10m)", "Failed attempts in the last 10 minutes.", "short",
                               Q(f'sum(tee:attestation_attempts:increase10m{{{TEE}, outcome="failure"}}) '
                                 'or vector(0)')))
            .with_panel(single("Since last success", "Time since the latest verified evidence.", "s",
                               Q(f'time() - max(tee_attestation_last_success_timestamp_seconds{{{TEE}}})')))
            .with_panel(single("Evidence quarantined (1h)", "Unparseable evidence files moved to quarantine.",
                               "short",
                               Q(f'sum(increase(tee_attestation_evidence_errors_total{{{HOST}}}[1h])) '
                                 'or vector(0)')))
            .with_panel(ts("Success rate by TEE type", "Verified attempts over all attempts (5m).",
                           "percentunit",
                           Q(f'tee:attestation_success:ratio_rate5m{{{TEE}}}', "{{instance}} {{tee_type}}"),
                           max_val=1))
            .with_panel(ts("Attempts", "Attempts per second by outcome.", "ops",
                           Q(f'sum by (tee_type, outcome) (rate(tee_attestation_attempts_total{{{TEE}}}'
                             '[$__rate_interval]))', "{{tee_type}} {{outcome}}"), stack=True))
            .with_panel(ts("Failures by reason (10m)", "Why evidence failed: signature, chain, revoked, "
                           "expired, tcb, measurement, debug, policy, parse...", "short",
                           Q(f'sum by (tee_type, reason) (tee:attestation_attempts:increase10m'
                             f'{{{TEE}, outcome="failure"}})', "{{tee_type}} {{reason}}"), stack=True))
            .with_panel(ts("Verification latency", "Time to parse and verify one piece of evidence.", "s",
                           Q(f'tee:attestation_duration_seconds:p95_rate5m{{{TEE}}}', "p95 {{tee_type}}"),
                           Q(f'histogram_quantile(0.5, sum by (tee_type, le) (rate('
                             f'tee_attestation_duration_seconds_bucket{{{TEE}}}[$__rate_interval])))',
                             "p50 {{tee_type}}")))
            .with_panel(ts("Policy violations (1h)", "Policy rules broken by verified evidence.", "short",
                           Q(f'sum by (tee_type, rule) (increase(tee_policy_violations_total{{{TEE}}}[1h]))',
                             "{{tee_type}} {{rule}}")))
            .with_panel(grid("Reported TCB", "TCB component versions of the latest verified evidence.", "none",
                             Q(f'tee_attestation_reported_tcb{{{TEE}}}'), width=12)))


def encryption_overhead() -> dash.Dashboard:
    by_type = "avg by (tee_type)"
    return (_dashboard("tee-encryption-overhead", "Encryption overhead",
                       "Confidential guests next to plain guests on the same hosts: the cost of memory "
                       "encryption in VM exits, CPU and I/O (averages per guest, by TEE type).",
                       "tee_exporter_build_info", with_domain=False)
            .with_panel(ts("VM exits per vCPU", "KVM exits per second per vCPU; confidential guests exit for "
                           "#VC/#VE handling and bounce buffers.", "ops",
                           Q(f'{by_type} (tee:domain_vm_exits_per_vcpu:rate5m{{{TEE}}})', "{{tee_type}}")))
            .with_panel(ts("CPU utilization per guest", "Average CPU utilization of a guest.", "percent",
                           Q(f'{by_type} (tee_cpu_utilization_percent{{{TEE}}})', "{{tee_type}}")))
            .with_panel(ts("Disk throughput per guest", "Average bytes per second read plus written.", "Bps",
                           Q(f'{by_type} (tee:domain_block_bytes:rate5m{{{TEE}}})', "{{tee_type}}")))
            .with_panel(ts("Disk operations per guest", "Average requests per second.", "iops",
                           Q(f'{by_type} (tee:domain_block_requests:rate5m{{{TEE}}})', "{{tee_type}}")))
            .with_panel(ts("Network throughput per guest", "Average bytes per second received plus sent.",
                           "Bps", Q(f'{by_type} (tee:domain_network_bytes:rate5m{{{TEE}}})', "{{tee_type}}")))
            .with_panel(ts("VM creation time (p95)", "Definition or start request to running, per TEE type "
                           "(launch measurement makes confidential guests slower to start).", "s",
                           Q(f'tee:vm_creation_duration_seconds:p95_rate1h{{{TEE}}}', "{{tee_type}}"))))


def capacity() -> dash.Dashboard:
    board = (_dashboard("tee-capacity", "Resources and TEE capacity",
                       "Confidential guest slots (SEV ASIDs, TDX key IDs), encrypted memory and guest counts.",
                       "tee_exporter_build_info", with_domain=False)
            .with_panel(ts("TEE capacity used", "Confidential guests running over the host's slots; "
                           "the alert fires above 90%.", "percentunit",
                           Q(f'tee:host_tee_capacity_used:ratio{{{TEE}}}', "{{instance}} {{tee_type}}"),
                           max_val=1))
            .with_panel(ts("Guests running and capacity", "Confidential guests running against the slots.",
                           "short",
                           Q(f'tee_host_tee_guests_running{{{TEE}}}', "{{instance}} {{tee_type}} running"),
                           Q(f'tee_host_tee_capacity_guests{{{TEE}}}', "{{instance}} {{tee_type}} capacity")))
            .with_panel(grid("TEE support", "TEE types this host's firmware and KVM enable.", "none",
                             Q(f'tee_host_tee_supported{{{TEE}}}'), width=8, mappings={"0": "no", "1": "yes"}))
            .with_panel(ts("Guests by TEE type", "Defined guests (any state).", "short",
                           Q(f'tee:host_domains:count{{{TEE}}}', "{{instance}} {{tee_type}}"), width=8,
                           stack=True))
            .with_panel(ts("Encrypted memory", "Guest memory encrypted by the hardware.", "bytes",
                           Q(f'tee:host_memory_encrypted_bytes:sum{{{TEE}}}', "{{instance}} {{tee_type}}"),
                           width=8, stack=True))
            .with_panel(ts("Unmanaged confidential guests", "Confidential QEMU processes libvirt does not "
                           "manage (Kata, Confidential Containers).", "short",
                           Q(f'sum by (instance, tee_type, managed) (tee_qemu_guests{{{TEE}}})',
                             "{{instance}} {{tee_type}} managed={{managed}}")))
            .with_panel(ts("Lifecycle events", "Guest lifecycle transitions per second.", "ops",
                           Q(f'sum by (tee_type, event) (rate(tee_domain_lifecycle_events_total{{{TEE}}}'
                             '[$__rate_interval]))', "{{tee_type}} {{event}}"), stack=True))
            .with_panel(ts("Unmanaged guest size", "Memory of Kata / Confidential Containers guests, from their "
                           "QEMU command lines.", "bytes",
                           Q(f'sum by (instance, tee_type) (tee_qemu_guest_memory_bytes{{{TEE}}})',
                             "{{instance}} {{tee_type}}"), stack=True))
            .with_panel(ts("Unmanaged guest vCPUs", "Boot vCPUs of Kata / Confidential Containers guests.",
                           "short", Q(f'sum by (instance, tee_type) (tee_qemu_guest_vcpus{{{TEE}}})',
                                      "{{instance}} {{tee_type}}"), stack=True)))
    for panel in platform_panels():
        board = board.with_panel(panel)
    return board


def platform_panels() -> list:
    """The host's TEE platform: what KVM enabled, firmware versions and TCB, key limits, the TDX QGS."""
    return [
        grid("KVM TEE enabled", "kvm_amd / kvm_intel module parameters: what KVM enabled after asking the "
             "firmware. SEV-ES off while SNP is on and the command line asks for it raises an alert.", "none",
             Q(f'tee_host_kvm_tee_enabled{{{TEE}}}'), width=12, mappings={"0": "off", "1": "on"}),
        grid("TEE requested on the kernel command line", "1 unless the kernel command line turns the type off "
             "(module defaults: on for SEV types, off for TDX).", "none",
             Q(f'tee_host_kvm_tee_requested{{{TEE}}}'), width=12, mappings={"0": "off", "1": "on"}),
        ts("Key limits per cgroup", "Keys in use over misc.max of each watched cgroup; the alert fires above 90%.",
           "percentunit", Q(f'tee_host_misc_cgroup_current_guests{{{TEE}}} / on (instance, job, cgroup, tee_type) '
                            f'tee_host_misc_cgroup_max_guests{{{TEE}}}', "{{instance}} {{cgroup}} {{tee_type}}"),
           max_val=1),
        ts("Key allocations refused", "Guest key allocations the kernel refused at misc.max (misc.events).", "ops",
           Q(f'sum by (instance, cgroup, tee_type) (rate(tee_host_misc_cgroup_max_events_total{{{TEE}}}'
             '[$__rate_interval]))', "{{instance}} {{cgroup}} {{tee_type}}")),
        ts("SEV-SNP TCB", "Host firmware TCB (current: installed; reported: what new guest reports carry) next to "
           "the TCB in the latest verified guest evidence; guests below the host's reported TCB raise an alert.",
           "short", Q(f'tee_host_snp_tcb_svn{{{HOST}}}', "{{instance}} host {{tcb}} {{component}}"),
           Q(f'tee_attestation_reported_tcb{{{HOST}, tee_type="sev-snp"}}', "{{instance}} guests {{component}}")),
        grid("SEV-SNP firmware", "SNP_PLATFORM_STATUS: firmware API version and build, read rarely and cached.",
             "none", Q(f'tee_host_snp_firmware_info{{{HOST}}}'), width=12),
        grid("PSP firmware", "AMD PSP TEE and bootloader firmware versions from the ccp driver.", "none",
             Q(f'tee_host_psp_firmware_info{{{HOST}}}'), width=12),
        grid("TDX module", "Loaded TDX module and P-SEAMLDR versions.", "none",
             Q(f'tee_host_tdx_module_info{{{HOST}}}'), width=12),
        ts("TDX runtime updates left", "Runtime TDX module updates the CPU still accepts; at 0 the next update "
           "needs a reboot (alert).", "short",
           Q(f'tee_host_tdx_module_remaining_updates{{{HOST}}}', "{{instance}}"), width=12),
        ts("TDX quote-generation service", "1 when the QGS socket accepts connections; down while TDs run is an "
           "alert.", "none", Q(f'tee_host_qgs_up{{{HOST}}}', "{{instance}} up"), width=12, max_val=1),
        ts("QGS connect time", "Time to connect to the QGS socket.", "s",
           Q(f'tee_host_qgs_connect_seconds{{{HOST}}}', "{{instance}}"), width=12),
        ts("Platform files malformed", "Host platform files (sysfs, procfs, /dev/sev) present but unparseable, "
           "per source; the exporter logs each file once.", "ops",
           Q(f'sum by (instance, source) (rate(tee_host_platform_malformed_total{{{HOST}}}[$__rate_interval]))',
             "{{instance}} {{source}}"), width=24),
    ]


def key_access() -> dash.Dashboard:
    return (_dashboard("tee-key-access", "Key access",
                       "Key-broker (KBS) resource requests: released, denied, unattested.",
                       "tee_exporter_build_info", with_domain=False)
            .with_panel(single("Unattested requests (10m)", "Requests without a valid attestation.", "short",
                               Q(f'sum(tee:kbs_requests:increase10m{{{HOST}, reason="unattested"}}) '
                                 'or vector(0)'), width=8))
            .with_panel(single("Denied requests (10m)", "Requests the broker denied.", "short",
                               Q(f'sum(tee:kbs_requests:increase10m{{{HOST}, outcome="denied"}}) or vector(0)'),
                               width=8))
            .with_panel(single("Unparsed log lines (1h)", "KBS and attestation-service log lines not understood.",
                               "short",
                               Q(f'sum(increase(tee_exporter_log_lines_unparsed_total{{{HOST}}}[1h])) '
                                 'or vector(0)'), width=8))
            .with_panel(ts("Requests", "Requests per second by outcome and resource type.", "reqps",
                           Q(f'tee:kbs_requests:rate5m{{{HOST}}}', "{{outcome}} {{resource_type}}"), stack=True))
            .with_panel(ts("Denials by reason (10m)", "Denied requests by reason.", "short",
                           Q(f'sum by (reason, resource_type) (tee:kbs_requests:increase10m'
                             f'{{{HOST}, outcome="denied"}})', "{{reason}} {{resource_type}}"), stack=True)))


def audit_pipeline() -> dash.Dashboard:
    return (_dashboard("tee-audit-pipeline", "Audit pipeline",
                       "tee-exporter's journal and tee-audit's sources, spool, sinks, checkpoints and chains.",
                       "tee_audit_records_in_total", with_domain=False)
            .with_panel(grid("Chains", "Periodic self-verification of each chain in each sink.", "none",
                             Q(f'tee_audit_chain_intact{{{HOST}}}'), width=12,
                             mappings={"0": "BROKEN", "1": "intact"}))
            .with_panel(ts("Since last checkpoint", "Age of the newest signed checkpoint per chain.", "s",
                           Q(f'tee:audit_checkpoint_age_seconds{{{HOST}}}', "{{instance}} {{chain}}")))
            .with_panel(ts("Records", "Records read from sources and shipped to each sink, per second.", "ops",
                           Q(f'tee:audit_records_in:rate5m{{{HOST}}}', "{{instance}} in"),
                           Q(f'tee:audit_records_shipped:rate5m{{{HOST}}}', "{{instance}} shipped {{sink}}")))
            .with_panel(ts("Lag", "Age of the oldest record not yet acknowledged by every sink.", "s",
                           Q(f'tee_audit_lag_seconds{{{HOST}}}', "{{instance}} {{source}}")))
            .with_panel(ts("Spool depth", "Records waiting in the durable spool.", "short",
                           Q(f'tee_audit_spool_depth_records{{{HOST}}}', "{{instance}}")))
            .with_panel(ts("Spool size", "Bytes of the durable spool on disk.", "bytes",
                           Q(f'tee_audit_spool_bytes{{{HOST}}}', "{{instance}}")))
            .with_panel(ts("Sink and source errors", "Sink failures (retried) and malformed source lines "
                           "(quarantined), per second.", "ops",
                           Q(f'tee:audit_sink_errors:rate5m{{{HOST}}}', "{{instance}} sink {{sink}} {{reason}}"),
                           Q(f'tee:audit_source_errors:rate5m{{{HOST}}}',
                             "{{instance}} source {{source}} {{reason}}")))
            .with_panel(ts("Exporter journal", "Events tee-exporter wrote to its journal per second, and "
                           "events waiting to be written.", "ops",
                           Q(f'rate(tee_exporter_journal_events_total{{{HOST}}}[$__rate_interval])',
                             "{{instance}} written"),
                           Q(f'tee_exporter_journal_backlog_events{{{HOST}}}', "{{instance}} backlog"))))


DASHBOARDS = {
    "tee-vm-performance": vm_performance,
    "tee-attestation": attestation,
    "tee-encryption-overhead": encryption_overhead,
    "tee-capacity": capacity,
    "tee-key-access": key_access,
    "tee-audit-pipeline": audit_pipeline,
}


# ---- output ----------------------------------------------------------------------------------------------------

def render(name: str) -> str:
    """The dashboard's JSON text exactly as committed (sorted keys, so diffs stay readable)."""
    model = DASHBOARDS[name]().build()
    return json.dumps(json.loads(json.dumps(model, cls=JSONEncoder)), indent=2, sort_keys=True) + "\n"


def path_of(name: str) -> Path:
    return OUT_DIR / f"{name}.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only compare with the committed JSON")
    args = parser.parse_args(argv)
    stale = []
    for name in DASHBOARDS:
        text, path = render(name), path_of(name)
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path.name)
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"out of date, run dashboards/generate.py: {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
