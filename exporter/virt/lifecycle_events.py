"""libvirt domain lifecycle events and their details, named, with the ECS type and outcome each one means.

The numbers are libvirt's ``virDomainEventType`` and the per-type detail enums (``virDomainEventDefinedDetailType``,
``virDomainEventStoppedDetailType``, ... in libvirt-domain.h). A guest that died (QEMU killed, guest panic) must be
journaled as a failure, not as a clean stop. After a ``kill -9`` of QEMU, libvirt 11 sets the domain's state reason
to ``VIR_DOMAIN_SHUTOFF_CRASHED`` but sends the event ``STOPPED`` with detail ``FAILED`` ("host emulator
failed"); ``STOPPED``/``CRASHED`` comes when QEMU itself reports a guest crash. Both count as ``crashed``, with
outcome failure, the detail telling them apart. Pure: numbers in, names out.
"""

from __future__ import annotations

from dataclasses import dataclass

import libvirt


@dataclass(frozen=True)
class Transition:
    """One (event, detail) pair as the exporter reports it."""

    event: str        # metric label ``event`` and ``domain-<event>`` journal action
    detail: str       # ``tee.vm.detail`` in the journal
    ecs_type: str     # ECS event.type
    outcome: str      # ECS event.outcome


_TYPES: dict[int, tuple[str, str]] = {  # virDomainEventType -> (event, ECS type)
    libvirt.VIR_DOMAIN_EVENT_DEFINED: ("defined", "creation"),
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: ("undefined", "deletion"),
    libvirt.VIR_DOMAIN_EVENT_STARTED: ("started", "start"),
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: ("suspended", "change"),
    libvirt.VIR_DOMAIN_EVENT_RESUMED: ("resumed", "change"),
    libvirt.VIR_DOMAIN_EVENT_STOPPED: ("stopped", "end"),
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: ("shutdown", "end"),
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: ("pmsuspended", "change"),
    libvirt.VIR_DOMAIN_EVENT_CRASHED: ("crashed", "error"),
}

# (event type, detail) -> detail name; every value libvirt 11 defines.
_DETAILS: dict[tuple[int, int], str] = {
    (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_ADDED): "added",
    (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_UPDATED): "updated",
    (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_RENAMED): "renamed",
    (libvirt.VIR_DOMAIN_EVENT_DEFINED, libvirt.VIR_DOMAIN_EVENT_DEFINED_FROM_SNAPSHOT): "from_snapshot",
    (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED): "removed",
    (libvirt.VIR_DOMAIN_EVENT_UNDEFINED, libvirt.VIR_DOMAIN_EVENT_UNDEFINED_RENAMED): "renamed",
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED): "booted",
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_MIGRATED): "migrated",
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_RESTORED): "restored",
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_FROM_SNAPSHOT): "from_snapshot",
    (libvirt.VIR_DOMAIN_EVENT_STARTED, libvirt.VIR_DOMAIN_EVENT_STARTED_WAKEUP): "wakeup",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED): "paused",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED): "migrated",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR): "io_error",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG): "watchdog",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_RESTORED): "restored",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_FROM_SNAPSHOT): "from_snapshot",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_API_ERROR): "api_error",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY): "postcopy",
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED): "postcopy_failed",
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED): "unpaused",
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_MIGRATED): "migrated",
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT): "from_snapshot",
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY): "postcopy",
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED): "postcopy_failed",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN): "shutdown",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED): "destroyed",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED): "crashed",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_MIGRATED): "migrated",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_SAVED): "saved",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED): "failed",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FROM_SNAPSHOT): "from_snapshot",
    (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_FINISHED): "finished",
    (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST): "guest",
    (libvirt.VIR_DOMAIN_EVENT_SHUTDOWN, libvirt.VIR_DOMAIN_EVENT_SHUTDOWN_HOST): "host",
    (libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED, libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED_MEMORY): "memory",
    (libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED, libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED_DISK): "disk",
    (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_PANICKED): "panicked",
    (libvirt.VIR_DOMAIN_EVENT_CRASHED, libvirt.VIR_DOMAIN_EVENT_CRASHED_CRASHLOADED): "crashloaded",
}

# What went wrong, as opposed to what an operator or the guest asked for.
_FAILURES = {
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_WATCHDOG),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_API_ERROR),
    (libvirt.VIR_DOMAIN_EVENT_SUSPENDED, libvirt.VIR_DOMAIN_EVENT_SUSPENDED_POSTCOPY_FAILED),
    (libvirt.VIR_DOMAIN_EVENT_RESUMED, libvirt.VIR_DOMAIN_EVENT_RESUMED_POSTCOPY_FAILED),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED),
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED),
}

# A domain whose emulator died or that stopped because it crashed is counted as ``crashed``, as a guest panic is.
_EVENT_OVERRIDES = {
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_CRASHED): "crashed",
    (libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_FAILED): "crashed",
}

EVENT_NAMES = tuple(name for name, _ in _TYPES.values())


def transition(event: int, detail: int) -> Transition | None:
    """The named transition, or None for an event type this libvirt did not define when this was written."""
    if event not in _TYPES:
        return None
    name, ecs_type = _TYPES[event]
    key = (event, detail)
    if key in _FAILURES:
        outcome = "failure"
    else:
        outcome = "success" if key in _DETAILS else "unknown"
    if event == libvirt.VIR_DOMAIN_EVENT_CRASHED:
        outcome = "failure"
    return Transition(_EVENT_OVERRIDES.get(key, name), _DETAILS.get(key, f"unknown_{detail}"),
                      ecs_type, outcome)


def is_boot_resume(event: int, running_reason: int | None) -> bool:
    """libvirt resumes a new guest's vCPUs (RESUMED) before it reports STARTED; the domain's running reason is
    then still BOOTED (virDomainRunningReason), whereas a real resume leaves it UNPAUSED."""
    return event == libvirt.VIR_DOMAIN_EVENT_RESUMED and running_reason == libvirt.VIR_DOMAIN_RUNNING_BOOTED
