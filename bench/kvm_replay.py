"""What the libvirt test driver cannot show: the cost of KVM guests' full statistics (vCPU/KVM, block, balloon).

``replay``: in a fresh process holding the exporter's own imports, N domains each carrying the statistics libvirt
11.3 returned for a real 2-vCPU KVM guest here (tests/exporter/data/qemu_kvm_domstats.json, 122 keys), turned
into the libvirt collector's families and the exposition text, as one scrape does after the bulk call. Prints
the median time per scrape, the peak RSS, and the series per domain as JSON. (libvirt-python's conversion of the
typed parameters into those dicts is not included; each scrape copies them, as libvirt hands fresh ones over.)

``bulk_call_ab``: the one ``getAllDomainStats`` call against the real qemu:///system, the stats groups of before
(0: every group) and after (the groups read), alternating, on whatever guests run there.

    .venv/bin/python bench/kvm_replay.py replay 1000 7
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "tests" / "exporter" / "data" / "qemu_kvm_domstats.json"


def _vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def replay(count: int, scrapes: int) -> dict[str, float]:
    sys.path.insert(0, str(ROOT))
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    import exporter.cli  # noqa: F401  (the exporter's imports: the RSS baseline is the exporter process's)
    from exporter.collectors.libvirt import DomainRecord, domain_families
    from exporter.collectors.libvirt_vcpu import OtherExits, vcpu_families
    from exporter.virt.domain_xml import parse_domain_xml

    stats = json.loads(RECORDED.read_text())
    infos = [parse_domain_xml(f"<domain type='kvm'><name>kvm-{i:05d}</name>"
                              f"<uuid>7ee30000-0000-4000-8000-{i:012d}</uuid><memory unit='MiB'>512</memory>"
                              "<vcpu>2</vcpu><launchSecurity type='sev-snp'/></domain>") for i in range(count)]
    other = OtherExits()

    class Replay:
        def collect(self):  # type: ignore[no-untyped-def]
            records = [DomainRecord(info, dict(stats)) for info in infos]
            yield from domain_families(records)
            yield from vcpu_families(((r.info, r.stats) for r in records), False, other)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Replay())  # type: ignore[arg-type]
    times, body = [], b""
    for _ in range(scrapes):
        start = time.perf_counter()
        body = generate_latest(registry)
        times.append(time.perf_counter() - start)
    series = sum(1 for line in body.decode().splitlines() if not line.startswith("#") and 'domain="' in line)
    return {"median_s": statistics.median(times), "rss_mb": _vm_hwm_mb(), "series_per_domain": series / count}


def bulk_call_ab(uri: str, calls: int, rounds: int) -> dict[str, float]:
    import libvirt

    sys.path.insert(0, str(ROOT))
    from exporter.collectors.libvirt import STATS_GROUPS

    conn = libvirt.open(uri)
    flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
    sides: dict[str, list[float]] = {"all_groups": [], "read_groups": []}
    domains = len(conn.getAllDomainStats(STATS_GROUPS, flags))
    for _ in range(rounds):
        for side, groups in (("all_groups", 0), ("read_groups", STATS_GROUPS)):
            start = time.perf_counter()
            for _ in range(calls):
                conn.getAllDomainStats(groups, flags)
            sides[side].append((time.perf_counter() - start) / calls)
    conn.close()
    return {"domains": domains, **{f"{k}_median_s": statistics.median(v) for k, v in sides.items()},
            **{f"{k}_spread_s": max(v) - min(v) for k, v in sides.items()}}


if __name__ == "__main__":
    if sys.argv[1] == "replay":
        print(json.dumps(replay(int(sys.argv[2]), int(sys.argv[3]))))
    else:
        print(json.dumps(bulk_call_ab(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))))
