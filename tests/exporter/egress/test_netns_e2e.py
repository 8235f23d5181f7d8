"""Egress policy end to end, on real network namespaces the test builds, a real tee-exporter and a real Prometheus.

Topology (every address lives only inside namespaces created here; traffic goes only to them)::

    guest ns  g0 10.213.1.2 (MAC 52:54:00:ee:00:01)     plain ns  p0 10.213.1.3 (MAC 52:54:00:ee:00:02)
       │ veth                                              │ veth
    host ns   tbr0 10.213.1.1 (bridge, port thg0) ── ha0 10.213.2.1 ── allowed ns a0 10.213.2.2
              (routes, conntrack active)           ── hb0 10.213.3.1 ── denied ns  b0 10.213.3.2

The "host" namespace plays the hypervisor host: the exporter (in the test's own namespace) reads its conntrack
events and neighbour table through ``--egress.netns``. libvirt's test driver defines the running SEV-SNP domain
whose interface has the guest's MAC on tap ``thg0`` of bridge ``tbr0``, and a running plain (not confidential)
domain with the plain namespace's MAC on tap ``thp0``, whose flows must not be judged. The policy allows 10.213.2.0/24 and
denies 10.213.0.0/16 (the seed's shape: a specific allow inside a broad deny).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dashboards import queries
from tests.exporter.helpers import assert_schema_valid, value
from tests.fixtures.prometheus import PrometheusServer, TeeExporter, wait_until
from tests.jsonl import complete_json_lines

ROOT = Path(__file__).resolve().parents[3]
GUEST_MAC, PLAIN_MAC = "52:54:00:ee:00:01", "52:54:00:ee:00:02"
ALLOWED, DENIED = "10.213.2.2", "10.213.3.2"
DOMAIN = "cvm-egress"

NODE_XML = f"""<node>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>{DOMAIN}</name><uuid>7ee00000-0000-4000-8000-0000000000e1</uuid>
    <memory unit='MiB'>1024</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <launchSecurity type='sev-snp'><cbitpos>51</cbitpos><reducedPhysBits>1</reducedPhysBits>
      <policy>0x00030000</policy></launchSecurity>
    <devices>
      <interface type='bridge'><mac address='{GUEST_MAC}'/><source bridge='tbr0'/><target dev='thg0'/>
        <model type='virtio'/></interface>
    </devices>
    <test:runstate>1</test:runstate>
  </domain>
  <domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>
    <name>plain-egress</name><uuid>7ee00000-0000-4000-8000-0000000000e2</uuid>
    <memory unit='MiB'>1024</memory><vcpu>1</vcpu><os><type>hvm</type></os>
    <devices>
      <interface type='bridge'><mac address='{PLAIN_MAC}'/><source bridge='tbr0'/><target dev='thp0'/>
        <model type='virtio'/></interface>
    </devices>
    <test:runstate>1</test:runstate>
  </domain>
</node>
"""

POLICY = {"version": "1.0",
          "attestation_policy": {"tee_type": "sev-snp", "enforce_debug_disabled": True},
          "runtime_policy": {"max_memory": "16GB", "max_cpus": 8, "allowed_devices": ["virtio-net"],
                             "network_policy": {"allow_egress": ["10.213.2.0/24"], "deny_egress": ["10.213.0.0/16"]}}}


def sh(*args: str) -> None:
    subprocess.run(args, check=True, timeout=20, capture_output=True)


@dataclass
class Lab:
    guest: str
    host: str
    allowed: str
    denied: str
    plain: str

    def in_ns(self, ns: str, *args: str) -> None:
        sh("ip", "netns", "exec", ns, *args)

    def guest_sends(self, destination: str, tcp: int = 0, udp: int = 0, ns: str | None = None) -> None:
        """``tcp`` TCP connection attempts to port 8080 (refused: a SYN is a new flow all the same) and ``udp``
        datagrams to port 5353, each with a 2-second bound."""
        script = ("import socket\n"
                  f"for _ in range({tcp}):\n"
                  "    s = socket.socket(); s.settimeout(2)\n"
                  f"    try: s.connect(({destination!r}, 8080))\n"
                  "    except OSError: pass\n"
                  "    s.close()\n"
                  f"for _ in range({udp}):\n"
                  "    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                  f"    u.sendto(b'x', ({destination!r}, 5353)); u.close()\n")
        self.in_ns(ns or self.guest, sys.executable, "-c", script)


@pytest.fixture
def lab() -> Iterator[Lab]:
    tag = f"tee{os.getpid() % 100000}"
    lab = Lab(f"{tag}-guest", f"{tag}-host", f"{tag}-allow", f"{tag}-deny", f"{tag}-plain")
    made = []
    try:
        for ns in (lab.guest, lab.host, lab.allowed, lab.denied, lab.plain):
            sh("ip", "netns", "add", ns)
            made.append(ns)
            lab.in_ns(ns, "ip", "link", "set", "lo", "up")
            # IPv4 only: IPv6 autoconfiguration chatter would only add noise to exact flow counts.
            lab.in_ns(ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
        sh("ip", "link", "add", "g0", "netns", lab.guest, "type", "veth", "peer", "name", "thg0", "netns", lab.host)
        sh("ip", "link", "add", "p0", "netns", lab.plain, "type", "veth", "peer", "name", "thp0", "netns", lab.host)
        sh("ip", "link", "add", "a0", "netns", lab.allowed, "type", "veth", "peer", "name", "ha0", "netns", lab.host)
        sh("ip", "link", "add", "b0", "netns", lab.denied, "type", "veth", "peer", "name", "hb0", "netns", lab.host)
        host = [["ip", "link", "add", "tbr0", "type", "bridge"], ["ip", "link", "set", "thg0", "master", "tbr0"],
                ["ip", "link", "set", "thp0", "master", "tbr0"],
                ["ip", "addr", "add", "10.213.1.1/24", "dev", "tbr0"], ["ip", "addr", "add", "10.213.2.1/24", "dev",
                                                                          "ha0"],
                ["ip", "addr", "add", "10.213.3.1/24", "dev", "hb0"],
                *(["ip", "link", "set", dev, "up"] for dev in ("tbr0", "thg0", "thp0", "ha0", "hb0")),
                ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                # What libvirt's network rules do on a real host: a rule that needs conntrack switches it on in
                # this namespace (the kernel only tracks connections where some rule uses the tracking).
                ["iptables", "-A", "FORWARD", "-m", "conntrack", "--ctstate", "NEW,ESTABLISHED,RELATED",
                 "-j", "ACCEPT"]]
        for cmd in host:
            lab.in_ns(lab.host, *cmd)
        for ns, dev, addr, gw, mac in ((lab.guest, "g0", "10.213.1.2/24", "10.213.1.1", GUEST_MAC),
                                       (lab.plain, "p0", "10.213.1.3/24", "10.213.1.1", PLAIN_MAC),
                                       (lab.allowed, "a0", "10.213.2.2/24", "10.213.2.1", None),
                                       (lab.denied, "b0", "10.213.3.2/24", "10.213.3.1", None)):
            if mac:
                lab.in_ns(ns, "ip", "link", "set", dev, "address", mac)
            lab.in_ns(ns, "ip", "addr", "add", addr, "dev", dev)
            lab.in_ns(ns, "ip", "link", "set", dev, "up")
            lab.in_ns(ns, "ip", "route", "add", "default", "via", gw)
        yield lab
    finally:
        for ns in made:
            subprocess.run(["ip", "netns", "del", ns], check=False, timeout=20)


@pytest.fixture
def egress_exporter(lab: Lab, tmp_path: Path) -> Iterator[TeeExporter]:
    node, policy = tmp_path / "node.xml", tmp_path / "policy.json"
    node.write_text(NODE_XML)
    policy.write_text(json.dumps(POLICY))
    exporter = TeeExporter(tmp_path, {
        "libvirt.uri": f"test://{node}", "attestation.policy-file": str(policy),
        "collector.egress": True, "egress.netns": f"/run/netns/{lab.host}",
        "collector.host": False, "collector.qemu": False, "collector.attestation": False, "collector.kbs": False})
    try:
        yield exporter.start()
    finally:
        exporter.stop()


def _metric(exporter: TeeExporter, name: str, **labels: str) -> float | None:
    return value(exporter.metrics(), name, **labels)


def _violations(exporter: TeeExporter) -> list[dict]:
    return [e for e in complete_json_lines(exporter.journal) if e["event"]["action"] == "egress-policy-violation"]


def test_denied_flows_are_counted_journaled_and_fire_the_alert(
        lab: Lab, egress_exporter: TeeExporter, prometheus_servers: Callable[..., PrometheusServer]) -> None:
    exporter = egress_exporter
    wait_until(lambda: _metric(exporter, "tee_guest_egress_conntrack_up") == 1, 20, "conntrack events")
    # The host sends the guest one datagram (never the other way): resolving it puts the guest's MAC on tbr0 in
    # the host's neighbour table, which is how the exporter learns the guest's address; the flow is the host's.
    for address in ("10.213.1.2", "10.213.1.3"):
        lab.in_ns(lab.host, sys.executable, "-c", "import socket; socket.socket(socket.AF_INET, "
                  f"socket.SOCK_DGRAM).sendto(b'x', ('{address}', 9))")
    wait_until(lambda: "10.213.1.2" in _known(exporter), 30, "the guest's address to be discovered")
    assert _metric(exporter, "tee_guest_egress_conntrack_events_total") >= 2  # the host's own datagrams
    prom = prometheus_servers(scrape={"tee-exporter": [exporter.address]},
                              rule_files=sorted((ROOT / "alerts").glob("*.rules.yml")))
    wait_until(prom.targets_up, 30, "the exporter target to be up")

    lab.guest_sends(ALLOWED, tcp=3)
    lab.guest_sends(DENIED, tcp=2, ns=lab.plain)  # a plain guest is not under the confidential guests' policy
    wait_until(lambda: _metric(exporter, "tee_guest_egress_flows_total", domain=DOMAIN, verdict="allowed") == 3,
               20, "3 allowed flows")
    wait_until(lambda: prom.query(f'tee_guest_egress_flows_total{{verdict="allowed", domain="{DOMAIN}"}} == 3'),
               20, "Prometheus to scrape the allowed flows")
    # Several scrapes, each followed by a rule evaluation (both every second), with only allowed flows: quiet.
    wait_until(lambda: prom.query(f'count_over_time(tee_guest_egress_flows_total{{verdict="allowed", '
                                  f'domain="{DOMAIN}"}}[1m]) >= 5'), 30, "5 scrapes of the allowed flows")
    assert not prom.alerts("TEEGuestEgressPolicyViolation")
    assert _metric(exporter, "tee_guest_egress_flows_total", domain=DOMAIN, verdict="denied") == 0
    assert not [line for line in exporter.metrics().splitlines()
                if line.startswith("tee_guest_egress") and "plain-egress" in line]
    assert _violations(exporter) == []

    lab.guest_sends(DENIED, tcp=2, udp=1)
    wait_until(lambda: _metric(exporter, "tee_guest_egress_flows_total", domain=DOMAIN, verdict="denied") == 3,
               20, "3 denied flows")
    assert _metric(exporter, "tee_guest_egress_flows_total", domain=DOMAIN, verdict="allowed") == 3
    firing = wait_until(lambda: [a for a in prom.alerts("TEEGuestEgressPolicyViolation") if a["state"] == "firing"],
                        30, "TEEGuestEgressPolicyViolation to fire")
    assert [a["labels"]["domain"] for a in firing] == [DOMAIN]

    events = _violations(exporter)
    assert_schema_valid(events)
    assert sorted((e["destination"]["ip"], e["destination"]["port"], e["network"]["transport"]) for e in events) == [
        (DENIED, 5353, "udp"), (DENIED, 8080, "tcp"), (DENIED, 8080, "tcp")]
    assert {e["rule"]["name"] for e in events} == {"deny_egress 10.213.0.0/16"}
    assert {(e["source"]["ip"], e["tee"]["vm"]["name"], e["tee"]["type"]) for e in events} == {
        ("10.213.1.2", DOMAIN, "sev-snp")}

    # The dashboard panel's query returns this guest's flows from the same Prometheus.
    [panel] = [q for q in queries.panel_queries() if q.panel == "Egress flows by network_policy verdict"]
    assert {(r["metric"]["domain"], r["metric"]["verdict"]) for r in prom.query(panel.expr)} >= {
        (DOMAIN, "allowed"), (DOMAIN, "denied")}


def _known(exporter: TeeExporter) -> set[str]:
    """Not exposed as labels (addresses are unbounded); the count grows by the discovered neighbour entry."""
    count = _metric(exporter, "tee_guest_egress_addresses", domain=DOMAIN, tee_type="sev-snp") or 0
    return {"10.213.1.2"} if count >= 2 else set()  # the test driver reports one made-up address of its own
