#!/bin/bash
# Runs inside the Debian guest of the VM test (test/vm), from /vmtest, with its
# output on the guest's second serial port. vm_test.go writes /vmtest/vmtest.env
# (the addresses and names to expect) next to this script.
#
# MODE=smoke:   the network path only: pod IPs and the apiserver through QEMU's
#               user networking, then bin/kube-outpost run by hand.
# MODE=package: the .deb: install offline, the systemd unit (Type=notify,
#               reload, restart, the legacy iptables backend), then a power
#               cycle (exit 75: the runner powers off with VMTEST-REBOOT and
#               the test boots the same disk again) to check that the enabled
#               unit comes up at boot, then remove and purge.
#
# Every step is announced with "== STEP:"; the first failing command ends the
# run (set -e) and the runner prints VMTEST-RESULT: FAIL with the step.
set -eEuo pipefail
. /vmtest/vmtest.env

step() {
  echo "$1" >/run/vmtest-step
  echo
  echo "== STEP: $1 (uptime $(cut -d' ' -f1 /proc/uptime)s)"
}
# Commands are echoed as they run.
run() {
  echo "+ $*"
  "$@"
}
warn() { echo "VMTEST-WARN: $*"; }
# soft_fail: a failed check after which the run goes on (to check the rest);
# the run fails at the end.
soft_fail() {
  echo "VMTEST-ERROR: $*"
  echo "$*" >>/var/lib/vmtest/soft
}
fail() {
  echo "VMTEST-ERROR: $*"
  dump
  exit 1
}
dump() {
  echo "---- diagnostics after failure ----"
  systemctl status kube-outpost --no-pager -l 2>&1 | tail -n 30 || true
  journalctl -u kube-outpost --no-pager -o short-monotonic 2>&1 | tail -n 80 || true
  iptables-save 2>&1 | grep -E 'OUTPOST|^\*|^COMMIT' | head -n 60 || true
  ip route || true
}
trap 'rc=$?; echo "VMTEST-ERROR: line $LINENO: \"$BASH_COMMAND\" exited $rc"; dump' ERR

# curl_pods N URL: N requests, each on a new connection; every answer must be
# one of $EXPECT_PODS, and every one of them must answer.
curl_pods() {
  local n=$1 url=$2 body i p seen=" "
  for ((i = 0; i < n; i++)); do
    body=$(curl -sS --max-time 5 "$url") || { echo "request $i to $url failed"; return 1; }
    case " $EXPECT_PODS " in
    *" $body "*) ;;
    *) echo "request $i to $url: unexpected answer '$body' (want one of: $EXPECT_PODS)"; return 1 ;;
    esac
    case "$seen" in *" $body "*) ;; *) seen="$seen$body " ;; esac
  done
  for p in $EXPECT_PODS; do
    case "$seen" in *" $p "*) ;; *) echo "$p never answered in $n requests to $url (answers:$seen)"; return 1 ;; esac
  done
  echo "$url: $n answers, from:$seen"
}

# curl_one URL: one request, answered by one of $EXPECT_PODS.
curl_one() {
  local body
  body=$(curl -sS --max-time 5 "$1") || return 1
  case " $EXPECT_PODS " in
  *" $body "*) echo "$1 -> $body" ;;
  *) echo "$1: unexpected answer '$body' (want one of: $EXPECT_PODS)"; return 1 ;;
  esac
}

# wait_curl SECONDS URL: until one request to URL answers with an expected pod.
wait_curl() {
  local deadline=$(($(date +%s) + $1)) url=$2
  until curl_one "$url" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { curl_one "$url" || true; return 1; }
    sleep 0.5
  done
}

outpost_rules() { iptables-save | grep -c OUTPOST || true; }

mkdir -p /var/lib/vmtest
boot=$(( $(cat /var/lib/vmtest/boots 2>/dev/null || echo 0) + 1 ))
echo "$boot" >/var/lib/vmtest/boots

step "guest (boot $boot)"
run uname -r
run ip -br addr
run ip route
run systemctl is-system-running --wait || { systemctl --failed --no-pager; fail "system is not running"; }

step "network: pods and apiserver through QEMU user networking"
for ip in $POD_IPS; do
  body=$(curl -sS --max-time 10 "http://$ip:$POD_PORT/")
  echo "http://$ip:$POD_PORT/ -> $body"
done
run curl -sS --max-time 10 --cacert /vmtest/ca.crt "$APISERVER/readyz"
echo

# The service range must be routed (the OUTPUT-chain DNAT needs a route): the
# default route via the user-networking gateway covers it; add one if not.
if ! ip route get "$CLUSTER_IP" >/dev/null 2>&1; then
  run ip route add "$SERVICE_CIDR" via 10.0.2.2
fi
url="http://$CLUSTER_IP:$SVC_PORT/"

if [ "$MODE" = smoke ]; then
  step "smoke: kube-outpost run by hand"
  mkdir -p /etc/kube-outpost
  install -m 0600 /vmtest/prod.kubeconfig /etc/kube-outpost/prod.kubeconfig
  install -m 0644 /vmtest/config.toml /etc/kube-outpost/config.toml
  run /vmtest/kube-outpost version
  run /vmtest/kube-outpost check-config --config /etc/kube-outpost/config.toml
  /vmtest/kube-outpost run --config /etc/kube-outpost/config.toml >/run/outpost.log 2>&1 &
  pid=$!
  wait_curl 60 "$url" || { cat /run/outpost.log; fail "$url never answered"; }
  run curl_pods 20 "$url"
  echo "OUTPOST rules: $(outpost_rules)"
  kill -TERM $pid
  wait $pid || true
  run /vmtest/kube-outpost cleanup
  [ "$(outpost_rules)" = 0 ] || fail "rules left after cleanup: $(iptables-save | grep OUTPOST)"
  exit 0
fi

if [ "$boot" = 1 ]; then
step "install the .deb offline"
deb=$(ls /vmtest/kube-outpost_*.deb)
run dpkg-deb --info "$deb"
# No --no-download: with it apt 2.6 fails on a local .deb ("Pathname to
# install is not absolute"). The image has no APT sources, so apt cannot
# download anything anyway: a dependency missing from the image fails here.
run apt-get install -y -q -o Acquire::Retries=0 "$deb"
echo "after install: enabled=$(systemctl is-enabled kube-outpost 2>&1 || true) active=$(systemctl is-active kube-outpost 2>&1 || true)"

step "files"
for f in /usr/bin/kube-outpost /usr/lib/systemd/system/kube-outpost.service /etc/kube-outpost/config.toml; do
  run ls -l "$f"
done
run ls -l /usr/share/doc/kube-outpost/
run dpkg -L kube-outpost
run cat /usr/lib/systemd/system/kube-outpost.service
run kube-outpost version

step "configure"
user=$(systemctl show -p User --value kube-outpost)
install -m 0644 /vmtest/config.toml /etc/kube-outpost/config.toml
install -m 0600 /vmtest/prod.kubeconfig /etc/kube-outpost/prod.kubeconfig
if [ -n "$user" ] && [ "$user" != root ]; then
  # The unit runs as $user: let it read the credentials.
  chgrp "$user" /etc/kube-outpost/prod.kubeconfig
  chmod 0640 /etc/kube-outpost/prod.kubeconfig
fi
run kube-outpost check-config --config /etc/kube-outpost/config.toml

step "systemctl enable, start"
before=$(outpost_rules)
run systemctl enable kube-outpost
run systemctl start kube-outpost
run systemctl is-active kube-outpost
run systemctl show -p Type,NotifyAccess,StatusText,ExecMainStatus,ActiveState,SubState,MainPID,User kube-outpost
[ "$(systemctl show -p Type --value kube-outpost)" = notify ] || fail "Type is not notify"
[ "$(systemctl show -p SubState --value kube-outpost)" = running ] || fail "SubState is not running"
# Type=notify: "active" should mean the first sync is done, so the ClusterIP
# should answer at once.
if ! curl_one "$url"; then
  warn "$url did not answer right after systemctl start returned (rules before start: $before, now: $(outpost_rules))"
  wait_curl 30 "$url" || fail "$url never answered"
fi
run curl_pods 20 "$url"

step "systemctl reload"
pid=$(systemctl show -p MainPID --value kube-outpost)
run systemctl reload kube-outpost
sleep 2
run systemctl is-active kube-outpost
run systemctl show -p StatusText,MainPID,ExecMainStatus,SubState kube-outpost
[ "$(systemctl show -p MainPID --value kube-outpost)" = "$pid" ] || fail "reload changed MainPID ($pid -> $(systemctl show -p MainPID --value kube-outpost))"
run curl_pods 20 "$url"

step "systemctl restart"
run systemctl restart kube-outpost
run systemctl is-active kube-outpost
run systemctl show -p StatusText,MainPID,ExecMainStatus,SubState kube-outpost
[ "$(systemctl show -p MainPID --value kube-outpost)" != "$pid" ] || fail "restart kept MainPID $pid"
run curl_pods 20 "$url"

# The unit says it supports the legacy backend (ReadWritePaths=-/run/xtables.lock
# under ProtectSystem=strict). As on a machine booted with the legacy
# alternative, nothing has created /run/xtables.lock before the daemon starts.
step "iptables-legacy backend"
run systemctl stop kube-outpost
run kube-outpost cleanup
run update-alternatives --set iptables /usr/sbin/iptables-legacy
ls -l /run/xtables.lock 2>&1 || true
if run systemctl start kube-outpost; then
  ls -l /run/xtables.lock 2>&1 || true
  if wait_curl 30 "$url" && curl_pods 20 "$url"; then
    echo "legacy: $(iptables-legacy-save | grep -c OUTPOST || true) OUTPOST lines in iptables-legacy-save, $(iptables-nft-save | grep -c OUTPOST || true) in iptables-nft-save"
  else
    soft_fail "iptables-legacy backend: $url does not answer"
  fi
else
  soft_fail "iptables-legacy backend: systemctl start kube-outpost failed"
  systemctl status kube-outpost --no-pager -l 2>&1 | tail -n 20 || true
fi
run systemctl stop kube-outpost
run kube-outpost cleanup
run update-alternatives --set iptables /usr/sbin/iptables-nft
run systemctl start kube-outpost
wait_curl 30 "$url" || fail "$url does not answer after going back to the nf_tables backend"

step "journal"
journalctl -u kube-outpost --no-pager -o short-monotonic | tail -n 60

step "systemd-analyze security"
systemd-analyze security --no-pager kube-outpost.service || true

step "power cycle"
sync
exit 75
fi # boot 1

step "after the power cycle: the enabled unit started at boot"
run systemctl is-enabled kube-outpost
run systemctl is-active kube-outpost
run systemctl show -p Type,StatusText,ExecMainStatus,ActiveState,SubState,NRestarts kube-outpost
[ "$(systemctl show -p NRestarts --value kube-outpost)" = 0 ] || soft_fail "kube-outpost was restarted $(systemctl show -p NRestarts --value kube-outpost) times during boot"
run systemd-analyze critical-chain --no-pager kube-outpost.service
journalctl -b -u kube-outpost --no-pager -o short-monotonic
journalctl -b --no-pager -o short-monotonic -u systemd-networkd-wait-online -u kube-outpost-vmtest | tail -n 5
curl_one "$url" || soft_fail "$url did not answer right after boot"
run curl_pods 20 "$url"

step "apt-get remove"
run apt-get remove -y -q kube-outpost
state=$(systemctl is-active kube-outpost 2>&1 || true)
[ "$state" = inactive ] || [ "$state" = unknown ] || fail "after remove: systemctl is-active says $state"
echo "after remove: is-active=$state is-enabled=$(systemctl is-enabled kube-outpost 2>&1 || true)"
[ ! -e /usr/bin/kube-outpost ] || fail "/usr/bin/kube-outpost still there after remove"
[ -f /etc/kube-outpost/config.toml ] || fail "/etc/kube-outpost/config.toml gone after remove (conffiles stay until purge)"
n=$(outpost_rules)
echo "after remove: $n OUTPOST lines in iptables-save"
[ "$n" -gt 0 ] || fail "remove deleted the rules (only purge should)"
# Stopped, the rules go on serving the last endpoints (no longer updated).
curl_one "$url" || echo "after remove: $url does not answer"
du -sh /var/lib/kube-outpost 2>&1 || true
run dpkg -l kube-outpost

step "apt-get purge"
run apt-get purge -y -q kube-outpost
n=$(outpost_rules)
[ "$n" = 0 ] || fail "after purge: $n OUTPOST lines left: $(iptables-save | grep OUTPOST)"
[ ! -e /etc/kube-outpost/config.toml ] || fail "/etc/kube-outpost/config.toml still there after purge"
[ ! -e /var/lib/kube-outpost ] || fail "/var/lib/kube-outpost still there after purge: $(ls -la /var/lib/kube-outpost)"
ls -la /etc/kube-outpost 2>&1 || true
if dpkg -l kube-outpost 2>/dev/null | grep -q '^[a-z][a-z] '; then
  run dpkg -l kube-outpost
fi
echo "after purge: no OUTPOST rules, config gone"

if [ -s /var/lib/vmtest/soft ]; then
  echo "checks failed: $(head -n1 /var/lib/vmtest/soft)" >/run/vmtest-step
  echo "VMTEST-ERROR: failed checks:"
  cat /var/lib/vmtest/soft
  exit 1
fi
