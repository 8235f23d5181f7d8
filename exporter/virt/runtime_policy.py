"""The runtime policy applied to confidential domains' definitions: a gauge per violated rule, and one journal
event each time a domain goes out of policy or comes back into it.

The rules themselves (``max_memory``, ``max_cpus``, ``allowed_devices``) live in ``exporter.attest.policy``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily

from exporter.attest.policy import RuntimePolicy, check_runtime
from exporter.journal import Journal
from exporter.virt.domain_xml import DomainInfo

DATASET = "tee.runtime_policy"


class RuntimePolicyTracker:
    def __init__(self, runtime: RuntimePolicy, journal: Journal) -> None:
        self.runtime = runtime
        self.journal = journal
        self._last: dict[str, tuple[str, ...]] = {}  # uuid -> rules violated at the last scrape
        self._lock = threading.Lock()

    def violations(self, info: DomainInfo) -> tuple[str, ...]:
        if not info.confidential:
            return ()
        return tuple(check_runtime(self.runtime, memory_bytes=info.memory_bytes, vcpus=info.vcpus,
                                   devices=info.devices))

    def family(self, infos: Iterable[DomainInfo]) -> GaugeMetricFamily:
        gauge = GaugeMetricFamily("tee_runtime_policy_violation",
                                  "1 while a confidential domain's definition breaks a runtime_policy rule.",
                                  labels=["domain", "rule"])
        with self._lock:
            seen = {}
            for info in infos:
                rules = self.violations(info)
                seen[info.uuid] = rules
                for rule in rules:
                    gauge.add_metric([info.name, rule], 1)
                self._journal_change(info, self._last.get(info.uuid, ()), rules)
            self._last = seen
        return gauge

    def _journal_change(self, info: DomainInfo, before: tuple[str, ...], now: tuple[str, ...]) -> None:
        if before == now:
            return
        out = bool(now)
        self.journal.append(self.journal.event(
            action="runtime-policy-violation" if out else "runtime-policy-compliant",
            category=["configuration"], type=["change"], dataset=DATASET,
            outcome="failure" if out else "success",
            reason=",".join(now) if out else None,
            message=(f"domain {info.name} is out of runtime policy: {', '.join(now)}" if out
                     else f"domain {info.name} is back within runtime policy"),
            tee={"type": info.tee_type,
                 "vm": {"name": info.name, "uuid": info.uuid},
                 "policy": {"result": "fail" if out else "pass", "violations": list(now)}},
        ))
