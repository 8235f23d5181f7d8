"""The collectors, one module per source. Each is switchable with ``--collector.<name>``/``--no-collector.<name>``.

Modules are imported only when their collector is enabled, so a host without libvirt-python can still run the
attestation collectors, and vice versa.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from exporter.collectors.base import Collector, CollectorContext


@dataclass(frozen=True)
class CollectorSpec:
    name: str
    module: str
    enabled_by_default: bool
    help: str

    def build(self, ctx: CollectorContext) -> Collector:
        return importlib.import_module(self.module).build(ctx)


SPECS: tuple[CollectorSpec, ...] = (
    CollectorSpec("libvirt", "exporter.collectors.libvirt", True,
                  "per-domain state, CPU, memory, I/O, TEE type and VM exits from one bulk libvirt call"),
    CollectorSpec("host", "exporter.collectors.host", True,
                  "host TEE capability and capacity (SEV ASIDs, TDX) from libvirt, kvm parameters, misc cgroup"),
    CollectorSpec("lifecycle", "exporter.collectors.lifecycle", True,
                  "libvirt domain lifecycle events: transition counters, creation time, journal events"),
    CollectorSpec("qemu", "exporter.collectors.qemu_procs", True,
                  "confidential QEMU guests not managed by libvirt (Kata / Confidential Containers), from /proc"),
    CollectorSpec("attestation", "exporter.collectors.attestation", True,
                  "attestation evidence verified against vendor roots and policy; attestation-service logs"),
    CollectorSpec("kbs", "exporter.collectors.kbs", True,
                  "key-broker (KBS) resource requests: released or denied"),
    CollectorSpec("egress", "exporter.collectors.egress", False,
                  "flows confidential guests start (host conntrack events), judged by runtime_policy.network_policy"),
)

BY_NAME = {spec.name: spec for spec in SPECS}
