#!/usr/bin/env bash
# Installs the system packages the exporter, the shipper and their tests need, on Debian bookworm.
# Idempotent: a second run only checks. Needs root (apt) and the package registries.
set -euo pipefail

BACKPORTS=/etc/apt/sources.list.d/bookworm-backports.sources
# libvirt 11.x and QEMU 10.x: bookworm's own libvirt 9.0 cannot parse <launchSecurity type='sev-snp'>.
BACKPORTS_PKGS=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-daemon-system libvirt-clients libvirt-dev
                qemu-system-x86)
STABLE_PKGS=(pkg-config gcc iproute2 conntrack iptables curl openjdk-17-jre-headless prometheus prometheus-alertmanager prometheus-libvirt-exporter nginx jq unzip
             maven openssh-client)  # openssh-client: the ssh-agent holding the test witness's key (litewitness)

have_all() {
  dpkg-query -W -f='${Status}\n' "$@" 2>/dev/null | grep -c 'install ok installed' | grep -qx "$#"
}

if have_all "${BACKPORTS_PKGS[@]}" "${STABLE_PKGS[@]}" && virsh --version | grep -q '^11\.'; then
  exit 0
fi

if ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  cat > "$BACKPORTS" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d keeps the packages' maintainer scripts from trying to start services: we start them by hand.
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
apt-get install -y -qq --no-install-recommends -t bookworm-backports "${BACKPORTS_PKGS[@]}" >/dev/null
apt-get install -y -qq --no-install-recommends "${STABLE_PKGS[@]}" >/dev/null
virsh --version
