"""The loaded TDX module and its runtime-update loader, from the ``tdx_host`` faux device.

Documentation/ABI/testing/sysfs-devices-faux-tdx-host: ``/sys/devices/faux/tdx_host/version`` and
``seamldr_version`` are "major.minor.update" (e.g. ``1.5.08``); ``num_remaining_updates`` is how many more
runtime module updates the CPU's TCB-tracking table accepts (Intel TDX SEAMLDR Interface Specification
343755, "SEAMLDR_INFO"). When it reaches 0 the module can only be updated by a reboot. The two loader files
exist only on kernels with runtime-update support, and reading them can fail with EIO when the SEAMCALL does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from exporter.platform.problems import Problems, read_text

DEVICE = Path("devices") / "faux" / "tdx_host"
T = TypeVar("T")
_VERSION = re.compile(r"^\d{1,3}\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class TdxModule:
    version: str | None
    seamldr_version: str | None
    remaining_updates: int | None


def parse_version(text: str) -> str | None:
    value = text.strip()
    return value if _VERSION.match(value) else None


def parse_count(text: str) -> int | None:
    value = text.strip()
    return int(value) if value.isdigit() else None


def _field(device: Path, name: str, parse: Callable[[str], T | None], problems: Problems) -> T | None:
    path = device / name
    text = read_text(path, problems, "tdx_module")
    if text is None:
        return None
    value = parse(text)
    if value is None:
        problems.malformed("tdx_module", path, f"unexpected value {text.strip()[:40]!r}")
        return None
    problems.ok(path)
    return value


def read(sys_root: Path, problems: Problems) -> TdxModule | None:
    """None when the device is absent (no TDX host driver, or not an Intel host)."""
    device = sys_root / DEVICE
    if not device.is_dir():
        return None
    return TdxModule(_field(device, "version", parse_version, problems),
                     _field(device, "seamldr_version", parse_version, problems),
                     _field(device, "num_remaining_updates", parse_count, problems))
