"""SEV-SNP platform status from the PSP firmware through ``/dev/sev``.

The ``SNP_PLATFORM_STATUS`` firmware command (AMD SEV Secure Nested Paging Firmware ABI Specification, pub.
56860, section 8.3 "SNP_PLATFORM_STATUS", table "SNP_PLATFORM_STATUS Structure") returns 0x20 bytes,
little-endian:

    0x00 API_MAJOR (u8)  0x01 API_MINOR (u8)  0x02 STATE (u8)  0x03 bit 0 IS_RMP_INIT
    0x04 BUILD_ID (u32)
    0x08 bit 0 MASK_CHIP_ID, bit 1 MASK_CHIP_KEY, bit 2 VLEK_EN (u32 of flags; later bits are newer features)
    0x0C GUEST_COUNT (u32)
    0x10 CURRENT_TCB (TCB_VERSION, u64)   0x18 REPORTED_TCB (TCB_VERSION, u64)

Linux passes it through the ``SEV_ISSUE_CMD`` ioctl with command ``SNP_PLATFORM_STATUS`` (include/uapi/linux/
psp-sev.h, ``struct sev_user_data_snp_status``). TCB_VERSION's byte positions differ on Turin (family 1Ah),
which adds the FMC field (spec section 2.2, "TCB_VERSION"); ``exporter.attest.snp.decode_tcb`` knows both.
The command costs a PSP round trip that competes with guest launches, so it is read rarely and cached.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from exporter.attest.snp import TcbVersion, decode_tcb
from exporter.platform.problems import Problems, read_text

STATUS_SIZE = 0x20
SNP_PLATFORM_STATUS = 9  # enum position in include/uapi/linux/psp-sev.h
# _IOWR('S', 0x0, struct sev_issue_cmd): struct sev_issue_cmd { u32 cmd; u64 data; u32 error; } __packed = 16 bytes
SEV_ISSUE_CMD = (3 << 30) | (16 << 16) | (ord("S") << 8) | 0x0
_FLAG_MASK_CHIP_ID, _FLAG_MASK_CHIP_KEY, _FLAG_VLEK_EN = 1 << 0, 1 << 1, 1 << 2
TURIN_FAMILY = 0x1A


class SnpStatusError(ValueError):
    """The buffer is not an SNP_PLATFORM_STATUS structure."""


@dataclass(frozen=True)
class SnpPlatformStatus:
    api_major: int
    api_minor: int
    state: int
    rmp_initialized: bool
    build_id: int
    mask_chip_id: bool
    mask_chip_key: bool
    vlek_enabled: bool
    guest_count: int
    current_tcb: TcbVersion
    reported_tcb: TcbVersion

    @property
    def api_version(self) -> str:
        return f"{self.api_major}.{self.api_minor}"


def decode(data: bytes, product: str | None = None) -> SnpPlatformStatus:
    """Decode the 0x20-byte structure; ``product`` "Turin" selects Turin's TCB_VERSION layout."""
    if len(data) != STATUS_SIZE:
        raise SnpStatusError(f"SNP_PLATFORM_STATUS is {STATUS_SIZE} bytes, got {len(data)}")
    major, minor, state, rmp, build, flags, guests, current, reported = struct.unpack("<BBBBIIIQQ", data)
    return SnpPlatformStatus(major, minor, state, bool(rmp & 1), build, bool(flags & _FLAG_MASK_CHIP_ID),
                             bool(flags & _FLAG_MASK_CHIP_KEY), bool(flags & _FLAG_VLEK_EN), guests,
                             decode_tcb(current, product), decode_tcb(reported, product))


def cpu_product(cpuinfo: str) -> str | None:
    """"Turin" when /proc/cpuinfo's first ``cpu family`` is 26 (1Ah), else None (Milan/Genoa layout)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "cpu family":
            return "Turin" if value.strip() == str(TURIN_FAMILY) else None
    return None


def issue_platform_status(device: Path) -> bytes:
    """Run SNP_PLATFORM_STATUS through ``device`` (``/dev/sev``); OSError on failure, with the firmware's code."""
    buf = ctypes.create_string_buffer(STATUS_SIZE)
    cmd = bytearray(struct.pack("<IQI", SNP_PLATFORM_STATUS, ctypes.addressof(buf), 0))
    fd = os.open(device, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, SEV_ISSUE_CMD, cmd)
    except OSError as exc:
        (fw_error,) = struct.unpack_from("<I", cmd, 12)
        raise OSError(exc.errno, f"{exc.strerror} (firmware error {fw_error:#x})") from None
    finally:
        os.close(fd)
    return buf.raw


class SnpStatusReader:
    """Reads the status at most once per ``interval`` seconds; failures are retried on the same schedule."""

    def __init__(self, dev_root: Path, proc_root: Path, problems: Problems, interval: float = 600.0,
                 issue: Callable[[Path], bytes] = issue_platform_status,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.device = dev_root / "sev"
        self.proc_root, self.problems, self.interval = proc_root, problems, interval
        self._issue, self._clock = issue, clock
        self._status: SnpPlatformStatus | None = None
        self._read_at: float | None = None
        self._lock = threading.Lock()  # concurrent scrapes must not multiply the PSP calls
        self.last_success_wall: float | None = None

    def get(self) -> SnpPlatformStatus | None:
        with self._lock:
            now = self._clock()
            if self._read_at is None or now - self._read_at >= self.interval:
                self._read_at = now
                self._status = self._read()
            return self._status

    def _read(self) -> SnpPlatformStatus | None:
        if not self.device.exists():
            return None
        try:
            data = self._issue(self.device)
            cpuinfo = read_text(self.proc_root / "cpuinfo", self.problems, "cpuinfo") or ""
            status = decode(data, cpu_product(cpuinfo))
        except (OSError, SnpStatusError) as exc:
            self.problems.malformed("snp_status", self.device, str(exc))
            return None
        self.problems.ok(self.device)
        self.last_success_wall = time.time()
        return status
