"""Fixture sysfs / procfs / cgroupfs trees of an SEV-SNP host and a TDX host, written into a test's tmp dir.

Every file is shaped after its kernel documentation, not captured from a machine:
- ``module/<mod>/parameters/<p>``: Documentation/ABI/stable/sysfs-module; bool parameters print ``Y``/``N``.
- ``misc.*``: Documentation/admin-guide/cgroup-v2.rst "Misc" and kernel/cgroup/misc.c (``misc.capacity`` root
  only, ``misc.max``/``misc.events`` non-root only, ``misc.events`` keys ``<res>.max``).
- ``devices/faux/tdx_host/*``: Documentation/ABI/testing/sysfs-devices-faux-tdx-host ("major.minor.update").
- ``bus/pci/devices/<BDF>/{tee,bootloader}_version``: Documentation/ABI/testing/sysfs-driver-ccp; the format
  ``AA.BB.CC.DD`` from drivers/crypto/ccp/sp-pci.c.
- ``/proc/cmdline``: Documentation/admin-guide/kernel-parameters.rst (``module.param=value``); ``/proc/cpuinfo``
  and ``/proc/<pid>/stat``: proc(5).
- Kata QEMU command lines: the argument shapes kata-containers renders (src/runtime/pkg/govmm/qemu/qemu.go:
  ``-name sandbox-<id>``, ``-m <n>M,slots=,maxmem=``, ``-smp <n>,cores=,threads=,sockets=,maxcpus=``,
  ``-object memory-backend-*,id=dimm1,size=``, ``-numa node,memdev=dimm1``, sockets under ``/run/vc/vm/<id>/``;
  configuration-qemu-snp.toml / -tdx.toml for the firmware and kernel paths), and kata-deploy's per-class shim
  name ``containerd-shim-kata-<class>-v2`` for the parent.
"""

from __future__ import annotations

from pathlib import Path

SNP_SANDBOX = "6c1f0e2a9b7d4c3e8f5a1b2c3d4e5f60"
TDX_SANDBOX = "0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f50"
SHIM_PID, KATA_SNP_PID, KATA_TDX_PID, LIBVIRT_PID = 3100, 3101, 3201, 4100

KATA_SNP = ["/opt/kata/bin/qemu-system-x86_64-snp-experimental", "-name", f"sandbox-{SNP_SANDBOX}",
            "-uuid", "5a0cf2e4-7a43-4b55-9c36-0e1b2a3c4d5e",
            "-machine", "q35,accel=kvm,confidential-guest-support=snp,memory-backend=dimm1",
            "-cpu", "EPYC-v4", "-qmp", "unix:fd=3,server=on,wait=off", "-m", "2048M,slots=10,maxmem=257720M",
            "-device", "virtio-serial-pci,disable-modern=false,id=serial0",
            "-device", "virtconsole,chardev=charconsole0,id=console0",
            "-chardev", f"socket,id=charconsole0,path=/run/vc/vm/{SNP_SANDBOX}/console.sock,server=on,wait=off",
            "-object", "memory-backend-memfd,id=dimm1,size=2048M",
            "-object", "sev-snp-guest,id=snp,cbitpos=51,reduced-phys-bits=1,kernel-hashes=on",
            "-numa", "node,memdev=dimm1",
            "-kernel", "/opt/kata/share/kata-containers/vmlinuz-confidential.container",
            "-initrd", "/opt/kata/share/kata-containers/kata-containers-initrd-confidential.img",
            "-append", "tsc=reliable no_timer_check rcupdate.rcu_expedited=1 console=hvc0 quiet",
            "-pidfile", f"/run/vc/vm/{SNP_SANDBOX}/pid", "-bios", "/opt/kata/share/ovmf/AMDSEV.fd",
            "-smp", "2,cores=1,threads=1,sockets=8,maxcpus=8", "-daemonize"]
# A Kata TDX guest whose tdx-guest object is not on the command line (added by the runtime over QMP, or from a
# -readconfig file): only the runtime class, in the parent shim's name, says it is a TD.
KATA_TDX_NO_OBJECT = ["/opt/kata/bin/qemu-system-x86_64", "-name", f"sandbox-{TDX_SANDBOX}",
                      "-machine", "q35,accel=kvm,kernel_irqchip=split", "-cpu", "host,pmu=off",
                      "-qmp", f"unix:path=/run/vc/vm/{TDX_SANDBOX}/qmp.sock,server=on,wait=off",
                      "-m", "4096M,slots=10,maxmem=515440M", "-smp", "cpus=4,cores=1,threads=1,sockets=16,maxcpus=16",
                      "-bios", "/opt/kata/share/ovmf/OVMF.inteltdx.fd", "-daemonize"]
SHIM_SNP = ["/usr/local/bin/containerd-shim-kata-qemu-snp-v2", "-namespace", "k8s.io", "-address",
            "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", SNP_SANDBOX]
SHIM_TDX = ["/usr/local/bin/containerd-shim-kata-qemu-tdx-v2", "-namespace", "k8s.io", "-address",
            "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd", "-id", TDX_SANDBOX]
LIBVIRT_SNP = ["/usr/bin/qemu-system-x86_64", "-name", "guest=snp-app,debug-threads=on", "-S", "-object",
               ('{"qom-type":"secret","id":"masterKey0","format":"raw",'
                '"file":"/var/lib/libvirt/qemu/domain-1-snp-app/master-key.aes"}'),
               "-machine", "pc-q35-10.0,confidential-guest-support=lsec0",
               "-object", '{"qom-type":"memory-backend-ram","id":"pc.ram","size":4294967296}',
               "-object", ('{"qom-type":"sev-snp-guest","id":"lsec0","cbitpos":51,"reduced-phys-bits":1,'
                           '"policy":196608}'), "-smp", "4,sockets=4,cores=1,threads=1"]


def write(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def argv(args: list[str]) -> bytes:
    return b"\0".join(a.encode() for a in args) + b"\0"


def process(pid: int, ppid: int, comm: str, args: list[str]) -> dict[str, str | bytes]:
    # proc(5) stat: pid (comm) state ppid ...; comm may hold spaces and parentheses, hence the rindex(")") parse.
    return {f"proc/{pid}/cmdline": argv(args),
            f"proc/{pid}/stat": f"{pid} ({comm}) S {ppid} {pid} {pid} 0 -1 4194560 0 0 0 0 1 2 0 0 20 0 3 0\n"}


def snp_host(root: Path) -> Path:
    """An EPYC Genoa host: SNP enabled, SEV-ES disabled by KVM although the command line leaves it on."""
    files: dict[str, str | bytes] = {
        "sys/module/kvm_amd/parameters/sev": "Y\n",
        "sys/module/kvm_amd/parameters/sev_es": "N\n",
        "sys/module/kvm_amd/parameters/sev_snp": "Y\n",
        "sys/bus/pci/devices/0000:47:00.1/tee_version": "00.1a.00.3c\n",
        "sys/bus/pci/devices/0000:47:00.1/bootloader_version": "00.2e.00.80\n",
        "sys/bus/pci/devices/0000:00:00.0/vendor": "0x1022\n",  # a device without PSP attributes
        "proc/cmdline": "BOOT_IMAGE=/boot/vmlinuz-6.12.0 root=/dev/sda2 ro mem_encrypt=on kvm_amd.sev=1\n",
        "proc/cpuinfo": "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 17\n"
                        "model name\t: AMD EPYC 9654 96-Core Processor\n",
        "cgroup/misc.capacity": "sev 410\nsev_es 99\n",
        "cgroup/misc.current": "sev 1\nsev_es 3\n",
        "cgroup/machine.slice/misc.current": "sev 1\nsev_es 2\n",
        "cgroup/machine.slice/misc.max": "sev max\nsev_es 90\n",
        "cgroup/machine.slice/misc.events": "sev.max 0\nsev_es.max 4\n",
        "cgroup/kubepods.slice/misc.current": "sev 0\nsev_es 1\n",
        "cgroup/kubepods.slice/misc.max": "sev max\nsev_es max\n",
        "cgroup/kubepods.slice/misc.events": "sev.max 0\nsev_es.max 0\n",
        **process(SHIM_PID, 1, "containerd-shim", SHIM_SNP),
        **process(KATA_SNP_PID, SHIM_PID, "qemu-system-x86", KATA_SNP),
        **process(LIBVIRT_PID, 1, "qemu-system-x86", LIBVIRT_SNP),
    }
    return write(root, files)


def tdx_host(root: Path) -> Path:
    """A Xeon host with TDX: module 1.5.08 whose runtime updates are used up, one Kata TD."""
    files: dict[str, str | bytes] = {
        "sys/module/kvm_intel/parameters/tdx": "Y\n",
        "sys/devices/faux/tdx_host/version": "1.5.08\n",
        "sys/devices/faux/tdx_host/seamldr_version": "1.5.02\n",
        "sys/devices/faux/tdx_host/num_remaining_updates": "0\n",
        "proc/cmdline": "BOOT_IMAGE=/boot/vmlinuz-6.16.0 root=/dev/nvme0n1p2 ro kvm_intel.tdx=1 nohibernate\n",
        "proc/cpuinfo": "processor\t: 0\nvendor_id\t: GenuineIntel\ncpu family\t: 6\nmodel\t\t: 207\n",
        "cgroup/misc.capacity": "tdx 63\n",
        "cgroup/misc.current": "tdx 1\n",
        **process(SHIM_PID, 1, "containerd-shim", SHIM_TDX),
        **process(KATA_TDX_PID, SHIM_PID, "qemu-system-x86", KATA_TDX_NO_OBJECT),
    }
    return write(root, files)
