"""Guest address discovery from the domain XML's interfaces and the host's neighbour table."""

from __future__ import annotations

from exporter.egress.guests import Interface, interfaces, neighbour_addresses

LIVE_XML = """<domain type='kvm' id='3'><name>cvm</name><devices>
  <interface type='network'>
    <mac address='52:54:00:AA:00:01'/><source network='default' portid='x' bridge='virbr0'/>
    <target dev='vnet3'/><model type='virtio'/>
  </interface>
  <interface type='bridge'>
    <mac address='52:54:00:aa:00:02'/><source bridge='br-lan'/><target dev='vnet4'/>
  </interface>
  <interface type='user'><model type='virtio'/></interface>
</devices></domain>"""


def test_interfaces_from_live_domain_xml() -> None:
    assert interfaces(LIVE_XML) == (Interface("52:54:00:aa:00:01", ("vnet3", "virbr0")),
                                    Interface("52:54:00:aa:00:02", ("vnet4", "br-lan")))


def test_neighbours_matched_on_mac_and_device() -> None:
    table = [
        {"dst": "192.168.122.50", "dev": "virbr0", "lladdr": "52:54:00:aa:00:01", "state": ["REACHABLE"]},
        {"dst": "fd00::50", "dev": "br-lan", "lladdr": "52:54:00:AA:00:02", "state": ["STALE"]},
        # the same MAC on a bridge this guest is not on: another guest cloning the MAC gets nothing of ours
        {"dst": "10.66.0.9", "dev": "br-other", "lladdr": "52:54:00:aa:00:01", "state": ["REACHABLE"]},
        {"dst": "192.168.122.77", "dev": "virbr0", "state": ["FAILED"]},  # no lladdr: says nothing
    ]
    assert neighbour_addresses(table, interfaces(LIVE_XML)) == {"192.168.122.50", "fd00::50"}
