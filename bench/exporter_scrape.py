"""Scrape time and peak RSS of tee-exporter vs Debian's prometheus-libvirt-exporter, same libvirtd, same run.

Both exporters talk to the real libvirtd over its UNIX socket (``test+unix://``: libvirtd's test driver loaded
with a generated node file of N running domains), so both pay the same RPC costs. For each N the first scrape
(tee-exporter reads and parses every domain XML once then) is reported separately from the steady-state median.
The two exporters alternate over ``--rounds`` rounds; the table gives the median over rounds and the spread
(max - min of the per-round medians). After its sequential scrapes, tee-exporter gets a burst of
``--concurrent`` simultaneous scrapes; its peak RSS and thread count during the burst are reported. (The Debian
exporter is not burst: at 1,000 domains its 300 scrapes queue on libvirtd for minutes per round.) Each side's
series per domain (samples with a ``domain`` label / domains exposed) is reported too.

Then, since the test driver returns no vCPU, block or balloon statistics, the cost of a real KVM guest's full
statistics at the largest N is replayed (``bench/kvm_replay.py``), and the one bulk call is timed on the real
guests of qemu:///system, if any run, with all stats groups (before) and with the groups read (after).

    .venv/bin/python bench/exporter_scrape.py [--sizes 10,100,1000] [--scrapes 7] [--rounds 3] [--concurrent 300]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEBIAN = "/usr/bin/prometheus-libvirt-exporter"


def node_file(path: Path, count: int) -> Path:
    """N running domains, a quarter each plain, SEV, SEV-ES and SEV-SNP, each with a disk and a NIC."""
    kinds = ["", "<launchSecurity type='sev'><policy>0x1</policy></launchSecurity>",
             "<launchSecurity type='sev'><policy>0x5</policy></launchSecurity>",
             "<launchSecurity type='sev-snp'><policy>0x30000</policy></launchSecurity>"]
    doms = "".join(
        f"<domain type='test'><name>bench-{i:05d}</name><uuid>7ee20000-0000-4000-8000-{i:012d}</uuid>"
        f"<memory unit='MiB'>512</memory><vcpu>1</vcpu><os><type>hvm</type></os>{kinds[i % 4]}"
        f"<devices><disk type='file' device='disk'><source file='/img/{i}.img'/><target dev='vda' bus='virtio'/>"
        f"</disk><interface type='network'><source network='default'/><model type='virtio'/></interface>"
        "</devices></domain>" for i in range(count))
    path.write_text(f"<node>{doms}</node>")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    return -1


def peak_rss_mb(pid: int) -> float:
    return status_field(pid, "VmHWM") / 1024


@dataclass
class Result:
    first: float
    median: float
    rss_mb: float
    domains: int
    burst_rss_mb: float = float("nan")
    burst_threads: int = 0
    burst_ok: int = 0
    series_per_domain: float = 0.0  # samples carrying a domain label, divided by the domains exposed


def burst(url: str, pid: int, clients: int) -> tuple[float, int, int]:
    """``clients`` simultaneous scrapes: (peak RSS MB after, peak thread count during, how many got 200)."""
    gate = threading.Barrier(clients + 1)
    ok: list[bool] = []

    def client() -> None:
        gate.wait()
        try:
            with urllib.request.urlopen(url, timeout=300) as resp:
                resp.read()
                ok.append(resp.status == 200)
        except OSError:  # 503 (over --web.max-requests) or a refused connection
            ok.append(False)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    gate.wait()
    peak_threads = 0
    while any(t.is_alive() for t in threads):
        peak_threads = max(peak_threads, status_field(pid, "Threads"))
        time.sleep(0.01)
    return peak_rss_mb(pid), peak_threads, sum(ok)


def scrape(url: str) -> tuple[float, str]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=300) as resp:
        body = resp.read().decode()
    return time.perf_counter() - start, body


def measure(cmd: list[str], port: int, scrapes: int, domain_metric: str, concurrent: int) -> Result:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{cmd[0]} did not start") from None
                time.sleep(0.05)
        first, body = scrape(url)
        times = [scrape(url)[0] for _ in range(scrapes)]
        domains = sum(1 for line in body.splitlines() if line.startswith(domain_metric + "{"))
        per_domain = sum(1 for line in body.splitlines() if not line.startswith("#") and 'domain="' in line)
        result = Result(first, statistics.median(times), peak_rss_mb(proc.pid), domains,
                        series_per_domain=per_domain / max(domains, 1))
        if concurrent:
            result.burst_rss_mb, result.burst_threads, result.burst_ok = burst(url, proc.pid, concurrent)
        return result
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def tee_cmd(uri: str, port: int, tmp: Path) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "tee-exporter"), "--libvirt.uri", uri, "--web.listen-address",
            f"127.0.0.1:{port}", "--journal.path", str(tmp / "journal.jsonl"), "--no-collector.attestation",
            "--no-collector.kbs", "--collector.timeout", "120"]


def debian_cmd(uri: str, port: int) -> list[str]:
    return [DEBIAN, "--libvirt.uri", uri, "--web.listen-address", f"127.0.0.1:{port}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--scrapes", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrent", type=int, default=300)
    args = parser.parse_args()
    subprocess.run(["bash", str(ROOT / "scripts" / "start-libvirtd.sh")], check=True)
    have_debian = shutil.which(DEBIAN) is not None
    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for n in (int(s) for s in args.sizes.split(",")):
            uri = f"test+unix://{node_file(tmp / f'node-{n}.xml', n)}"
            tee_runs, deb_runs = [], []
            for _ in range(args.rounds):  # alternate the two sides so drift on the shared machine hits both
                port = free_port()
                tee_runs.append(measure(tee_cmd(uri, port, tmp), port, args.scrapes, "tee_domain_state",
                                        args.concurrent))
                if have_debian:
                    port = free_port()
                    deb_runs.append(measure(debian_cmd(uri, port), port, args.scrapes,
                                            "libvirt_domain_info_virtual_cpus", 0))
            rows.append((n, tee_runs, deb_runs))
            print(f"{n} domains measured", file=sys.stderr, flush=True)
    print_table(rows, args.concurrent)
    print_kvm_costs(max(int(n) for n in args.sizes.split(",")), args.scrapes, args.rounds)
    return 0


def print_kvm_costs(count: int, scrapes: int, rounds: int) -> None:
    """The test driver returns no vCPU, block or balloon statistics: replay a real KVM guest's (bench/kvm_replay.py)
    in fresh processes, and time the bulk call's groups on the real guests of qemu:///system, if any run."""
    helper = [sys.executable, str(ROOT / "bench" / "kvm_replay.py")]
    runs = [json.loads(subprocess.run([*helper, "replay", str(count), str(scrapes)], check=True,
                                      capture_output=True, text=True).stdout) for _ in range(rounds)]
    med = statistics.median(r["median_s"] for r in runs)
    spread = max(r["median_s"] for r in runs) - min(r["median_s"] for r in runs)
    print(f"KVM replay, {count} domains x 122 recorded stats: families + exposition {med:.3f} s (± {spread:.3f}) per"
          f" scrape, peak RSS {statistics.median(r['rss_mb'] for r in runs):.1f} MB,"
          f" {runs[0]['series_per_domain']:.1f} series per domain")
    ab = subprocess.run([*helper, "ab", "qemu:///system", "20", str(rounds)], capture_output=True, text=True,
                        check=False)
    if ab.returncode != 0 or json.loads(ab.stdout)["domains"] == 0:
        print("bulk call A/B: no running guest on qemu:///system")
        return
    res = json.loads(ab.stdout)
    print(f"bulk call on {res['domains']} real guest(s): all groups (before) {res['all_groups_median_s'] * 1e3:.2f} ms"
          f" (± {res['all_groups_spread_s'] * 1e3:.2f}), the groups read (after)"
          f" {res['read_groups_median_s'] * 1e3:.2f} ms (± {res['read_groups_spread_s'] * 1e3:.2f})")


def _med(runs: list[Result], attr: str) -> float:
    return statistics.median(getattr(r, attr) for r in runs)


def _spread(runs: list[Result], attr: str) -> float:
    values = [getattr(r, attr) for r in runs]
    return max(values) - min(values)


def print_table(rows: list, concurrent: int) -> None:
    print(f"{'domains':>7} | {'tee first s':>11} {'tee med s':>9} {'±':>6} {'tee RSS MB':>10} {'tee n':>5} "
          f"{'burst RSS':>9} {'thr':>4} {'ok':>4} | {'deb med s':>9} {'±':>6} {'deb RSS MB':>10} {'deb n':>5} "
          f"| {'time ratio':>10} {'RSS ratio':>9} | {'tee s/dom':>9} {'deb s/dom':>9}")
    for n, tee, deb in rows:
        line = (f"{n:>7} | {_med(tee, 'first'):>11.3f} {_med(tee, 'median'):>9.3f} {_spread(tee, 'median'):>6.3f} "
                f"{_med(tee, 'rss_mb'):>10.1f} {tee[0].domains:>5} {_med(tee, 'burst_rss_mb'):>9.1f} "
                f"{max(r.burst_threads for r in tee):>4} {min(r.burst_ok for r in tee):>4} |")
        if not deb:
            line += " (prometheus-libvirt-exporter not installed)"
        else:
            line += (f" {_med(deb, 'median'):>9.3f} {_spread(deb, 'median'):>6.3f} {_med(deb, 'rss_mb'):>10.1f} "
                     f"{deb[0].domains:>5} | "
                     f"{_med(tee, 'median') / _med(deb, 'median'):>10.3f} "
                     f"{_med(tee, 'rss_mb') / _med(deb, 'rss_mb'):>9.2f} | "
                     f"{tee[0].series_per_domain:>9.1f} {deb[0].series_per_domain:>9.1f}")
        print(line)
    print("time ratio = tee-exporter median scrape / Debian exporter median scrape (lower is better); ± = spread of"
          f" the per-round medians; n = domains each exposed; burst = {concurrent} simultaneous scrapes: peak RSS"
          " (MB), peak threads, scrapes answered 200 (the rest got 503 beyond --web.max-requests); s/dom = samples with"
          " a domain label per exposed domain")


if __name__ == "__main__":
    sys.exit(main())
