"""Host TEE platform sources against fixture trees built from the kernel ABI documentation (platform_trees.py):
present files become series, absent ones nothing, malformed ones a count and one log line."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from pathlib import Path

import pytest

from exporter.collectors.host import HostCollector, Roots
from exporter.platform import kvm_params, misc_cgroup, psp, qgs, tdx_module
from exporter.platform.misc_cgroup import MalformedLine, parse_flat_keyed
from exporter.platform.problems import Problems
from exporter.platform.snp_status import SnpStatusError, SnpStatusReader, cpu_product, decode
from tests.exporter import platform_trees
from tests.exporter.helpers import check_golden, exposition, promtool_check, samples, value


def roots(tree: Path) -> Roots:
    return Roots(sys=tree / "sys", proc=tree / "proc", dev=tree / "dev", cgroup=tree / "cgroup")


def collector(tree: Path, qgs_socket: Path | None = None) -> HostCollector:
    return HostCollector(None, None, roots(tree), misc_cgroups=(Path("machine.slice"), Path("kubepods.slice")),
                         qgs_socket=qgs_socket or tree / "run" / "qgs.socket")


def malformed(text: str, source: str) -> float | None:
    return value(text, "tee_host_platform_malformed_total", source=source)


# --- the SNP_PLATFORM_STATUS decoder -------------------------------------------------------------------------
def status_buffer(*, build: int = 21, flags: int = 0b100, guests: int = 3, current: bytes, reported: bytes) -> bytes:
    """Built (not captured: this host has no /dev/sev) from the SNP ABI spec (pub. 56860) section 8.3 table
    "SNP_PLATFORM_STATUS Structure": API 1.55, STATE 1 (INIT), IS_RMP_INIT set, then BUILD_ID, the flags word
    (bit 2 VLEK_EN), GUEST_COUNT and the two TCB_VERSIONs."""
    return struct.pack("<BBBBIII", 1, 55, 1, 1, build, flags, guests) + current + reported


# TCB_VERSION bytes (spec section 2.2): Milan/Genoa [bootloader, tee, 0, 0, 0, 0, snp, microcode];
# Turin [fmc, bootloader, tee, snp, 0, 0, 0, microcode].
GENOA_CURRENT, GENOA_REPORTED = bytes([9, 0, 0, 0, 0, 0, 21, 213]), bytes([7, 0, 0, 0, 0, 0, 14, 211])
TURIN_CURRENT = bytes([1, 4, 0, 24, 0, 0, 0, 72])


def test_snp_status_decodes_genoa_layout_from_a_spec_built_buffer():
    status = decode(status_buffer(current=GENOA_CURRENT, reported=GENOA_REPORTED))
    assert (status.api_version, status.state, status.rmp_initialized, status.build_id) == ("1.55", 1, True, 21)
    assert (status.vlek_enabled, status.mask_chip_id, status.mask_chip_key, status.guest_count) == (True, False,
                                                                                                      False, 3)
    assert status.current_tcb.components() == {"bootloader": 9, "tee": 0, "snp": 21, "microcode": 213}
    assert status.reported_tcb.components() == {"bootloader": 7, "tee": 0, "snp": 14, "microcode": 211}


def test_snp_status_uses_turin_layout_when_the_cpu_is_family_1ah():
    buf = status_buffer(current=TURIN_CURRENT, reported=TURIN_CURRENT)
    turin = decode(buf, cpu_product("vendor_id\t: AuthenticAMD\ncpu family\t: 26\n"))
    assert turin.current_tcb.components() == {"fmc": 1, "bootloader": 4, "tee": 0, "snp": 24, "microcode": 72}
    # Read with the Genoa layout, the same bytes would claim SNP SVN 0 and bootloader 1: the layout matters.
    assert decode(buf, cpu_product("cpu family\t: 25\n")).current_tcb.snp == 0


@pytest.mark.parametrize("size", [0x1F, 0x21])
def test_snp_status_of_the_wrong_size_is_rejected(size):
    buf = status_buffer(current=GENOA_CURRENT, reported=GENOA_REPORTED)
    with pytest.raises(SnpStatusError, match="32 bytes"):
        decode((buf + b"\0")[:size])


def test_snp_reader_without_dev_sev_is_silent(tmp_path):
    problems = Problems()
    assert SnpStatusReader(tmp_path / "dev", tmp_path / "proc", problems).get() is None
    assert "snp_status" not in str([m for m in problems.family().samples if m.value])


def test_snp_reader_counts_a_dev_sev_that_is_not_the_psp_and_does_not_retry_before_the_interval(tmp_path, caplog):
    # The real ioctl path: a regular file standing in for /dev/sev answers SEV_ISSUE_CMD with ENOTTY.
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "sev").write_bytes(b"")
    now = [0.0]
    problems = Problems()
    reader = SnpStatusReader(tmp_path / "dev", tmp_path / "proc", problems, interval=600, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING):
        assert reader.get() is None
        now[0] = 599.0
        assert reader.get() is None  # cached failure: no second PSP call
        now[0] = 600.0
        assert reader.get() is None
    counts = {s.labels["source"]: s.value for s in problems.family().samples}
    assert counts["snp_status"] == 2
    assert len([r for r in caplog.records if "malformed" in r.getMessage()]) == 1


def test_snp_reader_caches_a_good_status(tmp_path):
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev" / "sev").write_bytes(b"")
    calls, now = [], [0.0]

    def issue(device: Path) -> bytes:
        calls.append(device)
        return status_buffer(current=GENOA_CURRENT, reported=GENOA_REPORTED)

    reader = SnpStatusReader(tmp_path / "dev", tmp_path / "proc", Problems(), interval=600, issue=issue,
                             clock=lambda: now[0])
    first = reader.get()
    now[0] = 300.0
    assert reader.get() is first and len(calls) == 1
    now[0] = 601.0
    reader.get()
    assert len(calls) == 2


# --- kvm parameters and the command line ---------------------------------------------------------------------
def test_cmdline_requests_follow_kernel_parameter_spelling():
    got = kvm_params.parse_cmdline_requests("ro kvm-amd.sev_es=0 kvm_amd.sev kvm_intel.tdx=on kvm_amd.sev_snp=maybe")
    assert got == {("kvm_amd", "sev_es"): False, ("kvm_amd", "sev"): True, ("kvm_intel", "tdx"): True,
                   ("kvm_amd", "sev_snp"): None}


def test_kvm_parameter_that_is_not_a_boolean_is_counted_and_logged_once(tmp_path, caplog):
    tree = platform_trees.snp_host(tmp_path)
    (tree / "sys/module/kvm_amd/parameters/sev_snp").write_text("maybe\n")
    host = collector(tree)
    with caplog.at_level(logging.WARNING):
        exposition(host)
        text = exposition(host)
    assert value(text, "tee_host_kvm_tee_enabled", tee_type="sev-snp") is None
    assert value(text, "tee_host_kvm_tee_enabled", tee_type="sev") == 1  # the other parameters still count
    assert malformed(text, "kvm_param") == 2
    assert len([r for r in caplog.records if "sev_snp" in str(getattr(r, "path", ""))]) == 1


# --- misc cgroup ---------------------------------------------------------------------------------------------
def test_misc_flat_keyed_files():
    assert parse_flat_keyed("sev 509\nsev_es 10\nfuture_res 7\n\n") == {"sev": 509, "sev-es": 10}
    assert parse_flat_keyed("sev max\nsev_es 90\n", allow_max=True) == {"sev": None, "sev-es": 90}
    assert parse_flat_keyed("sev.max 0\ntdx.max 12\n", ".max") == {"sev": 0, "tdx": 12}
    with pytest.raises(MalformedLine, match="sev_es"):
        parse_flat_keyed("sev 1\nsev_es lots\n")
    with pytest.raises(MalformedLine, match="sev"):
        parse_flat_keyed("sev max\n")  # "max" is only a value in misc.max


def test_misc_file_with_a_bad_tee_line_is_counted_not_half_read(tmp_path):
    tree = platform_trees.snp_host(tmp_path)
    (tree / "cgroup/misc.current").write_text("sev 1\nsev_es -3\n")
    problems = Problems()
    usage = misc_cgroup.read(tree / "cgroup", problems)
    assert usage.current == {} and usage.capacity == {"sev": 410, "sev-es": 99}
    assert {s.labels["source"]: s.value for s in problems.family().samples}["misc_cgroup"] == 1


# --- TDX module, PSP -----------------------------------------------------------------------------------------
def test_tdx_module_versions_and_remaining_updates(tmp_path):
    module = tdx_module.read(platform_trees.tdx_host(tmp_path) / "sys", Problems())
    assert module == tdx_module.TdxModule("1.5.08", "1.5.02", 0)


def test_tdx_module_malformed_version_is_counted(tmp_path):
    tree = platform_trees.tdx_host(tmp_path)
    (tree / "sys/devices/faux/tdx_host/version").write_text("1.5\n")
    problems = Problems()
    module = tdx_module.read(tree / "sys", problems)
    assert module is not None and module.version is None and module.remaining_updates == 0
    assert {s.labels["source"]: s.value for s in problems.family().samples}["tdx_module"] == 1


@pytest.mark.parametrize(("name", "text"), [("version", "1.5.08 (debug)\n"), ("seamldr_version", "1.5.x\n"),
                                            ("num_remaining_updates", "-1\n")])
def test_tdx_module_values_a_lax_parser_would_take_are_counted(tmp_path, name, text):
    # int("-1") and a prefix match of "1.5.08 (debug)" would both pass a weaker check.
    tree = platform_trees.tdx_host(tmp_path)
    (tree / "sys/devices/faux/tdx_host" / name).write_text(text)
    problems = Problems()
    module = tdx_module.read(tree / "sys", problems)
    assert getattr(module, {"num_remaining_updates": "remaining_updates"}.get(name, name)) is None
    assert {s.labels["source"]: s.value for s in problems.family().samples}["tdx_module"] == 1


def test_an_unreadable_present_file_is_counted_not_taken_for_absent(tmp_path):
    tree = platform_trees.tdx_host(tmp_path)
    path = tree / "sys/devices/faux/tdx_host/num_remaining_updates"
    path.unlink()
    path.mkdir()  # EISDIR stands in for the EIO a failed SEAMCALL gives: present, but no value
    problems = Problems()
    assert tdx_module.read(tree / "sys", problems).remaining_updates is None
    assert {s.labels["source"]: s.value for s in problems.family().samples}["tdx_module"] == 1


def test_psp_versions_and_a_malformed_one(tmp_path):
    tree = platform_trees.snp_host(tmp_path)
    problems = Problems()
    assert [(v.component, v.version) for v in psp.read(tree / "sys", problems)] == [
        ("tee", "00.1a.00.3c"), ("bootloader", "00.2e.00.80")]
    (tree / "sys/bus/pci/devices/0000:47:00.1/tee_version").write_text("1.26.60\n")
    assert [v.component for v in psp.read(tree / "sys", problems)] == ["bootloader"]
    assert {s.labels["source"]: s.value for s in problems.family().samples}["psp"] == 1


# --- QGS -----------------------------------------------------------------------------------------------------
@pytest.fixture
def qgs_server(tmp_path):
    """A real Unix stream server on the QGS path, accepting in a thread."""
    path = tmp_path / "qgs.socket"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(4)
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join()
    server.close()


def test_qgs_probe_against_a_listening_socket(tmp_path, qgs_server):
    text = exposition(collector(platform_trees.tdx_host(tmp_path / "tree"), qgs_socket=qgs_server))
    assert value(text, "tee_host_qgs_up") == 1
    assert 0 <= value(text, "tee_host_qgs_connect_seconds") < 1


def test_qgs_stale_socket_file_is_down(tmp_path):
    path = tmp_path / "qgs.socket"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))  # bound and closed, never listening: the file a crashed QGS leaves behind
    dead.close()
    assert qgs.probe(path).up is False
    text = exposition(collector(platform_trees.snp_host(tmp_path / "tree"), qgs_socket=path))
    assert value(text, "tee_host_qgs_up") == 0
    assert value(text, "tee_host_qgs_connect_seconds") is None


def test_qgs_missing_socket_is_down_on_a_tdx_host_and_absent_elsewhere(tmp_path):
    tdx = exposition(collector(platform_trees.tdx_host(tmp_path / "tdx")))
    assert value(tdx, "tee_host_qgs_up") == 0
    snp = exposition(collector(platform_trees.snp_host(tmp_path / "snp")))
    assert "tee_host_qgs_up" not in snp


# --- the whole collector -------------------------------------------------------------------------------------
def test_snp_host_tree_matches_golden(tmp_path):
    text = exposition(collector(platform_trees.snp_host(tmp_path)))
    check_golden("host_snp_platform.prom", text)
    assert promtool_check(text) == ""
    assert value(text, "tee_host_kvm_tee_requested", tee_type="sev-es") == 1  # default on, not disabled
    assert value(text, "tee_host_kvm_tee_enabled", tee_type="sev-es") == 0
    assert value(text, "tee_host_tee_guests_running", tee_type="sev-snp") == 1  # the Kata guest, not libvirt's
    assert value(text, "tee_host_tee_guests_running", tee_type="sev-es") == 3  # misc.current wins
    assert value(text, "tee_host_misc_cgroup_max_guests", cgroup="machine.slice", tee_type="sev-es") == 90
    assert value(text, "tee_host_misc_cgroup_max_guests", cgroup="machine.slice", tee_type="sev") is None
    assert value(text, "tee_host_misc_cgroup_max_events_total", cgroup="machine.slice", tee_type="sev-es") == 4
    assert value(text, "tee_host_psp_firmware_info", device="0000:47:00.1", component="tee",
                 version="00.1a.00.3c") == 1
    assert not [k for k, v in samples(text).items() if k[0] == "tee_host_platform_malformed_total" and v]


def test_tdx_host_tree_matches_golden(tmp_path):
    text = exposition(collector(platform_trees.tdx_host(tmp_path)))
    check_golden("host_tdx_platform.prom", text)
    assert promtool_check(text) == ""
    assert value(text, "tee_host_tdx_module_info", version="1.5.08", seamldr_version="1.5.02") == 1
    assert value(text, "tee_host_tdx_module_remaining_updates") == 0
    assert value(text, "tee_host_kvm_tee_requested", tee_type="tdx") == 1
    assert value(text, "tee_host_tee_guests_running", tee_type="tdx") == 1


def test_empty_roots_give_only_the_error_counter(tmp_path):
    text = exposition(collector(tmp_path))
    assert {k[0] for k in samples(text)} == {"tee_host_platform_malformed_total"}


# --- settings ------------------------------------------------------------------------------------------------
def test_platform_settings_from_the_config_file_and_flags(tmp_path):
    from exporter.config import ConfigError, load

    config = tmp_path / "exporter.yml"
    config.write_text("path.devfs: /host/dev\nhost.misc-cgroup: [machine.slice, kata.slice]\n"
                      "host.qgs-socket: /run/qgs/qgs.socket\n")
    settings = load(config, {"host.snp-status-interval": 60})
    assert settings.dev_root == Path("/host/dev")
    assert settings.host_misc_cgroups == (Path("machine.slice"), Path("kata.slice"))
    assert (settings.host_qgs_socket, settings.host_snp_status_interval) == (Path("/run/qgs/qgs.socket"), 60)
    config.write_text("host.snp-status-interval: 0\n")
    with pytest.raises(ConfigError, match="host.snp-status-interval"):
        load(config, {})


def test_this_real_hosts_kernel_files_read_without_a_malformed_count():
    # The real /sys, /proc, /dev and cgroup2 of the test machine: whatever of the platform it has (a kvm module,
    # PCI devices, a cmdline, a cpuinfo) must parse; what it lacks (no SEV/TDX here) must simply be absent.
    host = HostCollector(None, None, Roots(Path("/sys"), Path("/proc"), Path("/dev"), Path("/sys/fs/cgroup")),
                         misc_cgroups=(Path("machine.slice"), Path("kubepods.slice")),
                         qgs_socket=Path("/var/run/tdx-qgs/qgs.socket"))
    text = exposition(host)
    assert promtool_check(text) == ""
    assert not [k for k, v in samples(text).items() if k[0] == "tee_host_platform_malformed_total" and v]
