"""Pure parsing of libvirt domain XML into what the exporter needs: TEE type, debug policy, size, devices.

The XML format is libvirt's (https://libvirt.org/formatdomain.html, "Launch Security"). The policy bits are the
vendors':

* SEV / SEV-ES (``<launchSecurity type='sev'>``): AMD "Secure Encrypted Virtualization API", pub. 55766,
  section 3 "Guest Policy": bit 0 NODBG (debugging disallowed when set), bit 2 ES (SEV-ES required when set).
  libvirt has no separate ``sev-es`` type; an ES guest is ``type='sev'`` with policy bit 2 set.
* SEV-SNP (``type='sev-snp'``): AMD "SEV Secure Nested Paging Firmware ABI Specification", pub. 56860,
  section 4.3 "Guest Policy": bit 19 DEBUG (debugging allowed when set).
* TDX (``type='tdx'``): Intel "TDX Module ABI Specification", TD_PARAMS.ATTRIBUTES: bit 0 DEBUG (the TD is
  debuggable when set). libvirt writes these attributes as ``<policy>`` of the ``tdx`` launch security element.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass

from exporter.virt.metadata import flatten

TEE_TYPES = ("none", "sev", "sev-es", "sev-snp", "tdx")

SEV_POLICY_NODBG = 1 << 0
SEV_POLICY_ES = 1 << 2
SNP_POLICY_DEBUG = 1 << 19
TDX_ATTR_DEBUG = 1 << 0

# libvirt's scaled-integer units (formatdomain.html#memory-allocation): decimal for KB/MB..., binary otherwise.
_UNITS = {
    "b": 1, "bytes": 1,
    "kb": 10**3, "k": 2**10, "kib": 2**10,
    "mb": 10**6, "m": 2**20, "mib": 2**20,
    "gb": 10**9, "g": 2**30, "gib": 2**30,
    "tb": 10**12, "t": 2**40, "tib": 2**40,
}


class DomainXMLError(ValueError):
    """The domain XML cannot be parsed; the message says what is wrong."""


@dataclass(frozen=True)
class DomainInfo:
    name: str
    uuid: str
    tee_type: str
    debug_allowed: bool | None  # None for non-confidential domains
    memory_bytes: int
    vcpus: int
    devices: tuple[str, ...]
    current_memory_bytes: int = 0
    policy: int | None = None
    metadata: tuple[tuple[str, str], ...] = ()  # flattened <metadata> (exporter.virt.metadata)

    @property
    def confidential(self) -> bool:
        return self.tee_type != "none"


def parse_domain_xml(data: bytes | str) -> DomainInfo:
    """Parse one ``<domain>`` document (as returned by ``virDomainGetXMLDesc``)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise DomainXMLError(f"not well-formed XML: {exc}") from None
    if root.tag != "domain":
        raise DomainXMLError(f"expected <domain>, got <{root.tag}>")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise DomainXMLError("domain has no <name>")
    memory = _memory(root.find("memory"))
    tee_type, debug, policy = launch_security(root.find("launchSecurity"))
    return DomainInfo(
        name=name,
        uuid=(root.findtext("uuid") or "").strip(),
        tee_type=tee_type,
        debug_allowed=debug,
        memory_bytes=memory,
        vcpus=_int(root.findtext("vcpu"), "vcpu", default=1),
        devices=device_models(root.find("devices")),
        current_memory_bytes=_memory(root.find("currentMemory")) or memory,
        policy=policy,
        metadata=flatten(root.find("metadata")),
    )


def launch_security(elem: ET.Element | None) -> tuple[str, bool | None, int | None]:
    """``(tee_type, debug_allowed, policy)`` from a ``<launchSecurity>`` element (None: plain domain)."""
    if elem is None:
        return "none", None, None
    kind = elem.get("type", "")
    policy_text = elem.findtext("policy")
    if kind == "sev":
        # Without <policy> QEMU's sev-guest object uses its default policy 0x1 (NODBG only).
        policy = _int(policy_text, "launchSecurity/policy", default=0x1)
        tee = "sev-es" if policy & SEV_POLICY_ES else "sev"
        return tee, not policy & SEV_POLICY_NODBG, policy
    if kind == "sev-snp":
        # libvirt's documented default SNP policy is 0x00030000 (SMT allowed, reserved bit 17, no DEBUG).
        policy = _int(policy_text, "launchSecurity/policy", default=0x30000)
        return "sev-snp", bool(policy & SNP_POLICY_DEBUG), policy
    if kind == "tdx":
        policy = _int(policy_text, "launchSecurity/policy", default=0)
        return "tdx", bool(policy & TDX_ATTR_DEBUG), policy
    raise DomainXMLError(f"unknown launchSecurity type {kind!r}")


def _int(text: str | None, what: str, default: int) -> int:
    if text is None or not text.strip():
        return default
    try:
        return int(text.strip(), 0)
    except ValueError:
        raise DomainXMLError(f"{what}: not an integer: {text.strip()!r}") from None


def _memory(elem: ET.Element | None) -> int:
    if elem is None:
        return 0
    unit = elem.get("unit", "KiB").lower()
    if unit not in _UNITS:
        raise DomainXMLError(f"memory: unknown unit {elem.get('unit')!r}")
    return _int(elem.text, "memory", default=0) * _UNITS[unit]


def device_models(devices: ET.Element | None) -> tuple[str, ...]:
    """The guest-visible device models that move data in or out of the guest, sorted and de-duplicated.

    These are what a runtime policy's ``allowed_devices`` speaks about: ``virtio-net``, ``virtio-blk``,
    ``virtio-scsi``, ``virtio-rng``, ``virtio-balloon``, ``vhost-vsock``, ``virtiofs``, ``vfio-pci`` ... Buses
    and devices libvirt always adds for itself (PCI controllers, the serial console) are not listed.
    """
    if devices is None:
        return ()
    found: set[str] = set()
    for child in devices:
        model = _device_model(child)
        if model:
            found.add(model)
    return tuple(sorted(found))


def _device_model(dev: ET.Element) -> str | None:
    tag = dev.tag
    if tag == "disk":
        target = dev.find("target")
        bus = (target.get("bus") if target is not None else None) or "virtio"
        return "virtio-blk" if bus == "virtio" else f"{bus}-{dev.get('device', 'disk')}"
    if tag == "interface":
        model = dev.find("model")
        kind = model.get("type") if model is not None else None
        return "virtio-net" if kind in (None, "virtio") else kind
    if tag == "controller" and dev.get("type") == "scsi":
        return dev.get("model") or "virtio-scsi"
    if tag == "rng":
        return "virtio-rng" if dev.get("model") == "virtio" else f"rng-{dev.get('model')}"
    if tag == "memballoon":
        balloon = dev.get("model", "virtio")
        return None if balloon == "none" else f"{balloon}-balloon"
    if tag == "vsock":
        return "vhost-vsock"
    if tag == "filesystem":
        driver = dev.find("driver")
        return "virtiofs" if driver is not None and driver.get("type") == "virtiofs" else "virtio-9p"
    if tag == "hostdev":
        return "vfio-pci" if dev.get("type") == "pci" else f"hostdev-{dev.get('type')}"
    if tag in ("graphics", "sound", "video", "tpm", "smartcard", "redirdev", "shmem"):
        sub = dev.find("model")
        kind = dev.get("type") or dev.get("model") or (sub.get("type") if sub is not None else "")
        return f"{tag}-{kind}" if kind else tag
    return None
