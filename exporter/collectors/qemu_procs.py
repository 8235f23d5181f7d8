"""Confidential QEMU guests found in ``/proc``, including those libvirt does not manage (Kata Containers /
Confidential Containers start QEMU themselves).

A process is a confidential guest when its command line creates a ``sev-guest``, ``sev-snp-guest`` or
``tdx-guest`` object (``-object sev-guest,id=...`` or the JSON form libvirt uses,
``-object {"qom-type":"sev-guest",...}``). ``sev-guest`` with policy bit 2 (ES) is reported as ``sev-es``
(AMD SEV API, pub. 55766, section 3).

Kata Containers (Confidential Containers) start QEMU themselves. Their runtime class (``kata-qemu-snp``,
``kata-qemu-tdx``, ``kata-qemu-sev``, ``kata-qemu-nvidia-gpu-snp``, ...) names the TEE; kata-deploy installs one
shim per class (``containerd-shim-kata-qemu-snp-v2``) and one configuration file (``configuration-qemu-snp.toml``),
and the shim, a child subreaper, is the parent of the QEMU it daemonizes. Where the QEMU command line itself
creates no confidential-guest object, the class found in its arguments or its parent's command line gives the
type. Guests are sized from the command line (``-m``, ``-smp``, ``memory-backend-*`` objects); memory hot-plugged
later through QMP is not visible there.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from exporter.collectors.base import Collector, CollectorContext

_OBJECT_TYPES = {"sev-guest": "sev", "sev-snp-guest": "sev-snp", "tdx-guest": "tdx"}
# Kata names its QEMU "sandbox-<id>" and keeps its sockets under /run/vc/vm/<id>/.
_KATA_ID = (re.compile(r"^sandbox-([0-9A-Za-z_.-]+)"), re.compile(r"/run/vc/vm/([0-9A-Za-z_.-]+)/"))
# A runtime class / shim / configuration name ending in the TEE: kata-qemu-snp, containerd-shim-kata-qemu-tdx-v2,
# configuration-qemu-nvidia-gpu-snp.toml; kata-deploy's QEMU builds: qemu-system-x86_64-snp-experimental.
_RUNTIME_CLASS = re.compile(r"(?:kata-|configuration-)qemu(?:-[a-z0-9]+)*?-(snp|sev|tdx)(?:-v2|\.toml)?(?![a-z0-9-])"
                            r"|qemu-system-[a-z0-9_]+-(snp|tdx)-experimental")
_CLASS_TEE = {"snp": "sev-snp", "sev": "sev", "tdx": "tdx"}
_MEMORY_BACKENDS = ("memory-backend-ram", "memory-backend-file", "memory-backend-memfd")
_SIZE = re.compile(r"^(\d+)([kKmMgGtT]?)[bB]?$")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


@dataclass(frozen=True)
class QemuGuest:
    pid: int
    tee_type: str
    managed: bool
    sandbox_id: str
    memory_bytes: int | None = None
    vcpus: int | None = None


def _object(spec: str) -> dict[str, object]:
    """One ``-object`` argument as a dict with ``qom-type``, in QEMU's keyval or JSON syntax ({} if unreadable)."""
    if spec.startswith("{"):
        try:
            obj = json.loads(spec)
        except json.JSONDecodeError:
            return {}
        return obj if isinstance(obj, dict) else {}
    kind, _, rest = spec.partition(",")
    opts: dict[str, object] = dict(item.partition("=")[::2] for item in rest.split(",") if item)
    return {**opts, "qom-type": kind}


def _int(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    try:
        return int(str(value), 0)
    except ValueError:
        return None


def parse_size(value: object) -> int | None:
    """A QEMU size: bytes as a JSON number, or ``<n>[KMGT]`` text; ``-m``'s bare number is MiB (see callers)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _SIZE.match(str(value))
    return int(match.group(1)) * _UNITS[match.group(2).lower()] if match else None


def _tee_from_objects(objects: list[dict[str, object]]) -> str | None:
    tee = None
    for obj in objects:
        kind = obj.get("qom-type")
        if kind in _OBJECT_TYPES:
            tee = _OBJECT_TYPES[str(kind)]
            if tee == "sev" and (_int(obj.get("policy", 0)) or 0) & 0x4:
                tee = "sev-es"
    return tee


def tee_from_runtime_class(args: list[str]) -> str | None:
    """The TEE a Kata runtime class, shim or configuration name in ``args`` stands for."""
    for arg in args:
        match = _RUNTIME_CLASS.search(arg)
        if match:
            return _CLASS_TEE[match.group(1) or match.group(2)]
    return None


def _memory_bytes(argv: list[str], objects: list[dict[str, object]]) -> int | None:
    """Guest RAM: the memory backends' sizes when the command line has any, else ``-m`` (unitless = MiB)."""
    backends = [parse_size(o.get("size")) for o in objects if o.get("qom-type") in _MEMORY_BACKENDS]
    if backends and None not in backends:
        return sum(b for b in backends if b is not None)
    for flag, value in itertools.pairwise(argv):
        if flag == "-m":
            first = value.split(",")[0]
            first = first.removeprefix("size=")
            return parse_size(first + "M" if first.isdigit() else first)
    return None


def _vcpus(argv: list[str]) -> int | None:
    """Boot vCPUs from ``-smp N,...`` or ``-smp cpus=N,...`` (hot-pluggable ``maxcpus`` not counted)."""
    for flag, value in itertools.pairwise(argv):
        if flag == "-smp":
            for item in value.split(","):
                key, eq, count = item.partition("=")
                if (not eq and key.isdigit()) or (key == "cpus" and count.isdigit()):
                    return int(count if eq else key)
            return None
    return None


def parse_cmdline(pid: int, data: bytes, parent: bytes = b"") -> QemuGuest | None:
    """Classify one ``/proc/<pid>/cmdline`` (NUL-separated argv), with its parent's cmdline for the Kata runtime
    class. Pure: bytes in, guest or None out."""
    argv = _argv(data)
    if not argv or "qemu" not in Path(argv[0]).name:
        return None
    objects = [_object(value) for flag, value in itertools.pairwise(argv) if flag == "-object"]
    tee = _tee_from_objects(objects)
    sandbox = _sandbox_id(argv)
    if tee is None and sandbox:
        tee = tee_from_runtime_class(argv) or tee_from_runtime_class(_argv(parent))
    if tee is None:
        return None
    return QemuGuest(pid, tee, _libvirt_managed(argv), sandbox, _memory_bytes(argv, objects), _vcpus(argv))


def _argv(data: bytes) -> list[str]:
    return [a.decode("utf-8", "replace") for a in data.split(b"\0") if a]


def _libvirt_managed(argv: list[str]) -> bool:
    # libvirt always names the guest "guest=<name>" and passes its master key secret object.
    return any(a.startswith("guest=") for a in argv) and any("masterKey0" in a for a in argv)


def _sandbox_id(argv: list[str]) -> str:
    for flag, value in itertools.pairwise(argv):
        if flag == "-name":
            match = _KATA_ID[0].match(value)
            if match:
                return match.group(1)
    for arg in argv:
        match = _KATA_ID[1].search(arg)
        if match:
            return match.group(1)
    return ""


def _parent_cmdline(proc_root: Path, pid_dir: Path) -> bytes:
    """The parent's cmdline; ``stat``'s fourth field is the ppid, after the parenthesised comm (proc(5))."""
    try:
        stat = (pid_dir / "stat").read_bytes()
        ppid = stat[stat.rindex(b")") + 2:].split()[1].decode()
        return (proc_root / ppid / "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return b""


def scan(proc_root: Path) -> list[QemuGuest]:
    guests: list[QemuGuest] = []
    try:
        entries = list(proc_root.iterdir())
    except OSError:  # no procfs at that root: nothing to find, as node_exporter treats a missing source
        return guests
    for entry in entries:
        if not entry.name.isdigit():
            continue
        try:
            data = (entry / "cmdline").read_bytes()
        except OSError:  # the process exited while we looked
            continue
        if b"qemu" not in data.split(b"\0", 1)[0]:
            continue
        guest = parse_cmdline(int(entry.name), data)
        if guest is None and (b"sandbox-" in data or b"/run/vc/vm/" in data):
            # Only a Kata sandbox without a TEE object needs its parent (the shim) read for the runtime class.
            guest = parse_cmdline(int(entry.name), data, _parent_cmdline(proc_root, entry))
        if guest is not None:
            guests.append(guest)
    return guests


class QemuProcsCollector(Collector):
    name = "qemu"

    def __init__(self, proc_root: Path) -> None:
        self.proc_root = proc_root

    def collect(self) -> Iterable[Metric]:
        guests = scan(self.proc_root)
        counts = Counter((g.tee_type, "true" if g.managed else "false") for g in guests)
        total = GaugeMetricFamily("tee_qemu_guests", "Confidential QEMU processes found in /proc.",
                                  labels=["tee_type", "managed"])
        for (tee, managed), count in sorted(counts.items()):
            total.add_metric([tee, managed], count)
        yield total
        info = GaugeMetricFamily("tee_qemu_guest_info", "Confidential QEMU guests libvirt does not manage.",
                                 labels=["sandbox_id", "tee_type", "pid"])
        for g in sorted(guests, key=lambda g: g.pid):
            if not g.managed:
                info.add_metric([g.sandbox_id, g.tee_type, str(g.pid)], 1)
        yield info
        yield from _sizes(g for g in guests if not g.managed)


def _sizes(guests: Iterable[QemuGuest]) -> Iterable[Metric]:
    labels = ["sandbox_id", "tee_type", "pid"]
    memory = GaugeMetricFamily("tee_qemu_guest_memory_bytes", "Guest RAM of confidential QEMU guests libvirt does "
                               "not manage, from the command line (memory backends, else -m).", labels=labels)
    vcpus = GaugeMetricFamily("tee_qemu_guest_vcpus", "Boot vCPUs (-smp) of confidential QEMU guests libvirt "
                              "does not manage.", labels=labels)
    for g in sorted(guests, key=lambda g: g.pid):
        key = [g.sandbox_id, g.tee_type, str(g.pid)]
        if g.memory_bytes is not None:
            memory.add_metric(key, g.memory_bytes)
        if g.vcpus is not None:
            vcpus.add_metric(key, g.vcpus)
    yield memory
    yield vcpus


def build(ctx: CollectorContext) -> QemuProcsCollector:
    return QemuProcsCollector(ctx.settings.proc_root)
