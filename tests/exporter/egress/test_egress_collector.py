"""The egress collector's judging, counting and journaling, fed flows as the conntrack reader hands them over."""

from __future__ import annotations

from pathlib import Path

from exporter.collectors.egress import JOURNAL_BURST, Discovery, EgressCollector
from exporter.egress.conntrack import Flow
from exporter.egress.guests import Guest
from exporter.egress.rules import EgressRules, parse_cidrs
from exporter.journal import Journal
from tests.exporter.helpers import assert_schema_valid, exposition, value
from tests.jsonl import complete_json_lines

CVM = Guest("cvm-web", "7ee00000-0000-4000-8000-0000000000e1", "tdx")
NEW = Guest("cvm-new", "7ee00000-0000-4000-8000-0000000000e2", "sev-snp")  # running, no address known yet
SEED = EgressRules(parse_cidrs(["10.0.0.0/8"]), parse_cidrs(["0.0.0.0/0"]))


def collector(tmp_path: Path) -> EgressCollector:
    journal = Journal(tmp_path / "journal.jsonl", host="test-host")
    egress = EgressCollector(SEED, journal, lambda: Discovery((CVM, NEW), {"192.168.122.50": CVM, "fd00::50": CVM}))
    egress.refresh()
    return egress


def flow(source: str, destination: str, port: int | None = 443, transport: str = "tcp") -> Flow:
    number = {"tcp": 6, "udp": 17, "icmp": 1}[transport]
    return Flow(source, destination, transport, number, None if port is None else 40000, port)


def test_verdicts_are_counted_per_guest_and_denied_flows_journaled(tmp_path: Path) -> None:
    egress = collector(tmp_path)
    text = exposition(egress)
    assert value(text, "tee_guest_egress_flows_total", domain="cvm-web", verdict="denied") == 0  # exists at once
    egress.on_flow(flow("192.168.122.50", "10.1.2.3"))
    egress.on_flow(flow("192.168.122.50", "203.0.113.9", 53, "udp"))
    egress.on_flow(flow("192.168.122.50", "203.0.113.9", None, "icmp"))
    egress.on_flow(flow("::ffff:192.168.122.50", "198.51.100.1"))  # the guest's address, spelled IPv4-mapped
    text = exposition(egress)
    assert value(text, "tee_guest_egress_flows_total", domain="cvm-web", verdict="allowed") == 1
    assert value(text, "tee_guest_egress_flows_total", domain="cvm-web", verdict="denied") == 3
    assert value(text, "tee_guest_egress_addresses", domain="cvm-web", tee_type="tdx") == 2
    assert value(text, "tee_guest_egress_addresses", domain="cvm-new", tee_type="sev-snp") == 0  # unobserved
    events = complete_json_lines(tmp_path / "journal.jsonl")
    assert_schema_valid(events)
    first = events[0]
    assert first["destination"] == {"ip": "203.0.113.9", "port": 53}
    assert first["network"] == {"transport": "udp", "iana_number": "17"}
    assert first["rule"] == {"name": "deny_egress 0.0.0.0/0", "ruleset": "runtime_policy.network_policy"}
    assert first["event"]["action"] == "egress-policy-violation" and first["tee"]["vm"]["name"] == "cvm-web"
    assert events[1]["destination"] == {"ip": "203.0.113.9"}  # ICMP: no port
    assert all("10.1.2.3" not in line for line in (tmp_path / "journal.jsonl").read_text().splitlines())


def test_flows_of_others_and_link_scoped_ones_are_not_judged(tmp_path: Path) -> None:
    egress = collector(tmp_path)
    egress.on_flow(flow("192.168.122.1", "203.0.113.9"))  # the host's own, or a plain guest's
    egress.on_flow(flow("fd00::50", "ff02::16", None, "icmp"))  # MLD report: never leaves the link
    egress.on_flow(flow("192.168.122.50", "255.255.255.255", 67, "udp"))  # DHCP
    text = exposition(egress)
    assert value(text, "tee_guest_egress_flows_total", domain="cvm-web", verdict="denied") == 0
    assert value(text, "tee_guest_egress_flows_total", domain="cvm-web", verdict="allowed") == 0
    assert not (tmp_path / "journal.jsonl").exists() or not complete_json_lines(tmp_path / "journal.jsonl")


def test_a_flood_of_denied_flows_is_counted_fully_but_journaled_within_budget(tmp_path: Path) -> None:
    egress = collector(tmp_path)
    egress._budget.clock = lambda: 0.0  # time stands still during the flood: no refill, an exact count
    flood = JOURNAL_BURST + 500
    for port in range(flood):
        egress.on_flow(flow("192.168.122.50", "203.0.113.9", port % 65536))
    text = exposition(egress)
    assert value(text, "tee_guest_egress_flows_total", domain="cvm-web", verdict="denied") == flood
    journaled = len(complete_json_lines(tmp_path / "journal.jsonl"))
    suppressed = value(text, "tee_guest_egress_journal_suppressed_total", domain="cvm-web")
    assert journaled == JOURNAL_BURST and suppressed == flood - JOURNAL_BURST
    egress._budget.clock = lambda: 1e12  # much later: the budget has refilled
    egress.on_flow(flow("192.168.122.50", "203.0.113.10"))
    last = complete_json_lines(tmp_path / "journal.jsonl")[-1]
    assert last["tee"]["egress"] == {"suppressed": suppressed}  # the audit trail says how many were cut
    assert_schema_valid([last])


def test_failed_discovery_keeps_the_last_map_and_is_counted(tmp_path: Path) -> None:
    egress = collector(tmp_path)

    def down() -> dict:
        raise ConnectionError("libvirt down")

    egress.discover = down
    egress.refresh()
    egress.on_flow(flow("192.168.122.50", "203.0.113.9"))
    text = exposition(egress)
    assert value(text, "tee_guest_egress_discovery_errors_total") == 1
    assert value(text, "tee_guest_egress_flows_total", domain="cvm-web", verdict="denied") == 1


def test_a_cut_that_no_later_denied_flow_follows_still_reaches_the_journal(tmp_path: Path) -> None:
    # Attack: fill the burst with decoys, then the real flow, then go quiet. Before, the cut count only rode on
    # the next denied flow, which never came: the audit chain held 100 decoys and nothing of the rest.
    egress = collector(tmp_path)
    egress._budget.clock = lambda: 0.0
    for port in range(JOURNAL_BURST + 4):
        egress.on_flow(flow("192.168.122.50", "203.0.113.9", port))
    egress.on_flow(flow("192.168.122.50", "198.51.100.66", 22))  # the one that matters, cut too
    egress.flush_suppressed()  # no token yet: the budget still holds
    assert len(complete_json_lines(tmp_path / "journal.jsonl")) == JOURNAL_BURST
    egress._budget.clock = lambda: 1.0  # a second later, and the guest has sent nothing since
    egress.flush_suppressed()
    events = complete_json_lines(tmp_path / "journal.jsonl")
    assert len(events) == JOURNAL_BURST + 1
    assert events[-1]["destination"] == {"ip": "198.51.100.66", "port": 22}  # the last cut flow itself
    assert events[-1]["tee"]["egress"] == {"suppressed": 4}  # and how many before it were cut
    assert_schema_valid(events[-1:])


def test_a_flow_to_the_hosts_link_local_address_is_judged(tmp_path: Path) -> None:
    # Attack: the host's DNS (or any host service) reached at its fe80:: address on the guest's bridge, e.g. to
    # tunnel data out through the host's resolver. The kernel tracks it as a new UDP flow (seen with conntrack -E
    # on veth namespaces), while neighbour discovery and MLD, which fe80::/10 was skipped for, are never tracked.
    egress = collector(tmp_path)
    egress.on_flow(flow("fd00::50", "fe80::5054:ff:fe00:1", 53, "udp"))
    assert value(exposition(egress), "tee_guest_egress_flows_total", domain="cvm-web", verdict="denied") == 1
    assert complete_json_lines(tmp_path / "journal.jsonl")[0]["destination"] == {"ip": "fe80::5054:ff:fe00:1",
                                                                                 "port": 53}
