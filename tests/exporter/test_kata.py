"""Kata / Confidential Containers guests: found through their QEMU processes, typed by the command line or else
by the Kata runtime class, sized from -m / -smp / memory backends, counted by the host collector."""

from __future__ import annotations

import pytest

from exporter.collectors.host import HostCollector, Roots
from exporter.collectors.qemu_procs import QemuProcsCollector, parse_cmdline, tee_from_runtime_class
from tests.exporter import platform_trees as trees
from tests.exporter.helpers import check_golden, exposition, promtool_check, value


def test_kata_snp_guest_is_typed_by_its_object_and_sized_by_its_memory_backend():
    guest = parse_cmdline(trees.KATA_SNP_PID, trees.argv(trees.KATA_SNP), trees.argv(trees.SHIM_SNP))
    assert (guest.tee_type, guest.managed, guest.sandbox_id) == ("sev-snp", False, trees.SNP_SANDBOX)
    assert (guest.memory_bytes, guest.vcpus) == (2048 << 20, 2)  # maxmem and maxcpus are not the guest's size


def test_kata_guest_without_a_tee_object_is_typed_by_the_parent_shims_runtime_class():
    guest = parse_cmdline(trees.KATA_TDX_PID, trees.argv(trees.KATA_TDX_NO_OBJECT), trees.argv(trees.SHIM_TDX))
    assert (guest.tee_type, guest.sandbox_id, guest.memory_bytes, guest.vcpus) == ("tdx", trees.TDX_SANDBOX,
                                                                                   4096 << 20, 4)


def test_the_command_lines_own_tee_object_wins_over_the_runtime_class():
    # An SEV-ES guest (policy bit 2) under a shim named for SNP is what its command line says it is.
    sev_es = [*trees.KATA_TDX_NO_OBJECT, "-object", "sev-guest,id=sev0,cbitpos=51,reduced-phys-bits=1,policy=0x5"]
    guest = parse_cmdline(trees.KATA_TDX_PID, trees.argv(sev_es), trees.argv(trees.SHIM_SNP))
    assert guest.tee_type == "sev-es"


def test_without_its_shim_the_same_kata_guest_is_not_confidential():
    assert parse_cmdline(trees.KATA_TDX_PID, trees.argv(trees.KATA_TDX_NO_OBJECT)) is None


def test_a_plain_qemu_under_a_confidential_shim_name_is_not_taken_for_a_kata_guest():
    # The runtime class is only trusted for a Kata sandbox QEMU (sandbox-<id> / /run/vc/vm/<id>/), so a
    # non-Kata QEMU started from a shim-named wrapper does not become a confidential guest.
    plain = ["/usr/bin/qemu-system-x86_64", "-name", "guest=plain,debug-threads=on", "-m", "64"]
    assert parse_cmdline(7, trees.argv(plain), trees.argv(trees.SHIM_SNP)) is None


@pytest.mark.parametrize(("name", "tee"), [
    ("/usr/local/bin/containerd-shim-kata-qemu-snp-v2", "sev-snp"),
    ("/usr/local/bin/containerd-shim-kata-qemu-sev-v2", "sev"),
    ("/usr/local/bin/containerd-shim-kata-qemu-tdx-v2", "tdx"),
    ("/usr/local/bin/containerd-shim-kata-qemu-nvidia-gpu-snp-v2", "sev-snp"),
    ("/usr/local/bin/containerd-shim-kata-qemu-nvidia-gpu-tdx-v2", "tdx"),
    ("/opt/kata/share/defaults/kata-containers/configuration-qemu-snp.toml", "sev-snp"),
    ("/opt/kata/bin/qemu-system-x86_64-tdx-experimental", "tdx"),
    ("/usr/local/bin/containerd-shim-kata-qemu-coco-dev-v2", None),  # CoCo without hardware TEE
    ("/usr/local/bin/containerd-shim-kata-qemu-v2", None),
    ("/usr/local/bin/containerd-shim-kata-qemu-snpx-v2", None),
])
def test_runtime_class_names(name, tee):
    assert tee_from_runtime_class([name]) == tee


_KATA_BASE = ["/usr/bin/qemu-system-x86_64", "-name", "sandbox-abc", "-object",
              "sev-snp-guest,id=snp,cbitpos=51,reduced-phys-bits=1"]


@pytest.mark.parametrize(("args", "memory", "vcpus"), [
    (["-m", "512", "-smp", "1"], 512 << 20, 1),  # -m without a unit is MiB
    (["-m", "1G", "-smp", "cpus=3,maxcpus=8"], 1 << 30, 3),
    (["-m", "size=2G,slots=4,maxmem=8G"], 2 << 30, None),
    (["-m", "lots", "-smp", "sockets=2"], None, None),  # unreadable sizes are left out, not guessed
    (["-m", "8G", "-object", "memory-backend-ram,id=m0,size=1G", "-object", "memory-backend-file,id=m1,size=3G"],
     4 << 30, None),  # the backends are what the guest has; -m is then only the total they must add up to
])
def test_sizes_in_qemu_spellings(args, memory, vcpus):
    guest = parse_cmdline(9, trees.argv(_KATA_BASE + args))
    assert (guest.memory_bytes, guest.vcpus) == (memory, vcpus)


def test_libvirt_json_backend_size_is_bytes():
    libvirt = parse_cmdline(trees.LIBVIRT_PID, trees.argv(trees.LIBVIRT_SNP))
    assert (libvirt.managed, libvirt.memory_bytes, libvirt.vcpus) == (True, 4 << 30, 4)


def test_qemu_collector_golden_and_host_count_include_kata(tmp_path):
    tree = trees.snp_host(tmp_path / "snp")
    text = exposition(QemuProcsCollector(tree / "proc"))
    check_golden("qemu_procs_kata.prom", text)
    assert promtool_check(text) == ""
    assert value(text, "tee_qemu_guest_memory_bytes", sandbox_id=trees.SNP_SANDBOX, tee_type="sev-snp",
                 pid=str(trees.KATA_SNP_PID)) == 2048 << 20
    assert value(text, "tee_qemu_guest_vcpus", sandbox_id=trees.SNP_SANDBOX, tee_type="sev-snp",
                 pid=str(trees.KATA_SNP_PID)) == 2
    tdx = trees.tdx_host(tmp_path / "tdx")
    (tdx / "cgroup" / "misc.current").unlink()  # without the kernel's count, the Kata TD itself is counted
    host = HostCollector(None, None, Roots(tdx / "sys", tdx / "proc", tdx / "dev", tdx / "cgroup"))
    assert value(exposition(host), "tee_host_tee_guests_running", tee_type="tdx") == 1
