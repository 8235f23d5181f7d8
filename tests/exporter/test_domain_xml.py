"""Pure parsing of domain XML: TEE type and debug policy per the vendors' policy bits, size and devices."""

from __future__ import annotations

import pytest

from exporter.virt.domain_xml import DomainXMLError, parse_domain_xml


def domain(launch: str = "", devices: str = "", memory: str = "<memory unit='KiB'>1048576</memory>") -> str:
    return (f"<domain type='kvm'><name>g1</name><uuid>00000000-0000-4000-8000-000000000001</uuid>{memory}"
            f"<vcpu current='2'>4</vcpu><devices>{devices}</devices>{launch}</domain>")


def sev(kind: str, policy: str) -> str:
    return (f"<launchSecurity type='{kind}'><cbitpos>51</cbitpos><reducedPhysBits>1</reducedPhysBits>"
            f"<policy>{policy}</policy></launchSecurity>")


# libvirt's documented TDX format (formatdomain.html#launch-security): policy is TD attributes, bit 0 = DEBUG.
TDX = ("<launchSecurity type='tdx'><policy>0x{:x}</policy><mrConfigId>{}</mrConfigId>"
       "<quoteGenerationService><SocketAddress type='vsock' cid='2' port='4050'/></quoteGenerationService>"
       "</launchSecurity>")


def test_plain_domain_has_no_tee_and_no_debug_label():
    info = parse_domain_xml(domain())
    assert (info.tee_type, info.debug_allowed, info.confidential) == ("none", None, False)
    assert info.memory_bytes == 1 << 30 and info.vcpus == 4


@pytest.mark.parametrize(("policy", "tee", "debug"), [
    ("0x0001", "sev", False),   # NODBG set
    ("0x0000", "sev", True),    # NODBG clear: debugging allowed
    ("0x0005", "sev-es", False),  # ES | NODBG
    ("0x0004", "sev-es", True),
    ("0x0007", "sev-es", False),
])
def test_sev_policy_bits_give_type_and_debug(policy, tee, debug):
    info = parse_domain_xml(domain(sev("sev", policy)))
    assert (info.tee_type, info.debug_allowed, info.policy) == (tee, debug, int(policy, 16))


@pytest.mark.parametrize(("policy", "debug"), [("0x00030000", False), ("0x000b0000", True), ("0x80000", True)])
def test_snp_debug_is_policy_bit_19(policy, debug):
    info = parse_domain_xml(domain(sev("sev-snp", policy)))
    assert (info.tee_type, info.debug_allowed) == ("sev-snp", debug)


def test_snp_without_policy_uses_libvirt_default_without_debug():
    info = parse_domain_xml(domain("<launchSecurity type='sev-snp'/>"))
    assert info.debug_allowed is False and info.policy == 0x30000


@pytest.mark.parametrize(("attrs", "debug"), [(0x10000000, False), (0x10000001, True), (0, False)])
def test_tdx_debug_is_attribute_bit_0(attrs, debug):
    info = parse_domain_xml(domain(TDX.format(attrs, "A" * 64)))
    assert (info.tee_type, info.debug_allowed) == ("tdx", debug)


def test_devices_are_named_by_model():
    devices = ("<disk type='file' device='disk'><target dev='vda' bus='virtio'/></disk>"
               "<disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>"
               "<interface type='network'><model type='virtio'/></interface>"
               "<interface type='network'><model type='e1000'/></interface>"
               "<controller type='scsi' model='virtio-scsi'/><controller type='pci' model='pci-root'/>"
               "<rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>"
               "<memballoon model='none'/><vsock model='virtio'/>"
               "<filesystem type='mount'><driver type='virtiofs'/></filesystem>"
               "<hostdev mode='subsystem' type='pci'/><serial type='pty'/>")
    info = parse_domain_xml(domain(devices=devices))
    assert info.devices == ("e1000", "sata-cdrom", "vfio-pci", "vhost-vsock", "virtio-blk", "virtio-net",
                            "virtio-rng", "virtio-scsi", "virtiofs")


@pytest.mark.parametrize(("memory", "expected"), [
    ("<memory unit='MiB'>64</memory>", 64 << 20),
    ("<memory unit='G'>2</memory>", 2 << 30),
    ("<memory unit='GB'>2</memory>", 2 * 10**9),
    ("<memory>1024</memory>", 1 << 20),  # KiB is libvirt's default unit
])
def test_memory_units(memory, expected):
    assert parse_domain_xml(domain(memory=memory)).memory_bytes == expected


@pytest.mark.parametrize("xml", [
    b"<domain><name>x</name",                                   # truncated
    b"<network><name>x</name></network>",                       # not a domain
    b"<domain></domain>",                                       # no name
    domain(sev("sev", "zero")).encode(),                         # non-numeric policy
    domain("<launchSecurity type='s390-pv-extra'/>").encode(),  # unknown TEE type
    domain(memory="<memory unit='parsecs'>1</memory>").encode(),
])
def test_unusable_xml_raises_domain_xml_error(xml):
    with pytest.raises(DomainXMLError):
        parse_domain_xml(xml)


def test_real_libvirt_output_of_demo_node_parses():
    import libvirt

    from tests.exporter.helpers import DEMO_URI
    conn = libvirt.open(DEMO_URI)
    infos = {i.name: i for i in (parse_domain_xml(d.XMLDesc(0)) for d in conn.listAllDomains())}
    conn.close()
    assert infos["snp-debug"].debug_allowed is True
    assert infos["sev-es-db"].tee_type == "sev-es"
    assert infos["snp-big"].devices == ("virtio-blk", "virtio-net", "virtiofs")
