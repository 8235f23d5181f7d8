"""Which TEE types KVM enabled, and which the kernel command line asked for.

``/sys/module/kvm_amd/parameters/{sev,sev_es,sev_snp}`` and ``/sys/module/kvm_intel/parameters/tdx`` are the
modules' ``bool`` parameters (Documentation/ABI/stable/sysfs-module: "parameters/<name>" holds the current
value). KVM clears them at load time when the firmware or BIOS cannot provide the feature (arch/x86/kvm/svm/sev.c
``sev_hardware_setup``), so they say what is *enabled*, not what was asked. What was asked is on the kernel
command line (``kvm_amd.sev_es=0``; Documentation/admin-guide/kernel-parameters.rst, "module.parameter"), else
the module default: on for the three SEV parameters, off for ``tdx``. Options set in ``/etc/modprobe.d`` are not
visible from procfs and count as the default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from exporter.platform.problems import Problems, read_text, read_value


@dataclass(frozen=True)
class Param:
    module: str
    name: str
    tee_type: str
    default: bool


PARAMS = (Param("kvm_amd", "sev", "sev", True), Param("kvm_amd", "sev_es", "sev-es", True),
          Param("kvm_amd", "sev_snp", "sev-snp", True), Param("kvm_intel", "tdx", "tdx", False))
# kstrtobool()'s spellings (lib/kstrtox.c), which module bool parameters accept; older kernels printed int 1/0.
_TRUE, _FALSE = ("y", "1", "on"), ("n", "0", "off")


def parse_bool(text: str) -> bool | None:
    """A kernel boolean; None when it is not one."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


def parse_cmdline_requests(cmdline: str) -> dict[tuple[str, str], bool | None]:
    """``{(module, param): value}`` for the kvm parameters the command line sets; None when the value is not a
    boolean. The kernel treats ``-`` and ``_`` in parameter names alike; a bare ``kvm_amd.sev`` means on."""
    out: dict[tuple[str, str], bool | None] = {}
    wanted = {(p.module, p.name) for p in PARAMS}
    for token in cmdline.split():
        name, eq, value = token.partition("=")
        module, dot, param = name.replace("-", "_").partition(".")
        if dot and (module, param) in wanted:
            out[(module, param)] = parse_bool(value) if eq else True
    return out


def read_enabled(sys_root: Path, problems: Problems) -> dict[str, bool]:
    """``{tee_type: enabled}`` for each parameter whose module is loaded."""
    out = {}
    for p in PARAMS:
        path = sys_root / "module" / p.module / "parameters" / p.name
        value = read_value(path, problems, "kvm_param", parse_bool, "a boolean")
        if value is not None:
            out[p.tee_type] = value
    return out


def read_requested(proc_root: Path, loaded: set[str], problems: Problems) -> dict[str, bool]:
    """``{tee_type: requested}`` for the parameters in ``loaded`` (tee types whose module parameter exists)."""
    path = proc_root / "cmdline"
    text = read_text(path, problems, "cmdline")
    if text is None:
        return {}
    given = parse_cmdline_requests(text)
    out = {}
    for p in PARAMS:
        if p.tee_type not in loaded:
            continue
        value = given.get((p.module, p.name), p.default)
        if value is None:
            problems.malformed("cmdline", path, f"{p.module}.{p.name}: not a boolean")
            continue
        out[p.tee_type] = value
    return out
