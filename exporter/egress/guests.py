"""Which addresses belong to which confidential guest.

Three sources, united, because each alone misses cases:

* libvirt ``virDomainInterfaceAddresses`` with the LEASE source (the DHCP leases of libvirt-managed networks) and
  the ARP source (libvirt reading the host's neighbour table for the domain's MACs);
* the host's neighbour table (``ip -json neigh show``, IPv4 and IPv6) read here, matching the MAC addresses of the domain's
  ``<interface>`` elements on the domain's own tap device or bridge (``<target dev>``, ``<source bridge>``), so a
  guest on a plain bridge with a static address is found even when libvirt's ARP source is not available.

Matching on the device as well as the MAC keeps a guest that copies another guest's MAC on another bridge from
being given that guest's addresses. Attribution is by source address: a guest that spoofs a source address nobody
knows is not attributed; libvirt's ``clean-traffic`` nwfilter on confidential guests' interfaces prevents that
(docs/exporter.md, "egress").
"""

from __future__ import annotations

import ipaddress
import json
import logging
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interface:
    mac: str  # lower case
    devices: tuple[str, ...]  # the tap device and/or bridge the interface is attached to on the host


@dataclass(frozen=True)
class Guest:
    name: str
    uuid: str
    tee_type: str


def interfaces(domain_xml: str | bytes) -> tuple[Interface, ...]:
    """The network interfaces of a (live) domain XML: MAC and host-side devices (formatdomain.html#network-
    interfaces: ``<mac address>``, ``<target dev>``, ``<source bridge|dev>``, and for ``type='network'`` the
    ``bridge`` attribute libvirt adds to ``<source>`` in the live XML)."""
    root = ET.fromstring(domain_xml)
    out = []
    for iface in root.iterfind("./devices/interface"):
        mac = iface.find("mac")
        if mac is None or not mac.get("address"):
            continue
        devices = []
        target = iface.find("target")
        if target is not None and target.get("dev"):
            devices.append(target.get("dev", ""))
        source = iface.find("source")
        if source is not None:
            devices += [source.get(a, "") for a in ("bridge", "dev") if source.get(a)]
        out.append(Interface(mac.get("address", "").lower(), tuple(devices)))
    return tuple(out)


def neighbour_addresses(neighbours: list[dict[str, Any]], ifaces: Iterable[Interface]) -> set[str]:
    """Addresses in the host's neighbour table (``ip -json neigh show``: IPv4 ARP and IPv6 NDP entries) whose
    link-layer address and device are those of one of ``ifaces``. Entries without a link-layer address
    (INCOMPLETE, FAILED) say nothing about who owns the address."""
    wanted = {(i.mac, dev) for i in ifaces for dev in i.devices}
    found = set()
    for entry in neighbours:
        mac, dev, dst = str(entry.get("lladdr", "")).lower(), entry.get("dev"), entry.get("dst")
        if mac and dst and (mac, dev) in wanted:
            try:
                found.add(str(ipaddress.ip_address(dst)))
            except ValueError:
                continue
    return found


def read_neighbours(prefix: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The neighbour table from ``ip -json neigh show`` (``prefix`` e.g. ``nsenter --net=<path>`` to read another
    network namespace's). Empty when it cannot be read: libvirt's own sources must then do."""
    try:
        out = subprocess.run([*prefix, "ip", "-json", "neigh", "show"], capture_output=True, text=True,
                             timeout=10, check=True).stdout
        table = json.loads(out or "[]")
    except (OSError, subprocess.SubprocessError, json.JSONDecodeError) as exc:
        log.warning("egress: cannot read the neighbour table", extra={"error": str(exc)})
        return []
    return [entry for entry in table if isinstance(entry, dict)]


def libvirt_addresses(dom: Any, sources: Iterable[int]) -> set[str]:
    """Addresses libvirt reports for a running domain, from each of ``sources`` (LEASE, ARP) that answers.

    A source that is not available for this domain (no libvirt-managed network: no leases) raises a libvirtError;
    that is normal and only means the other sources must do.
    """
    found: set[str] = set()
    for source in sources:
        try:
            reported: Mapping[str, Any] = dom.interfaceAddresses(source, 0) or {}
        except Exception as exc:  # noqa: BLE001 - libvirt.libvirtError; libvirt is imported by the caller only
            log.debug("interfaceAddresses unavailable", extra={"domain": dom.name(), "source": source,
                                                               "error": str(exc)})
            continue
        for iface in reported.values():
            for addr in iface.get("addrs") or []:
                try:
                    found.add(str(ipaddress.ip_address(addr.get("addr", ""))))
                except ValueError:
                    continue  # not an address we could ever match a flow against
    return found
