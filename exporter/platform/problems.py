"""Malformed or unreadable platform files: counted per source and logged once per file.

node_exporter's rule: a source that is absent is not an error, but one that is present and cannot be understood
is, and an operator must see it without the log filling up every scrape. The count goes up every scrape the file
stays bad (so ``rate()`` says it persists); the log line is written once per file until it reads well again.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from prometheus_client.core import CounterMetricFamily

log = logging.getLogger(__name__)

SOURCES = ("cmdline", "cpuinfo", "kvm_param", "misc_cgroup", "psp", "snp_status", "tdx_module")


class Problems:
    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def malformed(self, source: str, path: Path | str, reason: str) -> None:
        """Count one bad read of ``path`` (belonging to ``source``); log it unless already logged."""
        key = str(path)
        with self._lock:
            self._counts[source] += 1
            first = key not in self._logged
            self._logged.add(key)
        if first:
            log.warning("host platform file malformed", extra={"source": source, "path": key, "reason": reason})

    def ok(self, path: Path | str) -> None:
        """``path`` read well: a later failure is logged again."""
        with self._lock:
            self._logged.discard(str(path))

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily("tee_host_platform_malformed",
                                     "Reads of host platform files (sysfs, procfs, /dev/sev) that were present but "
                                     "could not be parsed.", labels=["source"])
        with self._lock:
            for source in SOURCES:
                family.add_metric([source], float(self._counts[source]))
        return family


def read_text(path: Path, problems: Problems, source: str) -> str | None:
    """The file's text, or None when it is not present (absent, or not readable by this user).

    Other read errors (EIO from a sysfs attribute whose firmware call failed) are counted as malformed.
    """
    try:
        return path.read_text()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.malformed(source, path, f"unreadable: {exc}")
        return None


T = TypeVar("T")


def read_value(path: Path, problems: Problems, source: str, parse: Callable[[str], T | None],
               expected: str) -> T | None:
    """The file's value as ``parse`` reads it; None when the file is not present, or when its text is not
    ``expected`` (then counted as malformed, naming what it held)."""
    text = read_text(path, problems, source)
    if text is None:
        return None
    value = parse(text)
    if value is None:
        problems.malformed(source, path, f"not {expected}: {text.strip()[:40]!r}")
        return None
    problems.ok(path)
    return value
