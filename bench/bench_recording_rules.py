"""What the recording rules buy a dashboard: panel queries over recorded series against the same queries with
the rules' expressions inlined, on one real Prometheus holding an hour of a host with many guests.

    .venv/bin/python bench/bench_recording_rules.py [--domains 200] [--repeat 5]

Synthetic per-guest series (the libvirt collector's metric names, every guest with its tee_type) are written as
OpenMetrics and turned into TSDB blocks with `promtool tsdb create-blocks-from openmetrics`; the guest recording
rules of alerts/recording.rules.yml are backfilled with `promtool tsdb create-blocks-from rules` against a first
Prometheus; a second Prometheus serves both. Each panel query of the guest dashboards that reads a recorded series
is run as a range query (1 hour, 30 s step, as Grafana does) both ways; the table prints median latencies and the
inlined/recorded ratio. Both variants run in the same process against the same server, interleaved.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Self

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fixtures.prometheus import Daemon, free_port, http_get, wait_until

STEP = 30
SPAN = 3600
GUEST_GROUP = "tee.recording.domain"
DASHBOARDS = ("tee-vm-performance", "tee-encryption-overhead")
TEE_TYPES = ("none", "none", "sev", "sev-es", "sev-snp", "tdx")
COUNTERS = {  # metric -> per-step increase range
    "tee_domain_cpu_seconds_total": (5, 60), "tee_domain_block_read_bytes_total": (0, 4e7),
    "tee_domain_block_write_bytes_total": (0, 4e7), "tee_domain_block_read_requests_total": (0, 4000),
    "tee_domain_block_write_requests_total": (0, 4000), "tee_domain_network_receive_bytes_total": (0, 3e7),
    "tee_domain_network_transmit_bytes_total": (0, 3e7), "tee_vm_exits_total": (1e4, 5e5),
}
_VAR_MATCHERS = re.compile(r"\{[^}]*\}")


def openmetrics(domains: int, start: int) -> str:
    """One hour of a host with ``domains`` guests, 30 s apart, in OpenMetrics text."""
    rng = random.Random(7)
    steps = range(start, start + SPAN + 1, STEP)
    lines: list[str] = []
    base = 'instance="bench:9940",job="tee-exporter"'
    lines.append("# TYPE tee_domain_info gauge")
    for d in range(domains):
        tee = TEE_TYPES[d % len(TEE_TYPES)]
        labels = f'{base},domain="vm{d}",uuid="u{d}",tee_type="{tee}",debug_allowed="false"'
        lines += [f"tee_domain_info{{{labels}}} 1 {t}" for t in steps]
    for name, value in (("tee_domain_vcpus", 4), ("tee_domain_memory_bytes", 2**31),
                        ("tee_domain_memory_max_bytes", 2**32)):
        lines.append(f"# TYPE {name} gauge")
        for d in range(domains):
            lines += [f'{name}{{{base},domain="vm{d}"}} {value} {t}' for t in steps]
    for name, (low, high) in COUNTERS.items():
        family = name.removesuffix("_total")
        lines.append(f"# TYPE {family} counter")
        extra = ',device="vda"' if "block" in name else ',interface="vnet0"' if "network" in name else ""
        for d in range(domains):
            value = 0.0
            for t in steps:
                value += rng.uniform(low, high)
                lines.append(f'{name}{{{base},domain="vm{d}"{extra}}} {value:.0f} {t}')
    return "\n".join(lines) + "\n# EOF\n"


def guest_rules() -> dict[str, str]:
    groups = yaml.safe_load((ROOT / "alerts" / "recording.rules.yml").read_text())["groups"]
    group = next(g for g in groups if g["name"] == GUEST_GROUP)
    return {rule["record"]: rule["expr"].strip() for rule in group["rules"]}


def panel_queries(rules: dict[str, str]) -> list[tuple[str, str, str]]:
    """(panel, query over recorded series, same query with the rules inlined), Grafana's "All" selection."""
    found = []
    for name in DASHBOARDS:
        dashboard = json.loads((ROOT / "dashboards" / f"{name}.json").read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"]
                used = [record for record in rules if re.search(re.escape(record) + r"\{", expr)]
                if not used:
                    continue
                recorded = inlined = _VAR_MATCHERS.sub("", expr.replace("$__rate_interval", "1m"))
                for record in used:
                    inlined = inlined.replace(record, f"({rules[record]})")
                found.append((f"{name}/{panel['title']}", recorded, inlined))
    return found


class Prom:
    def __init__(self, data: Path, log: Path) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        config = data.parent / "prometheus.yml"
        config.write_text("global: {}\n")
        self.daemon = Daemon("prometheus", ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
                                            f"--web.listen-address={self.url.removeprefix('http://')}",
                                            "--storage.tsdb.retention.time=30d", "--log.level=warn"], log)

    def __enter__(self) -> Self:
        self.daemon.start()
        self.daemon.wait_ready(f"{self.url}/-/ready", timeout=120)
        return self

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop()

    def range_query(self, expr: str, start: int) -> tuple[float, int]:
        query = urllib.parse.urlencode({"query": expr, "start": start, "end": start + SPAN, "step": STEP})
        began = time.perf_counter()
        body = json.loads(http_get(f"{self.url}/api/v1/query_range?{query}", timeout=120))
        elapsed = time.perf_counter() - began
        return elapsed, len(body["data"]["result"])


def build_tsdb(work: Path, domains: int, start: int) -> Path:
    data = work / "data"
    source = work / "input.om"
    source.write_text(openmetrics(domains, start))
    subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "-q", str(source), str(data)],
                   check=True, timeout=600)
    rules_file = work / "guest.rules.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": GUEST_GROUP, "interval": f"{STEP}s", "rules": [
        {"record": record, "expr": expr} for record, expr in guest_rules().items()]}]}))
    with Prom(data, work / "prom-backfill.log") as prom:
        wait_until(lambda: prom.range_query("count(tee_domain_info)", start)[1], 60, "the raw blocks loaded")
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "rules", "-q", f"--url={prom.url}",
                        f"--start={start}", f"--end={start + SPAN}", f"--output-dir={data}", str(rules_file)],
                       check=True, timeout=600, stderr=(work / "backfill.log").open("w"))
    return data


def measure(prom: Prom, queries: list[tuple[str, str, str]], start: int, repeat: int) -> list[tuple]:
    rows = []
    for panel, recorded, inlined in queries:
        times: dict[str, list[float]] = {"recorded": [], "inlined": []}
        series = {}
        prom.range_query(recorded, start), prom.range_query(inlined, start)  # warm the caches
        for _ in range(repeat):
            for kind, expr in (("recorded", recorded), ("inlined", inlined)):
                elapsed, series[kind] = prom.range_query(expr, start)
                times[kind].append(elapsed)
        rec, inl = statistics.median(times["recorded"]), statistics.median(times["inlined"])
        rows.append((panel, series["recorded"], series["inlined"], rec * 1000, inl * 1000, inl / rec))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--domains", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    start = (int(time.time()) - 6 * 3600) // 3600 * 3600  # well before the head block
    queries = panel_queries(guest_rules())
    with tempfile.TemporaryDirectory(prefix="tee-bench-") as tmp:
        work = Path(tmp)
        data = build_tsdb(work, args.domains, start)
        with Prom(data, work / "prom.log") as prom:
            wait_until(lambda: prom.range_query("count(tee_cpu_utilization_percent)", start)[1], 60,
                       "the backfilled recorded series loaded")
            rows = measure(prom, queries, start, args.repeat)
    print(f"{args.domains} guests, range query 1h at {STEP}s step, median of {args.repeat}")
    print(f"{'panel':<58} {'series':>6} {'recorded ms':>12} {'inlined ms':>11} {'inlined/recorded':>17}")
    for panel, n_rec, n_inl, rec, inl, ratio in rows:
        series = f"{n_rec}" if n_rec == n_inl else f"{n_rec}/{n_inl}"
        print(f"{panel:<58} {series:>6} {rec:>12.1f} {inl:>11.1f} {ratio:>16.1f}x")
    total_rec, total_inl = sum(r[3] for r in rows), sum(r[4] for r in rows)
    print(f"{'all panels above (one dashboard load)':<58} {'':>6} {total_rec:>12.1f} {total_inl:>11.1f} "
          f"{total_inl / total_rec:>16.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
