#!/bin/bash
# Runs inside the Debian guest of the VM test (test/vm), from /vmtest, with its
# output on the guest's second serial port. vm_test.go writes /vmtest/vmtest.env
# (the addresses and names to expect) next to this script.
#
# MODE=smoke:   the network path only: pod IPs and the apiserver through QEMU's
#               user networking, then bin/kube-outpost run by hand.
# MODE=package: the .deb: install offline, the systemd unit (Type=notify,
#               reload, restart), then a power cycle (exit 75: the runner
#               powers off with VMTEST-REBOOT and the test boots the same
#               disk again) to check that the enabled
#               unit comes up at boot, with the legacy iptables backend and
#               the apiserver stopped, serving the last known state; the
#               apiserver's return with changes; the xtables lock held by
#               another program; then an upgrade to the newer .deb in
#               /vmtest/upgrade ($UPGRADE_VERSION), remove and purge; then the
#               tarball install: the bare binary in /usr/local/bin and
#               `kube-outpost service install|start|status|stop|uninstall`.
# MODE=resolved: the .deb with [dns] beside systemd-resolved (resolved.sh).
# MODE=ipvs:    the parts in $PARTS (test/vm/ipvs.sh), each in a process of
#               its own (`run.sh --part NAME`) so that a failing part ends
#               only itself: "mode", the .deb with mode = "ipvs", and
#               "kernel", the real-kernel tests of internal/proxy/ipvs.
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
  if [ -e /proc/net/ip_vs ]; then
    cat /proc/net/ip_vs || true
    ip addr show outpost0 2>&1 || true
    ipset list -n 2>&1 || true
  fi
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

# loop_start SECONDS: a request to $url every SECONDS, each on a new
# connection, logged to /run/vmtest-loop.log as "ok ..." or "FAILED ...",
# in the background until loop_stop.
loop_start() {
  rm -f /run/vmtest-loop-stop
  (
    set +eE
    trap - ERR
    while [ ! -e /run/vmtest-loop-stop ]; do
      if out=$(curl_one "$url" 2>&1); then echo "ok $out"; else echo "FAILED $(cut -d' ' -f1 /proc/uptime): $out"; fi
      sleep "$1"
    done
  ) >/run/vmtest-loop.log 2>&1 &
  loop=$!
}
loop_stop() {
  touch /run/vmtest-loop-stop
  wait "$loop" || true
}

# host_step NAME: has the test on the host do step NAME (steps_test.go: change
# the lab cluster's objects, stop or start its apiserver) and prints its
# answer, NAME=value lines to eval.
host_step() {
  local out rc=0
  out=$(curl -sS --fail-with-body -X POST --max-time 180 "$CONTROL/step/$1" 2>&1) || rc=$?
  [ "$rc" = 0 ] || { echo "host step $1: curl exit $rc: $out" >&2; return 1; }
  echo "$out"
}

# only_from SECONDS URL POD: waits until 5 requests in a row to URL are
# answered by POD, and prints how long it took until the first of them, in
# ms; fails after SECONDS.
only_from() {
  local deadline=$(($(date +%s) + $1)) url=$2 pod=$3 t0 first=0 n=0 body
  t0=$(date +%s%N)
  while [ "$n" -lt 5 ]; do
    body=$(curl -sS --max-time 2 "$url" 2>&1) || body="failed: $body"
    if [ "$body" = "$pod" ]; then
      [ "$n" -gt 0 ] || first=$(date +%s%N)
      n=$((n + 1))
      continue
    fi
    n=0
    [ "$(date +%s)" -lt "$deadline" ] || { echo "$url: '$body' after $1 s, want only $pod" >&2; return 1; }
    sleep 0.2
  done
  echo $(((first - t0) / 1000000))
}

# ms_since NANOS: milliseconds since a `date +%s%N`.
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# metric NAME: the value of one series of the daemon's /metrics (NAME with
# its labels, as printed), or 0 when there is none.
metric() {
  curl -sS --max-time 5 http://127.0.0.1:10249/metrics | awk -v s="$1" '$1 == s { v = $2 } END { print v == "" ? 0 : v }'
}

# A part of MODE=ipvs, run by the MODE=ipvs branch below.
if [ "${1:-}" = --part ]; then
  . /vmtest/ipvs.sh
  "part_$2"
  if [ -s /var/lib/vmtest/soft ]; then
    echo "checks failed: $(head -n1 /var/lib/vmtest/soft)" >/run/vmtest-step
    echo "VMTEST-ERROR: failed checks:"
    cat /var/lib/vmtest/soft
    exit 1
  fi
  exit 0
fi

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
if [ "$MODE" = package ] && [ "$boot" = 2 ]; then
  echo "(the apiserver is stopped for this boot)"
else
  run curl -sS --max-time 10 --cacert /vmtest/ca.crt "$APISERVER/readyz"
  echo
fi

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

if [ "$MODE" = resolved ]; then
  . /vmtest/resolved.sh
  resolved_main
  exit 0
fi

if [ "$MODE" = ipvs ]; then
  failed=""
  for part in $PARTS; do
    echo "VMTEST-PART-BEGIN: $part (uptime $(cut -d' ' -f1 /proc/uptime)s)"
    begin=$(date +%s%N)
    rm -f /var/lib/vmtest/soft /run/vmtest-step
    rc=0
    bash /vmtest/run.sh --part "$part" || rc=$?
    took=$((($(date +%s%N) - begin) / 1000000))ms
    if [ "$rc" = 0 ]; then
      echo "VMTEST-PART: $part PASS ($took)"
    else
      echo "VMTEST-PART: $part FAIL exit $rc in step: $(cat /run/vmtest-step 2>/dev/null || echo '?') ($took)"
      failed="$failed $part"
    fi
  done
  if [ -n "$failed" ]; then
    echo "parts failed:$failed" >/run/vmtest-step
    exit 1
  fi
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

step "journal"
journalctl -u kube-outpost --no-pager -o short-monotonic | tail -n 60

step "systemd-analyze security"
systemd-analyze security --no-pager kube-outpost.service || true

# The power cycle is a boot without an apiserver (issue 13, guarantee 2):
# "boot" is answered by web-1 now, and the daemon saves that at the
# shutdown; while the guest is off, the host moves "boot" to web-2, makes a
# Service "boot-new" and stops the apiserver (vm_test.go, rebootSteps).
# It is also a fresh boot with the legacy iptables backend (guarantee 6):
# nothing will have created /run/xtables.lock before the unit's prepare.
step "before the power cycle: a service to serve from the last known state; the legacy backend"
set -- $EXPECT_PODS
pod1=$1 pod2=$2
out=$(host_step boot-service) || fail "host step boot-service failed"
eval "$out"
ms=$(only_from 30 "http://$BOOT_IP:$SVC_PORT/" "$pod1") || fail "service boot is not answered by $pod1 alone"
echo "service boot ($BOOT_IP) answered by $pod1 after ${ms} ms"
echo "BOOT_IP=$BOOT_IP" >/var/lib/vmtest/env
run update-alternatives --set iptables /usr/sbin/iptables-legacy

step "power cycle"
sync
exit 75
fi # boot 1

set -- $EXPECT_PODS
pod1=$1 pod2=$2
. /var/lib/vmtest/env
boot_url="http://$BOOT_IP:$SVC_PORT/"

step "after the power cycle: the enabled unit started at boot, without an apiserver, on the legacy backend"
run systemctl is-enabled kube-outpost
run systemctl is-active kube-outpost
run systemctl show -p Type,StatusText,ExecMainStatus,ActiveState,SubState,NRestarts,InactiveExitTimestamp kube-outpost
[ "$(systemctl show -p NRestarts --value kube-outpost)" = 0 ] || soft_fail "kube-outpost was restarted $(systemctl show -p NRestarts --value kube-outpost) times during boot"
run systemd-analyze critical-chain --no-pager kube-outpost.service
journalctl -b -u kube-outpost --no-pager -o short-monotonic
journalctl -b --no-pager -o short-monotonic -u systemd-networkd-wait-online -u kube-outpost-vmtest | tail -n 5
if curl -sS --max-time 3 --cacert /vmtest/ca.crt "$APISERVER/readyz" >/dev/null 2>&1; then
  fail "the apiserver answers: the host should have stopped it for this boot"
fi
echo "the apiserver does not answer"
curl_one "$url" || soft_fail "$url did not answer right after boot"
run curl_pods 20 "$url" || soft_fail "$url is not served from the last known state"
# The last known state, not the live one (where web-2 has replaced web-1).
if only_from 10 "$boot_url" "$pod1" >/dev/null; then
  echo "service boot answered by $pod1, from the last known state"
else
  soft_fail "service boot is not served from its last known state ($pod1)"
fi
status=$(kube-outpost status 2>&1) || true
echo "$status"
grep -q STALE <<<"$status" || soft_fail "kube-outpost status: no STALE"
grep -q "serving last known state from" <<<"$status" || soft_fail "kube-outpost status: no 'serving last known state from'"
stale=$(metric 'kube_outpost_cluster_stale_state{cluster="prod"}')
[ "$stale" = 1 ] || soft_fail "kube_outpost_cluster_stale_state{cluster=\"prod\"} is $stale, want 1"
# Fresh boot, legacy backend: /run/xtables.lock is created by the unit's
# prepare (nothing else here runs iptables at boot), and the sandboxed
# daemon could write through it.
run update-alternatives --query iptables | grep '^Value:'
started=$(date -d "$(systemctl show -p InactiveExitTimestamp --value kube-outpost)" +%s)
lock=$(stat -c %Y /run/xtables.lock 2>/dev/null) || fail "no /run/xtables.lock after a boot with the legacy backend"
echo "/run/xtables.lock modified at $lock; the unit left inactive at $started"
[ "$lock" -ge "$started" ] || soft_fail "/run/xtables.lock is older than the unit's start: something else made it, and this boot does not show that prepare does"
legacy=$(iptables-legacy-save | grep -c OUTPOST || true)
nft=$(iptables-nft-save | grep -c OUTPOST || true)
echo "OUTPOST lines: $legacy in iptables-legacy-save, $nft in iptables-nft-save"
[ "$legacy" -gt 0 ] && [ "$nft" = 0 ] || fail "the daemon did not write with the legacy backend"
echo "VMTEST-INFO: boot without an apiserver: the unit started at boot on the legacy backend, /run/xtables.lock made by its prepare"

step "the apiserver returns, with the changes made while the host was off"
out=$(host_step apiserver-start) || fail "host step apiserver-start failed"
eval "$out"
# Both at once, each timed from now.
only_from 60 "$boot_url" "$pod2" >/run/vmtest-boot.ms 2>&1 &
moved=$!
only_from 60 "http://$BOOT_NEW_IP:$SVC_PORT/" "$pod1" >/run/vmtest-boot-new.ms 2>&1 &
added=$!
wait "$moved" || fail "service boot did not move to $pod2 once the apiserver answered: $(cat /run/vmtest-boot.ms)"
wait "$added" || fail "service boot-new ($BOOT_NEW_IP) is not served once the apiserver answered: $(cat /run/vmtest-boot-new.ms)"
echo "VMTEST-INFO: boot without an apiserver: once it answered again, the endpoint replaced was followed in $(cat /run/vmtest-boot.ms) ms, the new service in $(cat /run/vmtest-boot-new.ms) ms"
status=$(kube-outpost status 2>&1) || true
echo "$status"
! grep -q STALE <<<"$status" || soft_fail "kube-outpost status: still STALE"
stale=$(metric 'kube_outpost_cluster_stale_state{cluster="prod"}')
[ "$stale" = 0 ] || soft_fail "kube_outpost_cluster_stale_state{cluster=\"prod\"} is $stale, want 0"
journalctl -u kube-outpost --no-pager -o short-monotonic | grep -F "live state replaces" || soft_fail "no 'live state replaces' in the journal"

# Another program holds the xtables lock for 10 s (guarantee 6): the
# previous rules serve meanwhile; a change made during the hold is applied
# after it, the sync either waiting for the lock or failing, counted and
# retried.
step "the xtables lock held for 10 s by another program (legacy backend)"
errs0=$(metric kube_outpost_sync_proxy_rules_errors_total)
loop_start 0.2
since=$(date '+%Y-%m-%d %H:%M:%S')
# The holder marks the end before it lets the lock go: an answer that
# came before the mark came while the lock was held. (kill -0 on the
# holder would not do: it is true of the exited holder until it is
# reaped, and a sync waiting for the lock applies the change at once.)
rm -f /run/vmtest-hold-end
flock /run/xtables.lock sh -c 'sleep 10; touch /run/vmtest-hold-end' &
holder=$!
t_hold=$(date +%s%N)
sleep 1
host_step boot-back >/dev/null || fail "host step boot-back failed"
during=" "
while [ ! -e /run/vmtest-hold-end ]; do
  body=$(curl -sS --max-time 1 "$boot_url" 2>&1) || body=failed
  [ ! -e /run/vmtest-hold-end ] || break
  case "$during" in *" $body "*) ;; *) during="$during$body " ;; esac
  sleep 0.3
done
wait "$holder" || true
held=$((($(date +%s%N) - t_hold) / 1000000))
ms=$(only_from 30 "$boot_url" "$pod1") || { soft_fail "the change made while the lock was held was not applied within 30 s of its release"; ms=-1; }
loop_stop
errs1=$(metric kube_outpost_sync_proxy_rules_errors_total)
ok=$(grep -c '^ok' /run/vmtest-loop.log || true)
failed=$(grep -c '^FAILED' /run/vmtest-loop.log || true)
journalctl -u kube-outpost --no-pager -o short-monotonic --since "$since" | grep -E 'sync failed|xtables|lock' || true
echo "service boot during the hold (${held} ms), answered by:$during"
[ "$during" = " $pod2 " ] || soft_fail "service boot during the hold: answered by:$during, want $pod2 alone (the previous rules)"
echo "VMTEST-INFO: xtables lock held ${held} ms: $ok requests answered, $failed failed; $((errs1 - errs0)) sync errors counted; the change made during the hold applied ${ms} ms after it"
[ "$failed" = 0 ] || soft_fail "$failed of $((ok + failed)) requests to $url failed while the xtables lock was held"

step "back to the nf_tables backend"
run systemctl stop kube-outpost
run kube-outpost cleanup
[ "$(iptables-legacy-save | grep -c OUTPOST || true)" = 0 ] || fail "kube-outpost cleanup left rules in the legacy backend"
run update-alternatives --set iptables /usr/sbin/iptables-nft
run systemctl start kube-outpost
wait_curl 30 "$url" || fail "$url does not answer after going back to the nf_tables backend"

# An upgrade as an admin does it: a newer .deb (built from the same tree by
# vm_test.go, version $UPGRADE_VERSION) over the running, configured, enabled
# package, with /etc/kube-outpost/config.toml edited. The packaged config is
# the same in both versions, so dpkg must keep the admin's file without a
# prompt: stdin is /dev/null and there is no --force-confold, so a prompt
# fails the install. postinst must try-restart the daemon onto the new
# binary, and the rules must go on serving while it restarts.
step "upgrade to $UPGRADE_VERSION"
newdeb=$(ls /vmtest/upgrade/kube-outpost_*.deb)
old_version=$(dpkg-query -W -f '${Version}' kube-outpost)
echo "installed: $old_version; upgrading to: $(dpkg-deb -f "$newdeb" Version)"
echo "# vmtest: the admin's edit, to be kept across upgrades" >>/etc/kube-outpost/config.toml
conf_sum=$(sha256sum </etc/kube-outpost/config.toml)
run kube-outpost check-config --config /etc/kube-outpost/config.toml
pid=$(systemctl show -p MainPID --value kube-outpost)
echo "MainPID $pid, $(readlink /proc/"$pid"/exe)"
# One request every 0.2 s, each on a new connection, from before the upgrade
# starts until after it has finished.
loop_start 0.2
for ((i = 0; i < 100; i++)); do
  grep -q '^ok' /run/vmtest-loop.log 2>/dev/null && break
  sleep 0.2
done
apt_rc=0
apt-get install -y -q -o Acquire::Retries=0 "$newdeb" </dev/null 2>&1 | tee /run/vmtest-upgrade.log || apt_rc=$?
sleep 1 # a few more requests after the restart
loop_stop
[ "$apt_rc" = 0 ] || fail "apt-get install $newdeb exited $apt_rc"
ok=$(grep -c '^ok' /run/vmtest-loop.log || true)
failed=$(grep -c '^FAILED' /run/vmtest-loop.log || true)
echo "requests to $url during the upgrade: $ok answered, $failed failed"
if [ "$failed" != 0 ]; then
  grep '^FAILED' /run/vmtest-loop.log | head -n 10
  soft_fail "$failed of $((ok + failed)) requests to $url failed during the upgrade"
fi
new_version=$(dpkg-query -W -f '${Version}' kube-outpost)
[ "$new_version" = "$UPGRADE_VERSION" ] || fail "after the upgrade dpkg has kube-outpost $new_version, want $UPGRADE_VERSION"
if grep -E "Configuration file|config file" /run/vmtest-upgrade.log; then
  soft_fail "dpkg talked about the config file during the upgrade (see above)"
fi
[ "$(sha256sum </etc/kube-outpost/config.toml)" = "$conf_sum" ] || fail "the upgrade changed the admin's /etc/kube-outpost/config.toml: $(tail -n 5 /etc/kube-outpost/config.toml)"
run grep -F "# vmtest: the admin's edit" /etc/kube-outpost/config.toml
leftovers=$(ls /etc/kube-outpost/ | grep -E '\.(dpkg|ucf)-' || true)
[ -z "$leftovers" ] || soft_fail "the upgrade left $leftovers in /etc/kube-outpost"
run kube-outpost version
kube-outpost version | grep -qF "kube-outpost $UPGRADE_VERSION " || fail "kube-outpost version does not show $UPGRADE_VERSION"
run systemctl show -p ActiveState,SubState,MainPID,ExecMainStartTimestamp,StatusText,NRestarts kube-outpost
[ "$(systemctl is-enabled kube-outpost)" = enabled ] || fail "the upgrade left the unit $(systemctl is-enabled kube-outpost 2>&1)"
[ "$(systemctl show -p ActiveState --value kube-outpost)" = active ] || fail "the upgrade left the unit $(systemctl show -p ActiveState --value kube-outpost)"
[ "$(systemctl show -p SubState --value kube-outpost)" = running ] || fail "the upgrade left the unit in SubState $(systemctl show -p SubState --value kube-outpost)"
newpid=$(systemctl show -p MainPID --value kube-outpost)
[ "$newpid" != "$pid" ] || fail "the upgrade did not restart kube-outpost (MainPID $pid before and after)"
# The old binary, replaced on disk, would show as "/usr/bin/kube-outpost (deleted)".
exe=$(readlink /proc/"$newpid"/exe)
echo "MainPID $pid -> $newpid, $exe"
[ "$exe" = /usr/bin/kube-outpost ] || fail "MainPID $newpid runs $exe, not the new /usr/bin/kube-outpost"
journalctl -u kube-outpost --no-pager -o short-monotonic -n 12
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
# The copy purge runs as root is where the sandboxed daemon cannot write.
[ "$(stat -c %u:%a /var/lib/kube-outpost-purge/kube-outpost 2>&1)" = 0:700 ] ||
  fail "after remove: no root-only purge copy: $(ls -la /var/lib/kube-outpost-purge 2>&1)"
[ ! -e /var/lib/kube-outpost/kube-outpost.cleanup ] || fail "after remove: a purge copy in the daemon's state directory"
run dpkg -l kube-outpost

step "apt-get purge"
run apt-get purge -y -q kube-outpost
n=$(outpost_rules)
[ "$n" = 0 ] || fail "after purge: $n OUTPOST lines left: $(iptables-save | grep OUTPOST)"
[ ! -e /etc/kube-outpost/config.toml ] || fail "/etc/kube-outpost/config.toml still there after purge"
[ ! -e /var/lib/kube-outpost ] || fail "/var/lib/kube-outpost still there after purge: $(ls -la /var/lib/kube-outpost)"
[ ! -e /var/lib/kube-outpost-purge ] || fail "/var/lib/kube-outpost-purge still there after purge: $(ls -la /var/lib/kube-outpost-purge)"
ls -la /etc/kube-outpost 2>&1 || true
if dpkg -l kube-outpost 2>/dev/null | grep -q '^[a-z][a-z] '; then
  run dpkg -l kube-outpost
fi
echo "after purge: no OUTPOST rules, config gone"

# The tarball install, on the purged machine: the bare binary in
# /usr/local/bin, and `kube-outpost service ...` (kardianos/service) writing
# and driving /etc/systemd/system/kube-outpost.service.
step "tarball install: kube-outpost service install"
unit=/etc/systemd/system/kube-outpost.service
[ ! -e "$unit" ] || fail "$unit exists before service install"
deb=$(ls /vmtest/kube-outpost_*.deb)
dpkg-deb -x "$deb" /tmp/tarball
run install -m 0755 /tmp/tarball/usr/bin/kube-outpost /usr/local/bin/kube-outpost
install -d -m 0700 /etc/kube-outpost
install -m 0600 /vmtest/config.toml /etc/kube-outpost/config.toml
install -m 0600 /vmtest/prod.kubeconfig /etc/kube-outpost/prod.kubeconfig
run /usr/local/bin/kube-outpost version
if ! run /usr/local/bin/kube-outpost service install --config /etc/kube-outpost/config.toml; then
  ls -l "$unit" 2>&1 || true
  [ ! -e "$unit" ] || echo "$unit: $(wc -c <"$unit") bytes"
  fail "kube-outpost service install failed"
fi
run ls -l "$unit"
cat "$unit"
grep -qxF 'ExecStart=/usr/local/bin/kube-outpost run --config /etc/kube-outpost/config.toml' "$unit" || fail "$unit: no ExecStart=/usr/local/bin/kube-outpost run --config /etc/kube-outpost/config.toml"
grep -qxF 'Type=notify' "$unit" || fail "$unit: no Type=notify"
run systemctl show -p LoadState,FragmentPath,NeedDaemonReload,UnitFileState,Type,ExecStart kube-outpost
# service install should have told systemd (daemon-reload); say so if not.
if [ "$(systemctl show -p LoadState --value kube-outpost)" != loaded ] || [ "$(systemctl show -p NeedDaemonReload --value kube-outpost)" = yes ]; then
  soft_fail "systemd does not know the unit service install wrote (LoadState=$(systemctl show -p LoadState --value kube-outpost), NeedDaemonReload=$(systemctl show -p NeedDaemonReload --value kube-outpost)): daemon-reload needed"
  run systemctl daemon-reload
fi
[ "$(systemctl show -p FragmentPath --value kube-outpost)" = "$unit" ] || fail "systemd loads kube-outpost.service from $(systemctl show -p FragmentPath --value kube-outpost), not $unit"
echo "after service install: enabled=$(systemctl is-enabled kube-outpost 2>&1 || true) active=$(systemctl is-active kube-outpost 2>&1 || true)"

step "tarball install: kube-outpost service start, status"
run /usr/local/bin/kube-outpost service start
run systemctl show -p Type,ActiveState,SubState,MainPID,StatusText,ExecMainStatus kube-outpost
[ "$(systemctl is-active kube-outpost)" = active ] || fail "after service start: systemctl is-active says $(systemctl is-active kube-outpost)"
exe=$(readlink /proc/"$(systemctl show -p MainPID --value kube-outpost)"/exe)
[ "$exe" = /usr/local/bin/kube-outpost ] || fail "the service runs $exe, not /usr/local/bin/kube-outpost"
if ! curl_one "$url"; then
  warn "$url did not answer right after service start returned"
  wait_curl 30 "$url" || fail "$url never answered"
fi
run curl_pods 20 "$url"
st=0
out=$(/usr/local/bin/kube-outpost service status 2>&1) || st=$?
echo "kube-outpost service status: exit $st: $out"
[ "$st" = 0 ] && [ "$out" = running ] || fail "kube-outpost service status: exit $st, '$out' (want exit 0, 'running')"

step "tarball install: kube-outpost service stop, status"
run /usr/local/bin/kube-outpost service stop
state=$(systemctl is-active kube-outpost 2>&1 || true)
[ "$state" = inactive ] || fail "after service stop: systemctl is-active says $state"
st=0
out=$(/usr/local/bin/kube-outpost service status 2>&1) || st=$?
echo "kube-outpost service status: exit $st: $out"
[ "$st" = 3 ] && [ "$out" = stopped ] || fail "kube-outpost service status: exit $st, '$out' (want exit 3, 'stopped')"
n=$(outpost_rules)
echo "after service stop: $n OUTPOST lines in iptables-save"
[ "$n" -gt 0 ] || fail "service stop deleted the rules (only cleanup should)"

step "tarball install: kube-outpost service uninstall, cleanup"
run /usr/local/bin/kube-outpost service uninstall
[ ! -e "$unit" ] || fail "$unit still there after service uninstall"
run systemctl show -p LoadState,UnitFileState,NeedDaemonReload kube-outpost
load=$(systemctl show -p LoadState --value kube-outpost)
[ "$load" = not-found ] || soft_fail "after service uninstall systemd still has the unit (LoadState=$load): no daemon-reload?"
if [ -e /etc/systemd/system/multi-user.target.wants/kube-outpost.service ]; then
  fail "service uninstall left the unit enabled"
fi
run /usr/local/bin/kube-outpost cleanup
n=$(outpost_rules)
[ "$n" = 0 ] || fail "after cleanup: $n OUTPOST lines left: $(iptables-save | grep OUTPOST)"
echo "after uninstall and cleanup: no unit, no OUTPOST rules"

if [ -s /var/lib/vmtest/soft ]; then
  echo "checks failed: $(head -n1 /var/lib/vmtest/soft)" >/run/vmtest-step
  echo "VMTEST-ERROR: failed checks:"
  cat /var/lib/vmtest/soft
  exit 1
fi
