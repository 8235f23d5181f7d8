"""vCPU families of the libvirt collector: VM exits by reason, vCPU run/wait/steal times, halt polling.

Summed over each domain's vCPUs by default; ``--collector.libvirt.per-vcpu`` adds a ``vcpu`` label instead
(cardinality: one series per vCPU). Queries that aggregate ``by (domain)`` work in both modes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.samples import add_sample
from exporter.virt.domain_xml import DomainInfo
from exporter.virt.vcpu_stats import OTHER_REASON, USERSPACE_EXITS, exit_reasons, vcpus

NS = 1e9


@dataclass(frozen=True)
class _Source:
    """What one series set is built from: a domain (per-vCPU off) or one of its vCPUs."""

    labels: dict[str, str]  # {"domain": ...} or {"domain": ..., "vcpu": ...}, shared by its samples
    key: tuple[str, int | None]  # (uuid, vCPU index or None) for the ``other`` reason's state
    times: Mapping[str, int]
    kvm: Mapping[str, int]


class OtherExits:
    """Keeps ``reason="other"`` (a difference of counters read without a common snapshot) from ever going down:
    a torn read can see ``exits`` incremented before the reason counter of the same exit. Its value only falls
    back when one of the counters it is computed from fell (vCPU or domain restarted)."""

    def __init__(self) -> None:
        # key -> (the counters read: exits then each named reason, the "other" reported)
        self._last: dict[tuple[str, int | None], tuple[tuple[int, ...], int]] = {}
        self._lock = threading.Lock()  # concurrent scrapes share nothing else

    def value(self, key: tuple[str, int | None], counters: tuple[int, ...], other: int) -> int:
        """``other`` to report for this read of ``counters`` (``exits`` and the named reasons, in a fixed order)."""
        with self._lock:
            last = self._last.get(key)
            if last is not None and all(now >= before for now, before in zip(counters, last[0], strict=True)):
                other = max(other, last[1])
            self._last[key] = (counters, other)
        return other

    def retain(self, uuids: set[str]) -> None:
        with self._lock:
            self._last = {k: v for k, v in self._last.items() if k[0] in uuids}


def _sum(items: Iterable[Mapping[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for item in items:
        for name, value in item.items():
            total[name] = total.get(name, 0) + value
    return total


def _sources(info: DomainInfo, stats: Mapping[str, Any], per_vcpu: bool) -> Iterator[_Source]:
    found = list(vcpus(stats))
    if not found:
        return
    if per_vcpu:
        for v in found:
            yield _Source({"domain": info.name, "vcpu": str(v.index)}, (info.uuid, v.index), v.times, v.kvm)
    else:
        yield _Source({"domain": info.name}, (info.uuid, None), _sum(v.times for v in found),
                      _sum(v.kvm for v in found))


def _counter(name: str, doc: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


def vcpu_families(records: Iterable[tuple[DomainInfo, Mapping[str, Any]]], per_vcpu: bool,
                  other: OtherExits) -> Iterator[Metric]:
    base = ["domain", "vcpu"] if per_vcpu else ["domain"]
    exits = _counter("tee_vm_exits", "VM exits by reason (KVM binary stats); sum without(reason) is KVM's total.",
                     [*base, "reason"])
    userspace = _counter("tee_vm_userspace_exits",
                         "Returns to QEMU for a pending signal or an interrupt request (also in tee_vm_exits).",
                         [*base, "reason"])
    emulated = _counter("tee_vm_emulated_instructions", "Guest instructions emulated by KVM.", base)
    times = {"time": _counter("tee_domain_vcpu_cpu_seconds", "Host CPU time the vCPU threads ran.", base),
             "wait": _counter("tee_domain_vcpu_wait_seconds",
                              "Time the vCPUs wanted to run while the host ran something else (libvirt vcpu.wait).",
                              base),
             "delay": _counter("tee_domain_vcpu_delay_seconds",
                               "Time the vCPU threads waited in the host run queue (steal time; libvirt vcpu.delay).",
                               base)}
    polls = _counter("tee_vm_halt_poll_attempts", "Halt polls KVM attempted before sleeping a halted vCPU.", base)
    poll_ok = _counter("tee_vm_halt_poll_successes", "Halt polls that saw a wake-up before giving up.", base)
    poll_invalid = _counter("tee_vm_halt_poll_invalid", "Halt polls ended by an invalid wake-up.", base)
    wakeups = _counter("tee_vm_halt_wakeups", "Wake-ups of halted vCPUs.", base)
    poll_time = _counter("tee_vm_halt_poll_seconds", "Time spent halt polling, by whether the poll succeeded.",
                         [*base, "result"])
    halt_wait = _counter("tee_vm_halt_wait_seconds", "Time halted vCPUs slept after polling.", base)
    kvm_counters = {"insn_emulation": emulated, "halt_attempted_poll": polls, "halt_successful_poll": poll_ok,
                    "halt_poll_invalid": poll_invalid, "halt_wakeup": wakeups}
    for info, stats in records:
        for src in _sources(info, stats, per_vcpu):
            labels = src.labels
            for name, family in times.items():
                if name in src.times:
                    add_sample(family, labels, src.times[name] / NS)
            _add_exits(exits, src, other)
            for name, reason in USERSPACE_EXITS.items():
                if name in src.kvm:
                    add_sample(userspace, {**labels, "reason": reason}, src.kvm[name])
            for name, family in kvm_counters.items():
                if name in src.kvm:
                    add_sample(family, labels, src.kvm[name])
            for name, result in (("halt_poll_success_ns", "success"), ("halt_poll_fail_ns", "fail")):
                if name in src.kvm:
                    add_sample(poll_time, {**labels, "result": result}, src.kvm[name] / NS)
            if "halt_wait_ns" in src.kvm:
                add_sample(halt_wait, labels, src.kvm["halt_wait_ns"] / NS)
    yield from (exits, userspace, emulated, *times.values(), polls, poll_ok, poll_invalid, wakeups, poll_time,
                halt_wait)


def _add_exits(family: CounterMetricFamily, src: _Source, other: OtherExits) -> None:
    reasons = exit_reasons(src.kvm)
    if reasons is None:
        return
    counters = (src.kvm["exits"], *(v for reason, v in reasons.items() if reason != OTHER_REASON))
    reasons[OTHER_REASON] = other.value(src.key, counters, reasons[OTHER_REASON])
    for reason, count in reasons.items():
        add_sample(family, {**src.labels, "reason": reason}, count)
