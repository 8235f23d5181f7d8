#!/usr/bin/env bash
# Starts a real libvirtd with the QEMU driver by hand (no systemd here) and waits until it answers.
# Idempotent: does nothing when qemu:///system already answers.
set -euo pipefail
if timeout 5 virsh -c qemu:///system version >/dev/null 2>&1; then exit 0; fi

id libvirt-qemu >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin libvirt-qemu
# Running QEMU as root avoids libvirt re-probing QEMU's capabilities (~30 s) on every define.
conf=/etc/libvirt/qemu.conf
grep -q '^user = "root"' "$conf" || printf 'user = "root"\ngroup = "root"\n' >> "$conf"
mkdir -p /var/log/libvirt/qemu /var/run/libvirt /var/lib/libvirt/qemu
pgrep -r R,S,D -x virtlogd >/dev/null || virtlogd -d
pgrep -r R,S,D -x libvirtd >/dev/null || libvirtd -d
# libvirtd takes ~8 s to answer on an idle 2-core machine (driver and capability probing), much longer under load.
deadline=$((SECONDS + 120))
while ((SECONDS < deadline)); do
  if timeout 5 virsh -c qemu:///system version >/dev/null 2>&1; then exit 0; fi
  sleep 0.2
done
echo "libvirtd did not answer on qemu:///system within 120 s" >&2
exit 1
