"""``tee_libvirt_version_info``: the libvirt library the exporter links, the daemon it talks to, the hypervisor.

libvirt encodes versions as ``major * 1,000,000 + minor * 1,000 + release`` (``virGetVersion``,
``virConnectGetLibVersion``, ``virConnectGetVersion``).
"""

from __future__ import annotations

import libvirt
from prometheus_client.core import GaugeMetricFamily


def version_text(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def version_family(conn: libvirt.virConnect) -> GaugeMetricFamily:
    """Two RPCs per scrape (answered by the daemon from memory): a daemon or QEMU upgrade shows at once."""
    family = GaugeMetricFamily("tee_libvirt_version_info",
                               "Versions of the libvirt library, the libvirt daemon and the hypervisor (driver).",
                               labels=["library", "daemon", "hypervisor", "driver"])
    family.add_metric([version_text(libvirt.getVersion()), version_text(conn.getLibVersion()),
                       version_text(conn.getVersion()), conn.getType()], 1)
    return family
