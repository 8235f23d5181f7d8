"""Egress collector: the flows confidential guests start, judged against ``runtime_policy.network_policy``.

The host cannot stop a guest's traffic from here, but it sees it: every new connection in the host's connection
tracking (``exporter.egress.conntrack``) whose source is a confidential guest's address (``exporter.egress.guests``)
is judged by the policy's CIDR rules (``exporter.egress.rules``), counted in
``tee_guest_egress_flows_total{domain,verdict}`` and, when the policy denies it, written to the journal with the
destination, port, transport and the rule that matched, so it enters the audit chain.

Off by default (``--collector.egress``): it needs CAP_NET_ADMIN for conntrack events, and a policy file with
``runtime_policy.network_policy`` (a start-up error otherwise). Guest addresses are re-read every
``REFRESH_SECONDS`` in the background; scrapes never wait for libvirt or conntrack.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector, CollectorContext
from exporter.config import ConfigError
from exporter.egress.conntrack import COMMAND, ConntrackEvents, Flow
from exporter.egress.guests import Guest, interfaces, libvirt_addresses, neighbour_addresses, read_neighbours
from exporter.egress.rules import EgressRules, Verdict, is_egress, normalize
from exporter.journal import Journal

log = logging.getLogger(__name__)

DATASET = "tee.egress"
RULESET = "runtime_policy.network_policy"
REFRESH_SECONDS = 10.0
VERDICTS = ("allowed", "denied")
# Journal events per domain: a burst of JOURNAL_BURST, then JOURNAL_PER_SECOND. A guest scanning denied networks
# must not be able to fill the journal's disk; flows beyond the budget are still counted in the metric, and their
# number is carried by the next event written (tee.egress.suppressed), so the audit trail says how many were cut.
# A guest that goes quiet after a cut would leave the next event unwritten, so the refresher journals the last cut
# flow itself once the budget allows (flush_suppressed): no cut ends without an event.
JOURNAL_BURST = 100
JOURNAL_PER_SECOND = 10.0


@dataclass(frozen=True)
class Discovery:
    """Every running confidential guest, and the addresses known for each (a guest may have none yet)."""

    guests: tuple[Guest, ...] = ()
    addresses: Mapping[str, Guest] = field(default_factory=dict)


Discover = Callable[[], Discovery]


class _Budget:
    """A token bucket per domain."""

    def __init__(self, burst: int, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.rate, self.clock = burst, rate, clock
        self._tokens: dict[str, tuple[float, float]] = {}

    def take(self, key: str) -> bool:
        now = self.clock()
        tokens, then = self._tokens.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - then) * self.rate)
        ok = tokens >= 1.0
        self._tokens[key] = (tokens - 1.0 if ok else tokens, now)
        return ok


class EgressCollector(Collector):
    name = "egress"

    def __init__(self, rules: EgressRules, journal: Journal, discover: Discover,
                 command: tuple[str, ...] = COMMAND, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.rules = rules
        self.journal = journal
        self.discover = discover
        self.refresh_seconds = refresh_seconds
        self.conntrack = ConntrackEvents(self.on_flow, command)
        self.known = Discovery()  # replaced whole by each refresh
        self.discovery_errors = 0
        self._flows: Counter[tuple[str, str]] = Counter()
        self._suppressed: Counter[str] = Counter()
        self._pending_suppressed: Counter[str] = Counter()
        self._last_cut: dict[str, tuple[Guest, Flow, Verdict]] = {}  # per domain: bounded like the counters
        self._budget = _Budget(JOURNAL_BURST, JOURNAL_PER_SECOND)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh_loop, name="egress-guests", daemon=True)

    def start(self) -> None:
        self.refresh()  # know the guests before the first event arrives
        self._refresher.start()
        self.conntrack.start()

    def stop(self) -> None:
        self._stop.set()
        self.conntrack.stop()
        self._refresher.join(timeout=5)

    def refresh(self) -> None:
        try:
            known = self.discover()
        except Exception as exc:  # noqa: BLE001 - libvirt down or odd XML: keep the last map, report, retry
            self.discovery_errors += 1
            if self.discovery_errors == 1 or self.discovery_errors % 100 == 0:
                log.warning("egress: guest discovery failed", extra={"error": f"{type(exc).__name__}: {exc}"})
            return
        with self._lock:
            self.known = known
            for guest in known.guests:  # a guest's series exist (at 0) as soon as it is watched
                for verdict in VERDICTS:
                    self._flows.setdefault((guest.name, verdict), 0)

    def _refresh_loop(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            self.refresh()
            self.flush_suppressed()

    def flush_suppressed(self) -> None:
        """Journal the last cut flow of each guest whose cut no later event has reported, within the budget; its
        ``tee.egress.suppressed`` counts the cut flows before it."""
        events = []
        with self._lock:
            for name, (guest, flow, verdict) in list(self._last_cut.items()):
                if self._budget.take(name):
                    del self._last_cut[name]
                    earlier = self._pending_suppressed.pop(name, 0) - 1
                    events.append(violation_event(self.journal, guest, flow, verdict, earlier))
        for event in events:
            self.journal.append(event)

    def on_flow(self, flow: Flow) -> None:
        try:
            guest = self.known.addresses.get(str(normalize(flow.source)))
            if guest is None or not is_egress(flow.destination):
                return  # the host's own traffic, a guest not confidential, or link-scoped multicast
            verdict = self.rules.judge(flow.destination)
        except ValueError:
            return  # parse_flow checks that an address is there, not that it is one
        with self._lock:
            self._flows[(guest.name, verdict.verdict)] += 1
            if not verdict.violation:
                return
            if not self._budget.take(guest.name):
                self._suppressed[guest.name] += 1
                self._pending_suppressed[guest.name] += 1
                self._last_cut[guest.name] = (guest, flow, verdict)
                return
            suppressed = self._pending_suppressed.pop(guest.name, 0)
            self._last_cut.pop(guest.name, None)
        self.journal.append(violation_event(self.journal, guest, flow, verdict, suppressed))

    def collect(self) -> Iterable[Metric]:
        flows = CounterMetricFamily("tee_guest_egress_flows",
                                    "New connections started by a confidential guest, by the network_policy verdict.",
                                    labels=["domain", "verdict"])
        suppressed = CounterMetricFamily("tee_guest_egress_journal_suppressed",
                                         "Denied flows not journaled one by one (per-domain journal budget).",
                                         labels=["domain"])
        addresses = GaugeMetricFamily("tee_guest_egress_addresses",
                                      "Addresses known for a running confidential guest (0: its flows are not seen).",
                                      labels=["domain", "tee_type"])
        with self._lock:
            for (domain, verdict), count in sorted(self._flows.items()):
                flows.add_metric([domain, verdict], count)
            for domain, count in sorted(self._suppressed.items()):
                suppressed.add_metric([domain], count)
            known = self.known
        per_guest = Counter(known.addresses.values())
        for guest in sorted(known.guests, key=lambda g: g.name):
            addresses.add_metric([guest.name, guest.tee_type], per_guest[guest])
        yield from (flows, suppressed, addresses)
        yield from self._health()

    def _health(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("tee_guest_egress_conntrack_up",
                                "1 while the conntrack event reader runs, else 0 (see the exporter log for why).",
                                value=1 if self.conntrack.up else 0)
        yield CounterMetricFamily("tee_guest_egress_conntrack_events",
                                  "conntrack NEW events read, of any source (the host's own too): not growing while "
                                  "up means the kernel reports no connections.", value=self.conntrack.events)
        errors = CounterMetricFamily("tee_guest_egress_conntrack_errors",
                                     "conntrack problems: not_installed, failed (exited / no permission), "
                                     "overrun (events lost), parse.", labels=["reason"])
        for reason, count in self.conntrack.errors.items():
            errors.add_metric([reason], count)
        yield errors
        yield CounterMetricFamily("tee_guest_egress_discovery_errors",
                                  "Failed refreshes of the guests' addresses from libvirt (the last map is kept).",
                                  value=self.discovery_errors)


def violation_event(journal: Journal, guest: Guest, flow: Flow, verdict: Verdict, suppressed: int) -> dict[str, Any]:
    """The journal event for one flow the policy denies (ECS source/destination/network/rule fields)."""
    port = f":{flow.destination_port}" if flow.destination_port is not None else ""
    tee: dict[str, Any] = {"type": guest.tee_type, "vm": {"name": guest.name, "uuid": guest.uuid},
                           "policy": {"result": "fail", "violations": ["network_policy"]}}
    if suppressed:
        tee["egress"] = {"suppressed": suppressed}
    return journal.event(
        action="egress-policy-violation", kind="alert", category=["network"], type=["connection", "start"],
        dataset=DATASET, outcome="failure", reason="network_policy",
        message=(f"confidential guest {guest.name} started a {flow.transport} flow to {flow.destination}{port} "
                 f"that network_policy denies ({verdict.rule})"),
        tee=tee,
        extra={"source": _endpoint(flow.source, flow.source_port),
               "destination": _endpoint(flow.destination, flow.destination_port),
               "network": {"transport": flow.transport, "iana_number": str(flow.protocol_number)},
               "rule": {"name": verdict.rule, "ruleset": RULESET}},
    )


def _endpoint(address: str, port: int | None) -> dict[str, Any]:
    return {"ip": address} if port is None else {"ip": address, "port": port}


def libvirt_discovery(connection: Any, netns_prefix: tuple[str, ...]) -> Discover:
    """Addresses of every running confidential domain, from libvirt and the host's neighbour table."""
    import libvirt  # only when the collector is enabled: hosts without libvirt-python can run the others

    from exporter.virt.domain_xml import DomainXMLError, parse_domain_xml

    sources = (libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_ARP)

    def discover() -> Discovery:
        conn = connection.get()
        neighbours = read_neighbours(netns_prefix)
        guests, found = [], {}
        for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            try:
                xml = dom.XMLDesc(0)
                info = parse_domain_xml(xml)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                    raise
                continue  # stopped between listing and reading: simply gone
            except DomainXMLError as exc:
                log.warning("egress: unusable domain XML", extra={"domain": dom.name(), "error": str(exc)})
                continue
            nics = interfaces(xml)
            if not info.confidential or not nics:
                continue  # not confidential, or no network interface: nothing to observe
            guest = Guest(info.name, info.uuid, info.tee_type)
            guests.append(guest)
            for address in libvirt_addresses(dom, sources) | neighbour_addresses(neighbours, nics):
                found[address] = guest
        return Discovery(tuple(guests), found)

    return discover


def build(ctx: CollectorContext) -> EgressCollector:
    from exporter.attest.policy import load_policy
    from exporter.virt.connection import shared_connection

    path = ctx.settings.attestation_policy_file
    if path is None:
        raise ConfigError("collector.egress: needs attestation.policy-file with runtime_policy.network_policy")
    runtime = load_policy(path).runtime
    if runtime is None or runtime.network is None:
        raise ConfigError(f"collector.egress: {path} has no runtime_policy.network_policy to judge flows by")
    connection = shared_connection(ctx.shared, ctx.settings.libvirt_uri)
    netns = ctx.settings.egress_netns
    if netns is not None and not netns.exists():
        raise ConfigError(f"egress.netns: {netns}: no such network namespace file")
    # Another network namespace's conntrack and neighbours (the host's, from a container: /proc/1/ns/net).
    prefix = () if netns is None else ("nsenter", f"--net={netns}")
    return EgressCollector(runtime.network, ctx.journal, libvirt_discovery(connection, prefix),
                           command=(*prefix, *COMMAND))
