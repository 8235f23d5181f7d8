"""Cost of judging one guest flow against network_policy: the seed's 2 rules against a 1,001-rule policy.

    .venv/bin/python bench/egress_bench.py [--rounds 7] [--seconds 0.5]

Both policies are judged in alternating slices (so load on the host hits both alike) over the same destinations
(a mix that matches the allow rules, the deny rules and neither). Prints the median and spread of microseconds
per flow for each and the ratio large/seed. The judge indexes rules by prefix length, so the cost grows with the
number of distinct prefix lengths, not of rules: the ratio should stay near 1, far below 1,001/2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.egress.rules import EgressRules, parse_cidrs

SEED = EgressRules(parse_cidrs(["10.0.0.0/8"]), parse_cidrs(["0.0.0.0/0"]))
LARGE = EgressRules(parse_cidrs([f"10.{i // 256}.{i % 256}.0/24" for i in range(600)]
                                + [f"10.200.{i}.{j}/32" for i in range(2) for j in range(100)]),
                    parse_cidrs([f"172.16.{i}.0/24" for i in range(200)] + ["0.0.0.0/0"]))
DESTINATIONS = ["10.1.2.3", "10.200.1.7", "172.16.9.1", "192.0.2.7", "2001:db8::1", "::ffff:10.0.0.1"]


def per_flow(rules: EgressRules, seconds: float) -> float:
    """Seconds per judged flow over a slice of about ``seconds``."""
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for destination in DESTINATIONS:
            rules.judge(destination)
        done += len(DESTINATIONS)
    return (time.perf_counter() - start) / done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args()
    seed, large = [], []
    for _ in range(args.rounds):
        seed.append(per_flow(SEED, args.seconds))
        large.append(per_flow(LARGE, args.seconds))
    for name, times in (("seed policy (2 rules)", seed), ("large policy (1001 rules)", large)):
        us = [t * 1e6 for t in times]
        print(f"{name:27s} median {statistics.median(us):6.2f} us/flow  spread {min(us):.2f}-{max(us):.2f}")
    print(f"ratio large/seed: {statistics.median(large) / statistics.median(seed):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
