#!/usr/bin/env bash
# Installs what vmnat's tests and benchmarks need on a fresh Debian 12 machine (run as root):
# the real peers (busybox udhcpc, ISC dhclient, curl, iperf3, dig, tcpdump, dnsmasq for the bridged
# mode's LAN), the reference engines (slirp4netns, passt/pasta), qemu for the real-VM tests and its
# iPXE NIC ROMs (ipxe-qemu: the network-boot test), ssh for the labs, binutils (nm: the
# portable-build symbol check), and then builds the test VM's kernel and initramfs from Debian
# packages into .cache/guest (scripts/build-guest.sh), and the guest's SSH server archive for the
# labs (scripts/build-guest-ssh.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  iproute2 busybox-static isc-dhcp-client curl iperf3 bind9-dnsutils tcpdump
  slirp4netns passt
  qemu-system-x86 cpio xz-utils kmod ipxe-qemu
  ethtool
  openssh-client binutils
  dnsmasq-base
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-test-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

bash scripts/build-guest.sh
bash scripts/build-guest-ssh.sh
