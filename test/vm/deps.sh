#!/usr/bin/env bash
# Installs, by Debian package name, what the VM test (test/vm) needs on the
# machine that runs it: QEMU (software emulation only), debootstrap and
# e2fsprogs to build the guest image, rpm to inspect the .rpm on the host.
# Idempotent: apt-get runs only when something is missing.
set -euo pipefail

pkgs=(qemu-system-x86 qemu-utils debootstrap e2fsprogs rpm cpio kmod busybox-static iptables iproute2 ca-certificates debian-archive-keyring)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo ">> test/vm/deps.sh: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
