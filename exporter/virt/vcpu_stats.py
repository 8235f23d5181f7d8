"""The ``vcpu.<n>.*`` keys of libvirt's ``VIR_DOMAIN_STATS_VCPU`` group, grouped per vCPU. Pure: a stats mapping in,
values out.

libvirt documents the group in ``virConnectGetAllDomainStats`` (libvirt-domain.c): ``vcpu.<n>.time``, ``.wait``
and ``.delay`` in nanoseconds (``delay``: time the vCPU thread sat in the host's run queue, what the guest sees as
steal time), and, on QEMU/KVM with binary stats (Linux 5.14+, ``KVM_GET_STATS_FD``, Documentation/virt/kvm/api.rst
section 4.133), every KVM per-vCPU statistic as ``vcpu.<n>.<name>.<kind>`` where ``<kind>`` is ``sum``
(cumulative), ``cur`` (instantaneous) or ``max``. KVM's names are those of ``struct kvm_vcpu_stat`` in
arch/x86/include/asm/kvm_host.h and include/linux/kvm_host.h (``exits``, ``io_exits``, ``halt_exits``, ...).

Only the names listed here are read: a kernel that adds a statistic does not add label values or series.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

# KVM exit counters that count disjoint exit reasons (each is also counted in KVM's ``exits``), -> reason label.
EXIT_REASONS: dict[str, str] = {
    "io_exits": "io",                   # IN/OUT instruction intercepts
    "mmio_exits": "mmio",               # MMIO accesses completed by QEMU (KVM_EXIT_MMIO)
    "halt_exits": "halt",               # HLT (and SEV-ES AP reset hold)
    "irq_exits": "irq",                 # external interrupts that arrived while the guest ran
    "irq_window_exits": "irq_window",   # interrupt-window exits (guest became interruptible)
    "nmi_window_exits": "nmi_window",   # NMI-window exits
    "hypercalls": "hypercall",          # VMCALL/VMMCALL (or VMGEXIT hypercalls) handled by KVM
}
OTHER_REASON = "other"  # exits minus the reasons above: EPT/NPF faults handled in the kernel, MSR, CPUID, ...
EXIT_REASON_LABELS = (*EXIT_REASONS.values(), OTHER_REASON)

# Returns to QEMU that are not exit reasons of their own: the exit that preceded them is counted above.
USERSPACE_EXITS: dict[str, str] = {"signal_exits": "signal", "request_irq_exits": "request_irq"}

# Halt polling (KVM polls a halted vCPU for a wake-up before it sleeps; Documentation/virt/kvm/halt-polling.rst).
HALT_POLL = ("halt_attempted_poll", "halt_successful_poll", "halt_poll_invalid", "halt_wakeup",
             "halt_poll_success_ns", "halt_poll_fail_ns", "halt_wait_ns")

KVM_COUNTERS = (*EXIT_REASONS, "exits", *USERSPACE_EXITS, "insn_emulation", *HALT_POLL)
TIMES = ("time", "wait", "delay")  # libvirt's own per-vCPU times, nanoseconds


@dataclass(frozen=True)
class VcpuStats:
    """One vCPU: libvirt's times (ns) and the KVM counters of ``KVM_COUNTERS`` it reported."""

    index: int
    times: Mapping[str, int]
    kvm: Mapping[str, int]


def vcpus(stats: Mapping[str, Any]) -> Iterator[VcpuStats]:
    """Every vCPU the stats mention (``vcpu.maximum`` bounds the indices; offline vCPUs report nothing)."""
    for index in range(int(stats.get("vcpu.maximum", stats.get("vcpu.current", 0)))):
        prefix = f"vcpu.{index}."
        times = {name: stats[prefix + name] for name in TIMES if prefix + name in stats}
        kvm = {name: stats[f"{prefix}{name}.sum"] for name in KVM_COUNTERS if f"{prefix}{name}.sum" in stats}
        if times or kvm:
            yield VcpuStats(index, times, kvm)


def exit_reasons(kvm: Mapping[str, int]) -> dict[str, int] | None:
    """Exits by reason, ``other`` being ``exits`` minus the named reasons (never below 0); None without ``exits``
    (TCG guests, kernels without binary stats)."""
    if "exits" not in kvm:
        return None
    named = {label: kvm.get(name, 0) for name, label in EXIT_REASONS.items()}
    named[OTHER_REASON] = max(0, kvm["exits"] - sum(named.values()))
    return named
