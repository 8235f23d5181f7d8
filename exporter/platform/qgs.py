"""Up/down probe of the TDX Quote Generation Service (QGS) socket.

Intel's QGS (DCAP ``tdx-qgs`` package) listens on a Unix stream socket, ``/var/run/tdx-qgs/qgs.socket`` by
default; QEMU forwards TD quote requests there (``-object tdx-guest,quote-generation-socket=...``). If it is
down, TDX guests cannot produce quotes, so attestation of every TD on the host fails. The probe only connects and
closes: it sends no request, so it does not occupy the service.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProbeResult:
    up: bool
    connect_seconds: float | None  # only when up
    error: str | None


def probe(path: Path, timeout: float = 1.0) -> ProbeResult:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    start = time.perf_counter()
    try:
        sock.connect(str(path))
    except OSError as exc:
        return ProbeResult(False, None, exc.strerror or type(exc).__name__)
    finally:
        elapsed = time.perf_counter() - start
        sock.close()
    return ProbeResult(True, elapsed, None)
