"""The misc cgroup controller's SEV, SEV-ES and TDX key accounting (Documentation/admin-guide/cgroup-v2.rst, "Misc").

``misc.capacity`` (root only) and ``misc.current`` are flat-keyed ``<resource> <count>`` files; ``misc.max``
(non-root only) holds a count or ``max`` (no limit); ``misc.events`` (non-root only) holds ``<resource>.max
<count>``: how often an allocation was refused because the cgroup was at its limit (kernel/cgroup/misc.c).
The kernel's resource names are ``sev``, ``sev_es`` and ``tdx``; SEV-SNP guests draw on the ``sev_es`` keys
(AMD SEV-SNP ABI spec, pub. 56860, "ASIDs"), so there is no SNP entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from exporter.platform.problems import Problems, read_text

RESOURCES = {"sev": "sev", "sev_es": "sev-es", "tdx": "tdx"}  # kernel resource name -> tee_type


class MalformedLine(ValueError):
    pass


def parse_flat_keyed(text: str, key_suffix: str = "", allow_max: bool = False) -> dict[str, int | None]:
    """``{tee_type: value}`` of the TEE resources in a flat-keyed file; ``max`` (no limit, ``misc.max`` only)
    gives None.

    Keys are ``<resource><key_suffix>``. Lines for other resources (a kernel may add some) are ignored; a TEE
    resource line whose value is not a count raises ``MalformedLine``.
    """
    out: dict[str, int | None] = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key_suffix:
            if not key.endswith(key_suffix):
                continue
            key = key.removesuffix(key_suffix)
        if key not in RESOURCES:
            continue
        value = value.strip()
        if allow_max and value == "max":
            out[RESOURCES[key]] = None
        elif value.isdigit():
            out[RESOURCES[key]] = int(value)
        else:
            raise MalformedLine(f"{key}: {value[:40]!r} is not a count")
    return out


@dataclass
class MiscUsage:
    """One cgroup's misc files, by tee_type; files that are absent leave their dict empty."""

    capacity: dict[str, int] = field(default_factory=dict)
    current: dict[str, int] = field(default_factory=dict)
    max: dict[str, int | None] = field(default_factory=dict)
    events_max: dict[str, int] = field(default_factory=dict)


def read(cgroup: Path, problems: Problems) -> MiscUsage:
    usage = MiscUsage()
    for name, suffix in (("misc.capacity", ""), ("misc.current", ""), ("misc.max", ""), ("misc.events", ".max")):
        path = cgroup / name
        text = read_text(path, problems, "misc_cgroup")
        if text is None:
            continue
        try:
            values = parse_flat_keyed(text, suffix, allow_max=name == "misc.max")
        except MalformedLine as exc:
            problems.malformed("misc_cgroup", path, str(exc))
            continue
        problems.ok(path)
        if name == "misc.max":
            usage.max.update(values)
        else:  # without allow_max every value is a count
            target = {"misc.capacity": usage.capacity, "misc.current": usage.current,
                      "misc.events": usage.events_max}[name]
            target.update({tee: v for tee, v in values.items() if v is not None})
    return usage
