"""AMD Platform Security Processor firmware versions from the ccp driver.

Documentation/ABI/testing/sysfs-driver-ccp: ``/sys/bus/pci/devices/<BDF>/tee_version`` (the PSP's TEE
firmware) and ``bootloader_version`` (the AGESA bootloader), since Linux 6.4. drivers/crypto/ccp/sp-pci.c
prints the 32-bit version register as four two-digit hex bytes, ``AA.BB.CC.DD``, and hides the file when the
register reads all ones (the platform forbids access), so an absent file is normal.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from exporter.platform.problems import Problems, read_value

COMPONENTS = {"tee_version": "tee", "bootloader_version": "bootloader"}
_VERSION = re.compile(r"^[0-9a-f]{2}\.[0-9a-f]{2}\.[0-9a-f]{2}\.[0-9a-f]{2}$")


@dataclass(frozen=True)
class PspVersion:
    device: str  # PCI address, e.g. 0000:47:00.1
    component: str  # tee | bootloader
    version: str


def parse_version(text: str) -> str | None:
    value = text.strip().lower()
    return value if _VERSION.match(value) else None


def read(sys_root: Path, problems: Problems) -> list[PspVersion]:
    devices = sys_root / "bus" / "pci" / "devices"
    try:
        entries = sorted(devices.iterdir())
    except OSError:
        return []
    out = []
    for device in entries:
        for name, component in COMPONENTS.items():
            path = device / name
            version = read_value(path, problems, "psp", parse_version, "AA.BB.CC.DD")
            if version is not None:
                out.append(PspVersion(device.name, component, version))
    return out
