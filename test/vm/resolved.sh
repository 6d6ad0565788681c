# Sourced by run.sh (bash) in the guest of the VM test, MODE=resolved
# (TestResolvedInVM): kube-outpost's DNS server registered with
# systemd-resolved.
#
# systemd-resolved is installed from the image's /opt/vmtest-debs, and the
# guest's link gets the test's upstream ($UPSTREAM_DNS, on the host) as its
# only DNS server: the host's resolver before kube-outpost, which answers
# $OTHER_NAME. Then the .deb with [dns]: the service's name through
# resolved (getent, curl, the reverse name), other names still upstream,
# kube-outpost asked nothing else (no REFUSED); resolved restarted;
# lookups while kube-outpost restarts (figures: VMTEST-INFO); stopped, the
# registration stays; cleanup, and purge after a new start, each leave
# resolved as it was before kube-outpost (resolved_state).

name_ok() { getent hosts "$1" | awk -v want="$2" '$1 == want { ok = 1 } END { exit !ok }'; }

# wait_for SECONDS WHAT COMMAND...: until COMMAND succeeds.
wait_for() {
  local deadline=$(($(date +%s) + $1)) what=$2
  shift 2
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || { echo "$what: not within the time allowed" >&2; return 1; }
    sleep 0.2
  done
}

# resolved_state: what resolved holds per link, and its drop-ins; ours
# included while it exists.
resolved_state() {
  resolvectl dns
  resolvectl domain
  resolvectl default-route
  ls -A /run/systemd/resolved.conf.d /etc/systemd/resolved.conf.d 2>&1 || true
  ip -br link | awk '{ print $1 }'
}

# as_before WHAT: after WHAT, no outpost-dns, resolved holds what it held
# before kube-outpost ($before), and the other name still resolves.
as_before() {
  local after
  ! ip link show outpost-dns >/dev/null 2>&1 || fail "outpost-dns left after $1"
  after=$(resolved_state)
  [ "$after" = "$before" ] || fail "resolved after $1 differs from before kube-outpost:
$(diff <(echo "$before") <(echo "$after") || true)"
  echo "resolved after $1: as before kube-outpost"
  name_ok "$OTHER_NAME" "$OTHER_ADDR" || fail "$OTHER_NAME does not resolve after $1"
}

registered() { kube-outpost status 2>/dev/null | grep -q "systemd-resolved: registered on link outpost-dns"; }
held() { resolvectl domain outpost-dns 2>/dev/null | grep -q '~prod.internal'; }

resolved_main() {
  local svc="web.vmtest.svc.prod.internal" link t0

  step "resolved: install systemd-resolved (from the image, offline)"
  run apt-get install -y -q -o Acquire::Retries=0 /opt/vmtest-debs/*.deb
  # resolved started by the package's script before the bus read the
  # package's policy holds no bus name: resolvectl then times out
  # ("Failed to get global data"), and so would networkd and we.
  run systemctl reload dbus
  run systemctl restart systemd-resolved
  wait_for 30 "resolved on the bus" resolvectl status
  run systemctl is-active systemd-resolved
  run ls -l /etc/resolv.conf
  grep -q '^nameserver 127.0.0.53' /etc/resolv.conf || fail "/etc/resolv.conf does not point at resolved's stub: $(cat /etc/resolv.conf)"

  step "resolved: the link's DNS server is the upstream on the host ($UPSTREAM_DNS)"
  link=$(ip route show default | awk '{ print $5; exit }')
  mkdir -p /etc/systemd/network/10-dhcp.network.d
  printf '[Network]\nDNS=%s\n\n[DHCPv4]\nUseDNS=no\n' "$UPSTREAM_DNS" >/etc/systemd/network/10-dhcp.network.d/upstream.conf
  # A restart reads the drop-in for certain, and hands the link's DNS to
  # resolved, which was installed after networkd started.
  run systemctl restart systemd-networkd
  wait_for 30 "resolvectl dns $link: $UPSTREAM_DNS" sh -c "resolvectl dns $link | grep -qF '$UPSTREAM_DNS'" ||
    { resolvectl status || true; networkctl status "$link" || true; return 1; }
  wait_for 30 "$OTHER_NAME through the upstream" name_ok "$OTHER_NAME" "$OTHER_ADDR"
  run getent hosts "$OTHER_NAME"
  # Global: as_before compares with it.
  before=$(resolved_state)
  echo "resolved before kube-outpost:"
  echo "$before"

  step "resolved: kube-outpost with [dns]"
  run apt-get install -y -q -o Acquire::Retries=0 /vmtest/kube-outpost_*.deb
  install -m 0600 /vmtest/prod.kubeconfig /etc/kube-outpost/prod.kubeconfig
  # [dns] alone: listen 127.0.0.153:53, resolved = "auto".
  { sed '/^\[\[clusters\]\]/,$d' /vmtest/config.toml; echo '[dns]'; echo; sed -n '/^\[\[clusters\]\]/,$p' /vmtest/config.toml; } >/etc/kube-outpost/config.toml
  run cat /etc/kube-outpost/config.toml
  run kube-outpost check-config --config /etc/kube-outpost/config.toml
  t0=$(date +%s%N)
  run systemctl start kube-outpost
  wait_for 30 "kube-outpost status: registered" registered || { kube-outpost status || true; journalctl -u kube-outpost --no-pager | tail -n 30; fail "not registered"; }
  echo "VMTEST-INFO: resolved: registered $(ms_since "$t0") ms after systemctl start"
  run resolvectl status outpost-dns
  run ip addr show outpost-dns
  resolvectl dns outpost-dns | grep -q '127.0.0.153' || fail "resolvectl dns outpost-dns: $(resolvectl dns outpost-dns)"
  resolvectl domain outpost-dns | grep -q '~95.10.in-addr.arpa' || fail "resolvectl domain outpost-dns: $(resolvectl domain outpost-dns)"
  resolvectl default-route outpost-dns | grep -q ': no$' || fail "resolvectl default-route outpost-dns: $(resolvectl default-route outpost-dns)"
  kube-outpost status | grep 'systemd-resolved'

  step "resolved: the service by name, through resolved"
  t0=$(date +%s%N)
  wait_for 60 "getent hosts $svc" name_ok "$svc" "$CLUSTER_IP" || { run resolvectl query "$svc" || true; fail "$svc does not resolve to $CLUSTER_IP"; }
  echo "VMTEST-INFO: resolved: $svc resolved $(ms_since "$t0") ms after the registration"
  run getent hosts "$svc"
  run getent ahostsv4 "$svc"
  run curl_pods 10 "http://$svc:$SVC_PORT/"
  # The reverse name goes to kube-outpost too (~95.10.in-addr.arpa).
  getent hosts "$CLUSTER_IP" | grep -q "$svc" || fail "getent hosts $CLUSTER_IP: '$(getent hosts "$CLUSTER_IP" || true)', want $svc"
  run getent hosts "$CLUSTER_IP"

  step "resolved: other names go where they went before"
  eval "$(host_step upstream-queries)"
  local other_before=$UPSTREAM_OTHER
  # resolved caches for the TTL (1 s): ask past it.
  sleep 1.5
  run getent hosts "$OTHER_NAME"
  name_ok "$OTHER_NAME" "$OTHER_ADDR" || fail "$OTHER_NAME no longer resolves to $OTHER_ADDR"
  eval "$(host_step upstream-queries)"
  [ "$UPSTREAM_OTHER" -gt "$other_before" ] || fail "the upstream was not asked $OTHER_NAME ($other_before then $UPSTREAM_OTHER queries)"
  [ "$UPSTREAM_OURS" = 0 ] || fail "the upstream was asked $UPSTREAM_OURS names of kube-outpost's zones"
  # Nothing outside the zones reached kube-outpost: it would have REFUSED it.
  # (Its line of answers by rcode: the cluster table has a REFUSED column.)
  ! kube-outpost status | grep 'queries answered' | grep -q 'REFUSED' || fail "kube-outpost refused queries: names outside its zones reached it: $(kube-outpost status | grep 'queries answered')"
  kube-outpost status | grep 'queries answered'
  getent hosts nosuch.vmtest.example && fail "nosuch.vmtest.example resolved" || true

  step "resolved: systemd-resolved restarts"
  t0=$(date +%s%N)
  run systemctl restart systemd-resolved
  wait_for 60 "the registration after resolved's restart" held || fail "resolved holds no registration for outpost-dns after its restart: $(resolvectl domain)"
  wait_for 30 "getent hosts $svc after resolved's restart" name_ok "$svc" "$CLUSTER_IP" || fail "$svc does not resolve after resolved's restart"
  echo "VMTEST-INFO: resolved: names resolve again $(ms_since "$t0") ms after systemctl restart systemd-resolved"
  name_ok "$OTHER_NAME" "$OTHER_ADDR" || fail "$OTHER_NAME does not resolve after resolved's restart"

  step "resolved: lookups while kube-outpost restarts"
  rm -f /run/vmtest-lookups.stop
  (
    set +eE
    trap - ERR
    while [ ! -e /run/vmtest-lookups.stop ]; do
      s=$(date +%s%N)
      if name_ok "$svc" "$CLUSTER_IP"; then r=ok; else r=FAILED; fi
      echo "$r $(( ($(date +%s%N) - s) / 1000000 )) $(cut -d' ' -f1 /proc/uptime)"
      sleep 0.1
    done
  ) >/run/vmtest-lookups.log 2>&1 &
  local lookups=$!
  sleep 2
  t0=$(date +%s%N)
  run systemctl restart kube-outpost
  echo "systemctl restart returned after $(ms_since "$t0") ms"
  sleep 5
  touch /run/vmtest-lookups.stop
  wait "$lookups" || true
  local n failed slowest
  n=$(wc -l </run/vmtest-lookups.log)
  failed=$(grep -c '^FAILED' /run/vmtest-lookups.log || true)
  slowest=$(awk '{ if ($2 > m) m = $2 } END { print m + 0 }' /run/vmtest-lookups.log)
  echo "VMTEST-INFO: resolved: during systemctl restart kube-outpost: $n lookups of $svc, $failed failed, the slowest took $slowest ms"
  grep '^FAILED' /run/vmtest-lookups.log | head -n 5 || true
  registered || fail "not registered after kube-outpost's restart"
  name_ok "$svc" "$CLUSTER_IP" || fail "$svc does not resolve after kube-outpost's restart"

  step "resolved: kube-outpost stopped: the registration stays"
  run systemctl stop kube-outpost
  held || fail "the registration went with the daemon: $(resolvectl domain)"
  ip link show outpost-dns >/dev/null || fail "outpost-dns went with the daemon"
  sleep 1.5
  name_ok "$OTHER_NAME" "$OTHER_ADDR" || fail "$OTHER_NAME does not resolve with kube-outpost stopped"
  if getent hosts "$svc"; then echo "($svc still answered from resolved's cache)"; else echo "$svc: no answer while kube-outpost is stopped, as documented"; fi

  step "resolved: kube-outpost cleanup leaves resolved as it was"
  run kube-outpost cleanup
  as_before "kube-outpost cleanup"

  step "resolved: apt-get purge leaves resolved as it was"
  run systemctl start kube-outpost
  wait_for 30 "registered again" registered || fail "not registered after start"
  held || fail "resolved holds no registration after start"
  run apt-get purge -y -q kube-outpost
  as_before "apt-get purge"
  eval "$(host_step upstream-queries)"
  [ "$UPSTREAM_OURS" = 0 ] || fail "the upstream was asked $UPSTREAM_OURS names of kube-outpost's zones"
  echo "upstream: $UPSTREAM_OTHER queries for $OTHER_NAME, none for kube-outpost's zones"
}
