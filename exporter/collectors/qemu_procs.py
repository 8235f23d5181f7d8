"""Confidential QEMU guests found in ``/proc``, including those libvirt does not manage (Kata Containers /
Confidential Containers start QEMU themselves).

A process is a confidential guest when its command line creates a ``sev-guest``, ``sev-snp-guest`` or
``tdx-guest`` object (``-object sev-guest,id=...`` or the JSON form libvirt uses,
``-object {"qom-type":"sev-guest",...}``). ``sev-guest`` with policy bit 2 (ES) is reported as ``sev-es``
(AMD SEV API, pub. 55766, section 3).
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


@dataclass(frozen=True)
class QemuGuest:
    pid: int
    tee_type: str
    managed: bool
    sandbox_id: str


def _object_type(spec: str) -> tuple[str, int] | None:
    """(qom type, policy) of one ``-object`` argument, in QEMU's keyval or JSON syntax."""
    if spec.startswith("{"):
        try:
            obj = json.loads(spec)
        except json.JSONDecodeError:
            return None
        policy = obj.get("policy", 0)
        return str(obj.get("qom-type", "")), policy if isinstance(policy, int) else 0
    kind, _, rest = spec.partition(",")
    opts = dict(item.partition("=")[::2] for item in rest.split(",") if item)
    try:
        policy = int(opts.get("policy", "0"), 0)
    except ValueError:
        policy = 0
    return kind, policy


def parse_cmdline(pid: int, data: bytes) -> QemuGuest | None:
    """Classify one ``/proc/<pid>/cmdline`` (NUL-separated argv). Pure: bytes in, guest or None out."""
    argv = [a.decode("utf-8", "replace") for a in data.split(b"\0") if a]
    if not argv or "qemu" not in Path(argv[0]).name:
        return None
    tee = None
    for flag, value in itertools.pairwise(argv):
        if flag == "-object":
            parsed = _object_type(value)
            if parsed and parsed[0] in _OBJECT_TYPES:
                tee = _OBJECT_TYPES[parsed[0]]
                if tee == "sev" and parsed[1] & 0x4:
                    tee = "sev-es"
    if tee is None:
        return None
    return QemuGuest(pid, tee, _libvirt_managed(argv), _sandbox_id(argv))


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


def scan(proc_root: Path) -> list[QemuGuest]:
    guests = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            data = (entry / "cmdline").read_bytes()
        except OSError:  # the process exited while we looked
            continue
        guest = parse_cmdline(int(entry.name), data)
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


def build(ctx: CollectorContext) -> QemuProcsCollector:
    return QemuProcsCollector(ctx.settings.proc_root)
