"""Render cost and object sizes of the tee-monitor chart, against helm's own scaffold chart in the same run.

    .venv/bin/python bench/helm_render.py [--renders 10]

Peer: the chart `helm create` generates (Deployment, Service, ServiceAccount, HPA, Ingress switches), rendered
by the same helm binary. It prints the median `helm template` time of each and the ratio, and for tee-monitor
with every object enabled (rules, ServiceMonitor, dashboards) the largest rendered object against the 1 MiB
object size limit (etcd's default request limit) and the whole release against the 1 MiB limit of the Secret
helm stores its release in (gzip-compressed, as helm does). Needs scripts/install-helm.sh (it is run here).
"""

from __future__ import annotations

import argparse
import base64
import gzip
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "tee-monitor"
LIMIT = 1024 * 1024
EVERYTHING = ["--set", "serviceMonitor.enabled=true", "--set", "prometheusRule.enabled=true"]


def helm_binary() -> str:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "install-helm.sh")], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip().splitlines()[-1]


def render(helm: str, chart: Path, extra: list[str]) -> str:
    return subprocess.run([helm, "template", "bench", str(chart), "--kube-version", "1.34.0", *extra],
                          capture_output=True, text=True, check=True).stdout


def median_seconds(helm: str, chart: Path, extra: list[str], renders: int) -> float:
    times = []
    for _ in range(renders):
        start = time.perf_counter()
        render(helm, chart, extra)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=int, default=10)
    args = parser.parse_args()
    helm = helm_binary()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([helm, "create", f"{tmp}/peer"], capture_output=True, check=True)
        render(helm, CHART, EVERYTHING)  # warm the page cache for both before timing
        render(helm, Path(tmp) / "peer", [])
        ours = median_seconds(helm, CHART, EVERYTHING, args.renders)
        peer = median_seconds(helm, Path(tmp) / "peer", [], args.renders)
    text = render(helm, CHART, EVERYTHING)
    docs = [d for d in yaml.safe_load_all(text) if d]
    sizes = sorted(((len(yaml.safe_dump(d).encode()), f"{d['kind']}/{d['metadata']['name']}") for d in docs),
                   reverse=True)
    release = len(base64.b64encode(gzip.compress(text.encode())))
    print(f"helm template, median of {args.renders}: tee-monitor {ours * 1000:.0f} ms ({len(docs)} objects), "
          f"helm-create peer {peer * 1000:.0f} ms; ratio {ours / peer:.2f}x")
    print(f"largest object: {sizes[0][1]} {sizes[0][0]} bytes = {sizes[0][0] / LIMIT:.1%} of 1 MiB")
    print(f"release manifest, gzip+base64 as helm stores it: {release} bytes = {release / LIMIT:.1%} of 1 MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
