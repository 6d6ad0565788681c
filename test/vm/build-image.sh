#!/usr/bin/env bash
# Builds (once) the guest of the VM test: a Debian bookworm root file system
# with systemd, as a raw ext4 image, plus the Debian cloud kernel and a tiny
# busybox initramfs that loads virtio and switches to it.
#
# Output: prints the image directory on stdout (everything else goes to
# stderr). The directory holds
#   vmlinuz       the kernel of linux-image-<ver>-cloud-amd64
#   initrd.gz     busybox + virtio modules; mounts /dev/vda and switch_roots
#   rootfs.img    raw ext4; boot it through a qcow2 overlay (or snapshot=on)
#                 so that it stays pristine
#   kernel-version, mirror, build-seconds
#
# Cached under ${XDG_CACHE_HOME:-$HOME/.cache}/kube-outpost-vm/img-<RECIPE>,
# where RECIPE is a hash of this script: any change to it builds a new
# image, and work trees with different scripts each keep their own. Images
# no run has used for two days are removed.
# Needs root (debootstrap, chroot) and test/vm/deps.sh's packages.
#
# The guest, when booted:
#   - gets 10.0.2.15 by DHCP from QEMU's user networking (systemd-networkd);
#   - waits for network-online.target, mounts /dev/vdb (an ext4 disk the test
#     builds) on /vmtest, runs /vmtest/run.sh with its output on /dev/ttyS1,
#     prints "VMTEST-RESULT: PASS" or "VMTEST-RESULT: FAIL <reason>" there
#     (or "VMTEST-REBOOT: ..." when run.sh exits 75: the test then boots the
#     same disk again), and powers off.
#   - has no APT sources: nothing in it ever tries to download anything.
#   - has Docker, firewalld (FirewallBackend=nftables) and ufw installed but
#     not started at boot: the coexistence test (ipvs.sh, part_coexist)
#     starts them, never firewalld and ufw at once.
#   - has systemd-resolved's packages in /opt/vmtest-debs, not installed:
#     installing it takes over /etc/resolv.conf, which only the resolved
#     test (resolved.sh) wants; it installs them from there.
set -euo pipefail

RECIPE=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-12)
SUITE=bookworm
# ipset: what ipvs mode needs (the .deb only recommends it, and the guest
# installs no recommends and has no APT sources), and the real-kernel tests
# of internal/proxy/ipvs.
INCLUDE=systemd,systemd-sysv,iptables,conntrack,curl,ca-certificates,iproute2,kmod,dbus,udev,procps,ipset
# The firewalls and the container engine whose rules kube-outpost must leave
# alone, and which must not break its own (issue 13, guarantee 9); nftables
# for `nft list ruleset`. Installed with apt-get in the chroot, which
# resolves their dependencies; no recommends.
COEXIST="docker.io firewalld ufw nftables"

cache="${XDG_CACHE_HOME:-$HOME/.cache}/kube-outpost-vm"
out="$cache/img-$RECIPE"
log() { echo ">> build-image: $*" >&2; }

if [ -f "$out/ok" ]; then
  touch "$out/ok" # used: see the pruning at the end
  echo "$out"
  exit 0
fi
[ "$(id -u)" = 0 ] || { log "needs root (debootstrap, chroot)"; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/.lock"
flock 9
if [ -f "$out/ok" ]; then # built by another process while we waited
  echo "$out"
  exit 0
fi
for t in debootstrap mke2fs qemu-system-x86_64 depmod modprobe cpio busybox; do
  command -v "$t" >/dev/null || [ -x "/bin/$t" ] || { log "missing $t: run test/vm/deps.sh"; exit 1; }
done

begin=$(date +%s)
work=$(mktemp -d "$cache/build.XXXXXX")
cleanup() {
  # debootstrap may leave proc/sys mounted in the chroot on failure.
  for m in proc sys dev/pts dev; do
    mountpoint -q "$work/root/$m" 2>/dev/null && umount -l "$work/root/$m" || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

# The Debian mirror this machine's APT already uses, for $SUITE (not the
# security or updates suites): deb822 .sources files first, then one-line
# sources.list entries.
mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      function flush() { if (uris != "" && suites ~ ("(^| )" suite "( |$)") && !found) { split(uris, u, " "); print u[1]; found = 1 } uris = ""; suites = "" }
      /^[[:space:]]*$/ { flush(); next }
      /^URIs:/ { sub(/^URIs:[[:space:]]*/, ""); uris = $0 }
      /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI suite components...
    awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ } if ($(i+1) == suite) print $i }' "$f"
  done
}
MIRROR=$(mirror | head -n1)
[ -n "$MIRROR" ] || { log "no APT source for $SUITE found in /etc/apt/sources.list{,.d}"; exit 1; }
log "mirror $MIRROR"

# The current cloud kernel: what the linux-image-cloud-amd64 meta-package
# depends on.
kpkg() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
KPKG=$(kpkg)
if [ -z "$KPKG" ]; then
  apt-get update -qq
  KPKG=$(kpkg)
fi
[ -n "$KPKG" ] || { log "cannot find the cloud kernel package (apt-cache depends linux-image-cloud-amd64)"; exit 1; }
KVER=${KPKG#linux-image-}
log "kernel $KPKG"

root="$work/root"
log "debootstrap $SUITE (minbase + $INCLUDE)"
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$root" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
  tail -n 30 "$work/debootstrap.log" >&2
  exit 1
}

log "apt-get install $COEXIST"
mount -t proc proc "$root/proc"
# Nothing starts in the chroot.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
# shellcheck disable=SC2086
if ! { chroot "$root" apt-get update -q && DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends $COEXIST; } >"$work/apt.log" 2>&1; then
  tail -n 30 "$work/apt.log" >&2
  exit 1
fi
# Downloaded with whatever of its dependencies the image lacks, for the
# versions of the systemd already in it.
log "apt-get download systemd-resolved (not installed)"
chroot "$root" apt-get clean
if ! DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -q --no-install-recommends --download-only systemd-resolved >"$work/apt-resolved.log" 2>&1; then
  tail -n 30 "$work/apt-resolved.log" >&2
  exit 1
fi
mkdir -p "$root/opt/vmtest-debs"
mv "$root"/var/cache/apt/archives/*.deb "$root/opt/vmtest-debs/"
ls "$root/opt/vmtest-debs" | grep -q '^systemd-resolved_' || { log "no systemd-resolved .deb downloaded"; exit 1; }
rm "$root/usr/sbin/policy-rc.d"
umount "$root/proc"
# Installed, not running at boot: the test starts each when it needs it.
chroot "$root" systemctl disable docker.service docker.socket containerd.service firewalld.service ufw.service >/dev/null 2>&1
for u in docker.service docker.socket containerd.service firewalld.service ufw.service; do
  [ "$(chroot "$root" systemctl is-enabled "$u" 2>/dev/null)" != enabled ] || { log "$u is still enabled"; exit 1; }
done
sed -i 's/^#\?FirewallBackend=.*/FirewallBackend=nftables/' "$root/etc/firewalld/firewalld.conf"
grep -qx FirewallBackend=nftables "$root/etc/firewalld/firewalld.conf" || { log "firewalld.conf: no FirewallBackend=nftables"; exit 1; }

log "kernel and modules"
(cd "$work" && apt-get download -o APT::Sandbox::User=root "$KPKG" >/dev/null)
dpkg -x "$work/$KPKG"_*.deb "$work/kernel"
mkdir -p "$work/out"
cp "$work/kernel/boot/vmlinuz-$KVER" "$work/out/vmlinuz"
mkdir -p "$root/usr/lib/modules"
cp -a "$work/kernel/lib/modules/$KVER" "$root/usr/lib/modules/"
depmod -b "$root" "$KVER"

log "configuring the guest"
echo vmtest >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 vmtest\n::1 localhost\n' >"$root/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 0' >"$root/etc/fstab"
# A fixed machine-id: with a snapshot disk every boot would be a first boot.
tr -d '-' </proc/sys/kernel/random/uuid >"$root/etc/machine-id"
# No APT sources and no lists: apt-get can only install what is in the image
# or given as a file, and never tries the network.
: >"$root/etc/apt/sources.list"
rm -rf "$root/etc/apt/sources.list.d"/* "$root/var/lib/apt/lists"/* "$root/var/cache/apt"/*.bin
chroot "$root" apt-get clean
cat >"$root/etc/apt/apt.conf.d/99vmtest" <<'EOF'
APT::Install-Recommends "false";
Acquire::Retries "0";
EOF
cat >"$root/etc/systemd/network/10-dhcp.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
IPv6AcceptRA=no
LinkLocalAddressing=no
EOF
mkdir -p "$root/vmtest" "$root/usr/local/sbin"
cat >"$root/usr/local/sbin/vmtest-runner" <<'EOF'
#!/bin/sh
# Runs /vmtest/run.sh from the second disk, reports on /dev/ttyS1, powers off.
exec >/dev/ttyS1 2>&1
stty -F /dev/ttyS1 raw -echo 2>/dev/null || true
echo "VMTEST-BOOTED: uptime $(cut -d' ' -f1 /proc/uptime)s"
result="FAIL runner"
if ! mount -o rw /dev/vdb /vmtest; then
  result="FAIL cannot mount /dev/vdb on /vmtest"
elif [ ! -f /vmtest/run.sh ]; then
  result="FAIL no /vmtest/run.sh"
else
  cd /vmtest
  # The test may give run.sh more time than the default 15 minutes.
  VMTEST_TIMEOUT=$(cat /vmtest/timeout 2>/dev/null || echo "${VMTEST_TIMEOUT:-900}")
  timeout "$VMTEST_TIMEOUT" bash /vmtest/run.sh
  rc=$?
  if [ "$rc" = 0 ]; then
    result=PASS
  elif [ "$rc" = 75 ]; then
    result=REBOOT
  else
    result="FAIL run.sh exited $rc in step: $(cat /run/vmtest-step 2>/dev/null || echo '?')"
  fi
  cd /
  sync
  umount /vmtest || true
fi
if [ "$result" = REBOOT ]; then
  # The test boots the same disk again; run.sh knows the boot from its state.
  echo "VMTEST-REBOOT: run.sh asks for a power cycle (uptime $(cut -d' ' -f1 /proc/uptime)s)"
else
  echo "VMTEST-RESULT: $result (uptime $(cut -d' ' -f1 /proc/uptime)s)"
fi
sync
systemctl --no-block poweroff
EOF
chmod 755 "$root/usr/local/sbin/vmtest-runner"
# Type=exec, not oneshot: boot completes while the test runs, so that run.sh
# may wait for `systemctl is-system-running --wait`.
cat >"$root/etc/systemd/system/kube-outpost-vmtest.service" <<'EOF'
[Unit]
Description=kube-outpost VM test: /vmtest/run.sh
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
ExecStart=/usr/local/sbin/vmtest-runner
StandardInput=null

[Install]
WantedBy=multi-user.target
EOF
chroot "$root" systemctl enable systemd-networkd.service systemd-networkd-wait-online.service kube-outpost-vmtest.service >/dev/null 2>&1
# Nothing that downloads, and no login prompts on the consoles.
chroot "$root" systemctl mask apt-daily.timer apt-daily-upgrade.timer getty@tty1.service serial-getty@ttyS0.service serial-getty@ttyS1.service >/dev/null 2>&1
# The image is useless if this failed, so check.
[ -L "$root/etc/systemd/system/multi-user.target.wants/kube-outpost-vmtest.service" ] || { log "systemctl enable failed"; exit 1; }

log "initramfs"
ird="$work/initrd"
mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
cp /bin/busybox "$ird/bin/busybox"
# insmod lines in dependency order for virtio over PCI and the block device.
modprobe -d "$root" -S "$KVER" --show-depends -a virtio_pci virtio_blk | awk '$1 == "insmod" { print $2 }' | awk '!seen[$0]++' >"$work/mods"
while read -r m; do
  cp "$m" "$ird/lib/modules/"
  echo "insmod /lib/modules/$(basename "$m")"
done <"$work/mods" >"$work/insmod"
[ -s "$work/insmod" ] || { log "no modules for virtio_blk?"; exit 1; }
{
  cat <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
EOF
  cat "$work/insmod"
  cat <<'EOF'
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
if ! mount -t ext4 -o rw /dev/vda /newroot; then
  echo "initrd: cannot mount /dev/vda"; poweroff -f
fi
umount /proc /sys /dev
exec switch_root /newroot /sbin/init
EOF
} >"$ird/init"
chmod 755 "$ird/init"
(cd "$ird" && find . | cpio -o -H newc --quiet | gzip -9) >"$work/out/initrd.gz"

log "rootfs.img (mke2fs -d)"
size_mb=$(( $(du -sm "$root" | cut -f1) + 700 ))
truncate -s "${size_mb}M" "$work/out/rootfs.img"
mke2fs -q -t ext4 -L vmroot -E root_owner=0:0 -d "$root" "$work/out/rootfs.img"

echo "$KVER" >"$work/out/kernel-version"
echo "$MIRROR" >"$work/out/mirror"
echo $(( $(date +%s) - begin )) >"$work/out/build-seconds"
touch "$work/out/ok"
rm -rf "$out"
mv "$work/out" "$out"
# Images of other recipes go once no run has used them for two days (a run
# touches ok): another work tree may be booting one right now.
for d in "$cache"/img-*; do
  [ "$d" = "$out" ] || [ -n "$(find "$d/ok" -mmin -2880 2>/dev/null)" ] || rm -rf "$d"
done
log "done in $(cat "$out/build-seconds")s: $out"
echo "$out"
