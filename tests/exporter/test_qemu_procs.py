"""Confidential QEMU processes in /proc, managed by libvirt or started by Kata (unmanaged), from a fake proc root."""

from __future__ import annotations

from pathlib import Path

from exporter.collectors import qemu_procs
from exporter.collectors.qemu_procs import parse_cmdline
from tests.exporter.helpers import exposition, make_ctx, promtool_check, value

LIBVIRT_SNP = ["/usr/bin/qemu-system-x86_64", "-name", "guest=snp-app,debug-threads=on", "-S", "-object",
               '{"qom-type":"secret","id":"masterKey0","format":"raw","file":"/var/lib/libvirt/qemu/x/master-key.aes"}',
               "-machine", "pc-q35-10.0,confidential-guest-support=lsec0", "-object",
               '{"qom-type":"sev-snp-guest","id":"lsec0","cbitpos":51,"reduced-phys-bits":1,"policy":196608}']
KATA_SEV_ES = ["/opt/kata/bin/qemu-system-x86_64", "-name", "sandbox-3f9c2d1e8a7b", "-machine",
               "q35,confidential-guest-support=sev0", "-object", "sev-guest,id=sev0,cbitpos=47,policy=0x5",
               "-qmp", "unix:fd=3,server=on,wait=off"]
KATA_TDX = ["/opt/kata/bin/qemu-system-x86_64", "-object", "tdx-guest,id=tdx0", "-chardev",
            "socket,id=c,path=/run/vc/vm/77aa00bb/console.sock"]
PLAIN_QEMU = ["/usr/bin/qemu-system-x86_64", "-name", "guest=plain,debug-threads=on", "-m", "64"]
NOT_QEMU = ["/usr/bin/python3", "-c", "print('sev-guest')"]


def write_proc(root: Path, procs: dict[int, list[str]]) -> Path:
    for pid, argv in procs.items():
        (root / str(pid)).mkdir(parents=True)
        (root / str(pid) / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (root / "self").mkdir()  # non-numeric entries are ignored
    return root


def test_cmdline_classification():
    snp = parse_cmdline(10, b"\0".join(a.encode() for a in LIBVIRT_SNP))
    assert (snp.tee_type, snp.managed, snp.sandbox_id) == ("sev-snp", True, "")
    kata = parse_cmdline(11, b"\0".join(a.encode() for a in KATA_SEV_ES))
    assert (kata.tee_type, kata.managed, kata.sandbox_id) == ("sev-es", False, "3f9c2d1e8a7b")
    tdx = parse_cmdline(12, b"\0".join(a.encode() for a in KATA_TDX))
    assert (tdx.tee_type, tdx.sandbox_id) == ("tdx", "77aa00bb")
    assert parse_cmdline(13, b"\0".join(a.encode() for a in PLAIN_QEMU)) is None
    assert parse_cmdline(14, b"\0".join(a.encode() for a in NOT_QEMU)) is None
    assert parse_cmdline(15, b"") is None  # kernel threads have an empty cmdline


def test_unmanaged_guests_are_counted_and_listed(tmp_path):
    proc = write_proc(tmp_path / "proc", {100: LIBVIRT_SNP, 200: KATA_SEV_ES, 300: KATA_TDX, 400: PLAIN_QEMU,
                                          500: NOT_QEMU})
    text = exposition(qemu_procs.build(make_ctx(tmp_path, proc_root=proc)))
    assert value(text, "tee_qemu_guests", tee_type="sev-snp", managed="true") == 1
    assert value(text, "tee_qemu_guests", tee_type="sev-es", managed="false") == 1
    assert value(text, "tee_qemu_guests", tee_type="tdx", managed="false") == 1
    assert value(text, "tee_qemu_guest_info", sandbox_id="3f9c2d1e8a7b", tee_type="sev-es", pid="200") == 1
    assert value(text, "tee_qemu_guest_info", sandbox_id="", tee_type="sev-snp", pid="100") is None
    assert promtool_check(text) == ""


def test_real_proc_scan_finds_no_false_positives():
    # This host runs no confidential guests; a scan of the real /proc must not crash or invent any.
    text = exposition(qemu_procs.QemuProcsCollector(Path("/proc")))
    assert "tee_qemu_guest_info{" not in text
