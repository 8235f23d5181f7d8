"""The host collector: libvirt domain capabilities, kvm module parameters and the misc cgroup; missing sources
give absent series, never a failed scrape."""

from __future__ import annotations

from pathlib import Path

from exporter.collectors import host
from exporter.collectors.host import parse_domain_capabilities
from tests.exporter.helpers import check_golden, exposition, make_ctx, promtool_check, samples, value

# Domain capabilities of an SNP-capable EPYC host, in libvirt's documented format (formatdomaincaps.html).
SEV_DOMCAPS = """<domainCapabilities><domain>kvm</domain><features>
  <sev supported='yes'><cbitpos>51</cbitpos><reducedPhysBits>1</reducedPhysBits>
    <maxGuests>15</maxGuests><maxESGuests>494</maxESGuests></sev>
  <tdx supported='no'/>
  <launchSecurity supported='yes'><enum name='sectype'><value>sev</value><value>sev-snp</value></enum>
  </launchSecurity></features></domainCapabilities>"""


def host_tree(root: Path) -> tuple[Path, Path]:
    sys_root, cgroup = root / "sys", root / "cgroup"
    params = sys_root / "module" / "kvm_amd" / "parameters"
    params.mkdir(parents=True)
    (params / "sev").write_text("Y\n")
    (params / "sev_es").write_text("Y\n")
    (params / "sev_snp").write_text("N\n")
    cgroup.mkdir()
    (cgroup / "misc.capacity").write_text("sev 509\nsev_es 10\n")
    (cgroup / "misc.current").write_text("sev 2\nsev_es 1\n")
    return sys_root, cgroup


def test_domain_capabilities_give_sev_capacity_and_types():
    caps = parse_domain_capabilities(SEV_DOMCAPS)
    assert caps.supported == {"sev": True, "sev-es": True, "tdx": False, "sev-snp": True}
    assert caps.capacity == {"sev": 15, "sev-es": 494}


def test_host_files_and_libvirt_combined_match_golden(tmp_path):
    sys_root, cgroup = host_tree(tmp_path)
    collector = host.build(make_ctx(tmp_path, sys_root=sys_root, cgroup_root=cgroup))
    text = exposition(collector)
    collector.connection.close()
    check_golden("host_demo.prom", text)
    assert promtool_check(text) == ""
    assert value(text, "tee_host_tee_supported", tee_type="sev") == 1  # kvm_amd says Y even if libvirt says no
    assert value(text, "tee_host_tee_supported", tee_type="sev-snp") == 0
    assert value(text, "tee_host_tee_capacity_guests", tee_type="sev") == 509
    assert value(text, "tee_host_tee_guests_running", tee_type="sev-es") == 1  # misc.current wins
    assert value(text, "tee_host_tee_guests_running", tee_type="sev-snp") == 2  # counted running SNP domains


def test_missing_sources_give_absent_series_not_errors(tmp_path):
    collector = host.build(make_ctx(tmp_path, uri=f"test://{tmp_path}/no-such-node.xml"))
    text = exposition(collector)  # would raise if any source's absence were an error
    assert {k[0] for k in samples(text)} == {"tee_host_platform_malformed_total"}  # all at 0
