#!/usr/bin/env bash
# Installs, by Debian package name, what building and testing kube-outpost needs.
# Idempotent: packages already present are not fetched again, and apt-get update
# runs only when something is missing. `deps.sh generate` installs instead what
# `make generate` needs to compile the eBPF programs (clang, libbpf's and
# the kernel's headers); building and testing use the committed objects.
set -euo pipefail

pkgs=(iptables nftables iproute2 ipset curl socat openssl ca-certificates dnsutils dnsmasq-base)
if [ "${1:-}" = generate ]; then
  pkgs=(clang-14 llvm-14 libbpf-dev linux-libc-dev)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo ">> installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
