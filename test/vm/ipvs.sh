# Sourced by run.sh (bash) in the guest of the VM test: the parts of MODE=ipvs.
# run.sh runs each part as `bash /vmtest/run.sh --part NAME` (part_NAME
# below), a process of its own, so that a failing part ends only itself and
# the next one still runs; each ends with "VMTEST-PART: NAME PASS|FAIL ..."
# (vm_test.go reads those, and each part's section of the log).
#
# part_mode:   the .deb with mode = "ipvs": the privileged ExecStartPre loads
#              ip_vs (not loaded before: this part runs first in a fresh
#              boot) and raises arp_ignore/arp_announce, Type=notify READY, the ClusterIP over both pods, the
#              virtual server in /proc/net/ip_vs, the ClusterIP on outpost0,
#              a service without endpoints refused, a restart that keeps the
#              virtual server, an open connection and a request loop; then
#              `kube-outpost cleanup` and `apt-get purge` each remove the
#              virtual servers, outpost0, the OUTPOST-IPVS chains and ipsets.
# part_kernel: the real-kernel tests of internal/proxy/ipvs
#              (/vmtest/ipvs.test, built by vm_test.go with -tags ipvskernel);
#              a skipped test is a failure here.
# part_e2e:    the end-to-end suite of test/e2e (/vmtest/e2e.test, built by
#              vm_test.go with -tags e2e) in ipvs mode: the same scenarios
#              as on the host in iptables mode, with the daemon and the
#              clients in a namespace of this guest and the apiservers and
#              pods of the host's lab (a remote lab: test/lab/remote.go).
#              vm_test.go checks the result of every test.
#
# Lines "VMTEST-INFO: ..." are figures the Go test logs as they come.

# hexip A.B.C.D: as /proc/net/ip_vs prints addresses.
hexip() {
  local IFS=.
  # shellcheck disable=SC2086
  set -- $1
  printf '%02X%02X%02X%02X' "$1" "$2" "$3" "$4"
}

# ipvs_show [counts]: /proc/net/ip_vs decoded, one line per virtual server
# ("TCP 10.96.0.10:80 rr") followed by its destinations
# ("  -> 10.244.1.1:8080 Masq 1"), with the connection counts if asked.
ipvs_show() {
  [ -e /proc/net/ip_vs ] || return 0
  awk -v counts="${1:-}" '
    function hex(s,   n, i) { n = 0; for (i = 1; i <= length(s); i++) n = n * 16 + index("0123456789ABCDEF", toupper(substr(s, i, 1))) - 1; return n }
    function addr(s,   a, p) { split(s, a, ":"); p = a[1]; return hex(substr(p, 1, 2)) "." hex(substr(p, 3, 2)) "." hex(substr(p, 5, 2)) "." hex(substr(p, 7, 2)) ":" hex(a[2]) }
    NR <= 3 { next }
    $1 == "->" { l = "  -> " addr($2) " " $3 " " $4; if (counts != "") l = l " active " $5 " inactive " $6; print l; next }
    { l = $1 " " addr($2) " " $3; for (i = 4; i <= NF; i++) l = l " " $i; print l }
  ' /proc/net/ip_vs
}

# ipvs_entry VIP PORT: the TCP virtual server VIP:PORT and its destinations.
ipvs_entry() {
  ipvs_show | awk -v key="TCP $1:$2 " 'index($0 " ", key) == 1 { on = 1; print; next } /^  ->/ { if (on) print; next } { on = 0 }'
}

ipvs_services() { ipvs_show | grep -c '^[A-Z]' || true; }

# check_programmed: the virtual server of the ClusterIP with the two pods,
# none for the service without endpoints, both ClusterIPs on outpost0.
check_programmed() {
  local entry p n
  entry=$(ipvs_entry "$CLUSTER_IP" "$SVC_PORT")
  [ -n "$entry" ] || fail "no virtual server TCP $CLUSTER_IP:$SVC_PORT in /proc/net/ip_vs:
$(cat /proc/net/ip_vs)"
  case "$(head -n1 <<<"$entry")" in *" rr") ;; *) fail "virtual server $CLUSTER_IP:$SVC_PORT: scheduler is not rr: $(head -n1 <<<"$entry")" ;; esac
  for p in $POD_IPS; do
    grep -qxF "  -> $p:$POD_PORT Masq 1" <<<"$entry" || fail "virtual server $CLUSTER_IP:$SVC_PORT: no real server $p:$POD_PORT (Masq, weight 1):
$entry"
  done
  n=$(grep -c '^  ->' <<<"$entry" || true)
  [ "$n" = "$(wc -w <<<"$POD_IPS")" ] || fail "virtual server $CLUSTER_IP:$SVC_PORT: $n real servers, want $(wc -w <<<"$POD_IPS"):
$entry"
  [ -z "$(ipvs_entry "$EMPTY_CLUSTER_IP" "$SVC_PORT")" ] || fail "a virtual server for the service without endpoints: $(ipvs_entry "$EMPTY_CLUSTER_IP" "$SVC_PORT")"
  grep -q "^TCP  $(hexip "$CLUSTER_IP"):$(printf %04X "$SVC_PORT") " /proc/net/ip_vs || fail "/proc/net/ip_vs: no raw line for $CLUSTER_IP:$SVC_PORT"
  for ip in "$CLUSTER_IP" "$EMPTY_CLUSTER_IP"; do
    ip -o addr show dev outpost0 | grep "inet $ip/32 " >/dev/null || fail "$ip is not on outpost0: $(ip -o addr show dev outpost0)"
  done
}

# check_gone WHAT: nothing of ipvs mode is left.
check_gone() {
  local left=""
  [ "$(ipvs_services)" = 0 ] || left="$left
virtual servers: $(ipvs_show)"
  ! ip link show outpost0 >/dev/null 2>&1 || left="$left
outpost0: $(ip addr show outpost0)"
  ! iptables-save | grep OUTPOST >/dev/null || left="$left
iptables: $(iptables-save | grep OUTPOST)"
  ! ipset list -n | grep '^OUTPOST' >/dev/null || left="$left
ipsets: $(ipset list -n | grep OUTPOST)"
  [ -z "$left" ] || fail "left after $1:$left"
  echo "after $1: no virtual servers, no outpost0, no OUTPOST chains, no OUTPOST ipsets"
}


# http_fd FD: one HTTP/1.1 request on the open connection FD; prints the body.
http_fd() {
  local fd=$1 line len=0 body=""
  printf 'GET / HTTP/1.1\r\nHost: vmtest\r\n\r\n' >&"$fd"
  IFS= read -r -t 5 line <&"$fd" || return 1
  case "$line" in "HTTP/1.1 200"*) ;; *) echo "status: $line" >&2; return 1 ;; esac
  while IFS= read -r -t 5 line <&"$fd"; do
    line=${line%$'\r'}
    [ -n "$line" ] || break
    case "${line,,}" in content-length:*) len=${line#*: } ;; esac
  done
  [ "$len" -gt 0 ] || return 1
  IFS= read -r -N "$len" -t 5 body <&"$fd" || return 1
  echo "${body%$'\n'}"
}

part_mode() {
  local url="http://$CLUSTER_IP:$SVC_PORT/" empty="http://$EMPTY_CLUSTER_IP:$SVC_PORT/" t0 ms pid rc

  step "ipvs mode: install the .deb offline"
  deb=$(ls /vmtest/kube-outpost_*.deb)
  run apt-get install -y -q -o Acquire::Retries=0 "$deb"
  for tool in ipset modprobe; do
    command -v "$tool" >/dev/null || fail "$tool is missing: the .deb recommends it and the image should have it"
  done

  step "ipvs mode: configure"
  install -m 0644 /vmtest/config-ipvs.toml /etc/kube-outpost/config.toml
  install -m 0600 /vmtest/prod.kubeconfig /etc/kube-outpost/prod.kubeconfig
  run cat /etc/kube-outpost/config.toml
  run kube-outpost check-config --config /etc/kube-outpost/config.toml
  echo "before start: net.ipv4.conf.all.arp_ignore = $(cat /proc/sys/net/ipv4/conf/all/arp_ignore)," \
    "arp_announce = $(cat /proc/sys/net/ipv4/conf/all/arp_announce)"
  if [ -e /proc/net/ip_vs ]; then
    warn "ip_vs is loaded before the unit starts: its ExecStartPre is not what loads it here"
  else
    echo "before start: ip_vs not loaded ($(lsmod | grep -c '^ip_vs' || true) ip_vs modules)"
  fi

  step "ipvs mode: systemctl start"
  t0=$(date +%s%N)
  run systemctl start kube-outpost
  ms=$(ms_since "$t0")
  echo "VMTEST-INFO: ipvs mode: systemctl start returned in ${ms} ms"
  run systemctl show -p Type,StatusText,ExecMainStatus,ActiveState,SubState,MainPID kube-outpost
  [ "$(systemctl show -p Type --value kube-outpost)" = notify ] || fail "Type is not notify"
  [ "$(systemctl is-active kube-outpost)" = active ] || fail "not active after start"
  [ "$(systemctl show -p SubState --value kube-outpost)" = running ] || fail "SubState is not running"
  run lsmod | grep -E '^(ip_vs|dummy|ip_set|xt_ipvs|xt_set)' || true
  for m in ip_vs ip_vs_rr; do
    lsmod | grep "^$m " >/dev/null || fail "module $m is not loaded after start (the unit's privileged ExecStartPre should load it)"
  done
  for s in conntrack=1 conn_reuse_mode=0 expire_nodest_conn=1 expire_quiescent_template=1; do
    got=$(cat "/proc/sys/net/ipv4/vs/${s%=*}")
    echo "net.ipv4.vs.${s%=*} = $got"
    [ "$got" = "${s#*=}" ] || fail "net.ipv4.vs.${s%=*} is $got, want ${s#*=}"
  done
  # The VIPs on outpost0 must not be announced on the LAN: the ExecStartPre
  # raises these to at least kube-proxy's strictARP values.
  for s in arp_ignore=1 arp_announce=2; do
    got=$(cat "/proc/sys/net/ipv4/conf/all/${s%=*}")
    echo "net.ipv4.conf.all.${s%=*} = $got"
    [ "$got" -ge "${s#*=}" ] || fail "net.ipv4.conf.all.${s%=*} is $got after start, want at least ${s#*=} (VIPs on outpost0 would answer ARP)"
  done
  # Type=notify: READY comes after the first sync, so the ClusterIP answers
  # at once.
  if ! curl_one "$url"; then
    soft_fail "$url did not answer right after systemctl start returned"
    wait_curl 30 "$url" || fail "$url never answered"
  fi
  t0=$(date +%s%N)
  run curl_pods 40 "$url"
  echo "VMTEST-INFO: ipvs mode: 40 requests to the ClusterIP in $(ms_since "$t0") ms"

  step "ipvs mode: the kernel's state"
  run cat /proc/net/ip_vs
  echo "decoded:"
  ipvs_show counts
  check_programmed
  run ip -d addr show outpost0
  ip -d link show outpost0 | grep dummy >/dev/null || fail "outpost0 is not a dummy interface"
  run ip route show table local dev outpost0
  echo "+ iptables-save | grep OUTPOST"
  iptables-save | grep OUTPOST
  run ipset list -n
  iptables-save | grep '^:OUTPOST-IPVS-' >/dev/null || fail "no OUTPOST-IPVS chains"
  ! iptables-save | grep '^:OUTPOST-SERVICES' >/dev/null || fail "iptables mode's chains in ipvs mode"
  ipset list -n | grep '^OUTPOST-IPVS-' >/dev/null || fail "no OUTPOST-IPVS ipsets"

  step "ipvs mode: a service without endpoints is refused"
  rc=0
  t0=$(date +%s%N)
  curl -sS -v --max-time 5 -o /dev/null "$empty" 2>/run/vmtest-curl.err || rc=$?
  ms=$(ms_since "$t0")
  echo "curl -v $empty: exit $rc in ${ms} ms:"
  cat /run/vmtest-curl.err
  echo "VMTEST-INFO: ipvs mode: the service without endpoints refused in ${ms} ms (curl exit $rc)"
  [ "$rc" = 7 ] || fail "curl $empty: exit $rc, want 7 (connection refused)"
  grep -qi refused /run/vmtest-curl.err || fail "curl $empty: not refused: $(cat /run/vmtest-curl.err)"
  [ "$ms" -lt 2000 ] || fail "curl $empty took ${ms} ms to be refused"

  step "ipvs mode: systemctl restart keeps the virtual server and the traffic"
  before=$(ipvs_show)
  pid=$(systemctl show -p MainPID --value kube-outpost)
  # An open connection, across the restart.
  exec 3<>"/dev/tcp/$CLUSTER_IP/$SVC_PORT"
  first=$(http_fd 3) || fail "no answer on a connection to $CLUSTER_IP:$SVC_PORT"
  echo "open connection: answered by $first"
  # One request every 0.1 s, each on a new connection, during the restart.
  loop_start 0.1
  for ((i = 0; i < 100; i++)); do
    grep -q '^ok' /run/vmtest-loop.log 2>/dev/null && break
    sleep 0.1
  done
  t0=$(date +%s%N)
  rc=0
  run systemctl restart kube-outpost || rc=$?
  echo "VMTEST-INFO: ipvs mode: systemctl restart returned in $(ms_since "$t0") ms"
  sleep 1
  loop_stop
  [ "$rc" = 0 ] || fail "systemctl restart exited $rc"
  [ "$(systemctl is-active kube-outpost)" = active ] || fail "not active after restart"
  [ "$(systemctl show -p MainPID --value kube-outpost)" != "$pid" ] || fail "restart kept MainPID $pid"
  ok=$(grep -c '^ok' /run/vmtest-loop.log || true)
  failed=$(grep -c '^FAILED' /run/vmtest-loop.log || true)
  echo "VMTEST-INFO: ipvs mode: requests during the restart: $ok answered, $failed failed"
  if [ "$failed" != 0 ]; then
    grep '^FAILED' /run/vmtest-loop.log | head -n 10
    soft_fail "$failed of $((ok + failed)) requests to $url failed during the restart"
  fi
  [ "$ok" -gt 0 ] || fail "no request answered during the restart"
  if again=$(http_fd 3); then
    echo "open connection after the restart: answered by $again"
    [ "$again" = "$first" ] || soft_fail "the open connection moved from $first to $again"
  else
    soft_fail "the connection opened before the restart does not answer after it"
  fi
  exec 3<&- 3>&-
  after=$(ipvs_show)
  if [ "$after" != "$before" ]; then
    soft_fail "the restart changed IPVS: before:
$before
after:
$after"
  fi
  check_programmed
  run curl_pods 20 "$url"

  step "ipvs mode: journal"
  journalctl -u kube-outpost --no-pager -o short-monotonic | tail -n 40

  step "ipvs mode: systemd-analyze security"
  echo "+ systemd-analyze security kube-outpost.service | tail -1"
  line=$(systemd-analyze security --no-pager kube-outpost.service 2>&1 | tail -n 1)
  echo "$line"
  echo "VMTEST-INFO: ipvs mode: systemd-analyze security: $line"

  step "ipvs mode: systemctl stop keeps everything; kube-outpost cleanup removes it"
  run systemctl stop kube-outpost
  check_programmed
  curl_one "$url" || fail "$url does not answer after systemctl stop (only cleanup should stop it)"
  run kube-outpost cleanup
  check_gone "kube-outpost cleanup"
  rc=0
  curl -sS --max-time 1 -o /dev/null "$url" 2>&1 || rc=$?
  [ "$rc" != 0 ] || fail "$url still answers after cleanup"

  step "ipvs mode: apt-get purge removes everything"
  run systemctl start kube-outpost
  wait_curl 30 "$url" || fail "$url does not answer after starting again"
  check_programmed
  run apt-get purge -y -q kube-outpost
  check_gone "apt-get purge"
  [ ! -e /etc/kube-outpost/config.toml ] || fail "/etc/kube-outpost/config.toml still there after purge"
}

part_kernel() {
  local rc=0 log=/run/vmtest-ipvs.test.log
  step "ipvs kernel tests: ipvs.test -test.run '^TestKernel'"
  echo "ip_vs: $([ -e /proc/net/ip_vs ] && echo loaded || echo 'not loaded')"
  run ipset version
  cd /tmp
  echo "+ /vmtest/ipvs.test -test.v -test.count=1 -test.timeout=5m -test.run '^TestKernel'"
  timeout 330 /vmtest/ipvs.test -test.v -test.count=1 -test.timeout=5m -test.run '^TestKernel' 2>&1 | tee "$log" || rc=$?
  cd /vmtest
  echo "ipvs.test exited $rc"
  [ "$rc" = 0 ] || fail "ipvs.test exited $rc"
  # This kernel has ip_vs and the image has every tool: nothing may skip.
  if grep -E '^\s*--- SKIP' "$log"; then
    fail "ipvs.test skipped tests"
  fi
  [ "$(tail -n1 "$log")" = PASS ] || fail "ipvs.test did not end with PASS"
  grep -q -- '--- PASS: TestKernel' "$log" || fail "ipvs.test ran no TestKernel test"
}

part_e2e() {
  local rc=0 log=/run/vmtest-e2e.test.log
  step "e2e suite in ipvs mode: e2e.test against the host's lab"
  run cat /vmtest/remote.json | head -c 200
  echo
  mkdir -p /tmp/e2e
  cd /tmp/e2e
  echo "+ KO_E2E_MODE=ipvs KO_E2E_REMOTE=/vmtest/remote.json KO_E2E_BINARY=/vmtest/kube-outpost /vmtest/e2e.test -test.v -test.count=1 -test.timeout=14m $E2E_RUN"
  # shellcheck disable=SC2086
  KO_E2E_MODE=ipvs KO_E2E_REMOTE=/vmtest/remote.json KO_E2E_BINARY=/vmtest/kube-outpost \
    timeout 870 /vmtest/e2e.test -test.v -test.count=1 -test.timeout=14m $E2E_RUN 2>&1 | tee "$log" || rc=$?
  cd /vmtest
  echo "e2e.test exited $rc"
  [ "$rc" = 0 ] || fail "e2e.test exited $rc"
}

# theirs: what of the ruleset is not kube-outpost's, to compare before and
# after what we do: iptables-nft-save and ip6tables-nft-save (the backend
# Docker, ufw and we write with) without their comment lines, the chains'
# counters and every line of ours (an OUTPOST chain or a kube-outpost
# comment); and `nft -s list ruleset` (stateless: no counters) without the
# tables of iptables-nft, which the lines above show: firewalld's tables.
theirs() {
  local s
  for s in iptables-nft-save ip6tables-nft-save; do
    echo "# $s"
    "$s" | grep -v '^#' | sed -E 's/ \[[0-9]+:[0-9]+\]$//' | grep -v -e OUTPOST -e kube-outpost || true
  done
  echo "# nft -s list ruleset, without the tables of iptables-nft"
  nft -s list ruleset | awk '
    /^table (ip|ip6) (filter|nat|mangle|raw|security) \{/ { skip = 1 }
    !skip { print }
    skip && /^\}/ { skip = 0 }'
}

# same_as BASELINE WHAT: the rules of others must be BASELINE (theirs) after
# WHAT; a soft failure with the difference if not.
same_as() {
  theirs >/run/vmtest-theirs.now
  if cmp -s "$1" /run/vmtest-theirs.now; then
    echo "the rules of others are byte-identical after $2 ($(wc -l <"$1") lines)"
    return 0
  fi
  soft_fail "the rules of others changed after $2"
  diff -u "$1" /run/vmtest-theirs.now | head -n 60 || true
}

# probe_loop URL LOG: a request to URL every 0.1 s, each logged as "ok NANOS"
# or "fail NANOS", until /run/vmtest-probe-stop exists; in the background.
probe_loop() {
  (
    set +eE
    trap - ERR
    while [ ! -e /run/vmtest-probe-stop ]; do
      if curl -sS --max-time 1 -o /dev/null "$1" 2>/dev/null; then r=ok; else r=fail; fi
      echo "$r $(date +%s%N)"
      sleep 0.1
    done
  ) >"$2" &
}

# outages LOG: each run of two or more failed requests in a probe_loop log
# (one alone is a request this busy guest was too slow for), as "FROM TO"
# (ns): from the last answer before it to the next answer (-1: none came).
outages() {
  awk '$1 == "ok" { if (n > 1) print from, $2; n = 0; last = $2; next }
    !n { from = last ? last : $2 }
    { n++ }
    END { if (n > 1) print from, -1 }' "$1"
}

# longest OUTAGES: the longest, in ms; -1 if one did not end.
longest() {
  awk '$2 < 0 { bad = 1 } { d = ($2 - $1) / 1e6; if (d > max) max = d } END { printf "%d\n", bad ? -1 : max }' "$1"
}

# through_reload WHAT CMD...: runs CMD (a reload of theirs) while requests go
# every 0.1 s to the ClusterIP and, as a control, straight to a pod. A
# firewall's reload may itself drop the host's traffic for a while (ufw's
# does, with the replies of every connection, for as long as its rules are
# half loaded), which nothing of ours can prevent; what is ours is how much
# longer the ClusterIP stays dark than the pod: from the pod's answering
# again (or the ClusterIP's last answer, if later) to the ClusterIP's. That
# must be at most 5 s, and both must answer after CMD. Prints the figures
# as VMTEST-INFO.
through_reload() {
  local what=$1 repairs0 repairs1 t0 took cip pod ours
  shift
  local ip=${POD_IPS%% *}
  repairs0=$(metric kube_outpost_sync_proxy_rules_repairs_total)
  since=$(date '+%Y-%m-%d %H:%M:%S')
  rm -f /run/vmtest-probe-stop
  probe_loop "$url" /run/vmtest-probe-cip.log
  probe_loop "http://$ip:$POD_PORT/" /run/vmtest-probe-pod.log
  sleep 0.5
  t0=$(date +%s%N)
  run "$@" || soft_fail "$what ($mode_now mode): $* failed"
  took=$(ms_since "$t0")
  wait_curl 10 "$url" || soft_fail "$what ($mode_now mode): $url does not answer 10 s after it"
  sleep 0.3
  touch /run/vmtest-probe-stop
  wait
  repairs1=$(metric kube_outpost_sync_proxy_rules_repairs_total)
  journalctl -u kube-outpost --no-pager -o short-monotonic --since "$since" | grep -E 'behind our back|sync failed|level=(WARN|ERROR)' | cut -c1-400 || true
  outages /run/vmtest-probe-cip.log >/run/vmtest-outages-cip
  outages /run/vmtest-probe-pod.log >/run/vmtest-outages-pod
  cip=$(longest /run/vmtest-outages-cip)
  pod=$(longest /run/vmtest-outages-pod)
  # For each outage of the ClusterIP: from the end of the pod's last outage
  # that ended within it (or its start) to its end.
  # A pod outage that lasts past the ClusterIP's end leaves nothing of it
  # ours (ufw's reload darkened both for 5 s, the pod 14 ms longer).
  ours=$(awk 'FILENAME == ARGV[1] { beg[++n] = $1; end[n] = $2; next }
    $2 < 0 { bad = 1; next }
    { r = $1; for (i = 1; i <= n; i++) { if (beg[i] <= $2 && (end[i] < 0 || end[i] >= $2)) r = $2; else if (end[i] > r && end[i] <= $2) r = end[i] }
      d = ($2 - r) / 1e6; if (d > max) max = d }
    END { printf "%d\n", bad ? -1 : max }' /run/vmtest-outages-pod /run/vmtest-outages-cip)
  echo "VMTEST-INFO: coexist: $mode_now mode: $what ($took ms): ClusterIP dark ${cip} ms, of which ${ours} ms after the pod answered again (pod straight: dark ${pod} ms); $(grep -c fail /run/vmtest-probe-cip.log || true) of $(wc -l </run/vmtest-probe-cip.log) requests to the ClusterIP failed; repairs +$((repairs1 - repairs0))"
  [ "$ours" -ge 0 ] && [ "$ours" -le 5000 ] || soft_fail "$what ($mode_now mode): the ClusterIP did not answer again within 5 s of the pod ($ours ms; -1: not at the end)"
}

# jump_gone: the jump that takes a local client's connection through our
# nat rules (iptables mode: the DNAT in OUTPUT; ipvs mode: the masquerade
# in POSTROUTING) deleted alone, our chains left as they are, as a flush
# between a full sync's listing of the hooks and its restore leaves them
# (firewalld 1.3's reload flushes several times). Without it the ClusterIP
# is dark for good (ipvs mode: the connection leaves from the VIP and no
# reply comes back): the probe must find it and a repair put it back. The
# time to that is logged; it must be under 30 s.
jump_gone() {
  local chain=OUTPUT target=OUTPOST-SERVICES spec repairs0 t0 ms
  if [ "$mode_now" = ipvs ]; then
    chain=POSTROUTING target=OUTPOST-IPVS-POSTROUTING
  fi
  spec=$(iptables -t nat -S "$chain" | grep -m1 -- "-j $target\$" | sed "s/^-A $chain //")
  [ -n "$spec" ] || { soft_fail "jump_gone ($mode_now mode): no jump from nat $chain to $target"; return 0; }
  repairs0=$(metric kube_outpost_sync_proxy_rules_repairs_total)
  t0=$(date +%s%N)
  eval "iptables -t nat -D $chain $spec"
  if wait_curl 30 "$url"; then
    ms=$(ms_since "$t0")
    echo "VMTEST-INFO: coexist: $mode_now mode: the jump from nat $chain to $target deleted alone: answered again after $ms ms; repairs +$(($(metric kube_outpost_sync_proxy_rules_repairs_total) - repairs0))"
  else
    soft_fail "jump_gone ($mode_now mode): $url does not answer 30 s after the jump from nat $chain to $target was deleted"
  fi
  iptables -t nat -S "$chain" | grep -q -- "-j $target\$" || soft_fail "jump_gone ($mode_now mode): the jump from nat $chain to $target is not back"
}

# use_mode iptables|ipvs: the config of that mode, and a restart into it.
use_mode() {
  local cfg=/vmtest/config.toml
  [ "$1" = iptables ] || cfg=/vmtest/config-ipvs.toml
  install -m 0644 "$cfg" /etc/kube-outpost/config.toml
  run systemctl restart kube-outpost
  wait_curl 30 "$url" || fail "$url does not answer in $1 mode"
  mode_now=$1
  if [ "$1" = ipvs ]; then
    ! iptables-save | grep '^:OUTPOST-SERVICES' >/dev/null || fail "iptables mode's chains left after the switch to ipvs mode"
  fi
}

# churn: a service made, its endpoint replaced, and deleted, from the lab's
# apiserver, each seen through the ClusterIP.
churn() {
  local out ip ms
  out=$(host_step coexist-create) || fail "host step coexist-create failed"
  eval "$out"
  ip=$COEXIST_IP
  ms=$(only_from 30 "http://$ip:$SVC_PORT/" "$pod1") || fail "service coexist is not served by $pod1"
  host_step coexist-change >/dev/null || fail "host step coexist-change failed"
  ms=$(only_from 30 "http://$ip:$SVC_PORT/" "$pod2") || fail "service coexist did not move to $pod2"
  host_step coexist-delete >/dev/null || fail "host step coexist-delete failed"
  for ((i = 0; i < 60; i++)); do
    curl -sS --max-time 1 -o /dev/null "http://$ip:$SVC_PORT/" 2>/dev/null || break
    sleep 0.5
  done
  [ "$i" -lt 60 ] || fail "service coexist still answers 30 s after its deletion"
  echo "churn: service coexist ($ip) created on $pod1, moved to $pod2, deleted"
}

# coexist_round NAME IPTABLES_RELOADS IPVS_RELOADS: with the rules of NAME in
# place, our churn, a reload, a switch to ipvs mode, cleanup and a start in
# iptables mode leave theirs byte-identical; through each of their reloads
# (";"-separated commands) in each mode, the ClusterIP answers (through_reload).
coexist_round() {
  local name=$1 r reloads
  step "coexist: $name: our churn and reload leave their rules alone (iptables mode)"
  theirs >/run/vmtest-theirs.base
  echo "their rules: $(grep -c . /run/vmtest-theirs.base) lines"
  churn
  same_as /run/vmtest-theirs.base "our churn"
  run systemctl reload kube-outpost
  sleep 2
  same_as /run/vmtest-theirs.base "systemctl reload kube-outpost"

  step "coexist: $name: their reloads (iptables mode)"
  IFS=';' read -ra reloads <<<"$2"
  for r in "${reloads[@]}"; do
    # shellcheck disable=SC2086
    through_reload "$r" $r
  done
  jump_gone
  # Their own reloads may rewrite their rules: this is the new baseline.
  theirs >/run/vmtest-theirs.base

  step "coexist: $name: a switch to ipvs mode, their reloads, cleanup"
  use_mode ipvs
  same_as /run/vmtest-theirs.base "the switch to ipvs mode"
  IFS=';' read -ra reloads <<<"$3"
  for r in "${reloads[@]}"; do
    # shellcheck disable=SC2086
    through_reload "$r" $r
  done
  jump_gone
  theirs >/run/vmtest-theirs.base
  run systemctl stop kube-outpost
  run kube-outpost cleanup
  same_as /run/vmtest-theirs.base "kube-outpost cleanup (ipvs mode)"

  step "coexist: $name: iptables mode again, cleanup"
  use_mode iptables
  same_as /run/vmtest-theirs.base "the start in iptables mode"
  run systemctl stop kube-outpost
  run kube-outpost cleanup
  same_as /run/vmtest-theirs.base "kube-outpost cleanup (iptables mode)"
  run systemctl start kube-outpost
  wait_curl 30 "$url" || fail "$url does not answer in iptables mode"
}

# part_coexist: kube-outpost beside Docker, ufw and firewalld (issue 13,
# guarantee 9), in the image but not started at boot.
part_coexist() {
  local url="http://$CLUSTER_IP:$SVC_PORT/" t0 mode_now=iptables
  set -- $EXPECT_PODS
  local pod1=$1 pod2=$2

  step "coexist: the .deb in iptables mode"
  deb=$(ls /vmtest/kube-outpost_*.deb)
  run apt-get install -y -q -o Acquire::Retries=0 "$deb"
  install -m 0644 /vmtest/config.toml /etc/kube-outpost/config.toml
  install -m 0600 /vmtest/prod.kubeconfig /etc/kube-outpost/prod.kubeconfig
  run systemctl start kube-outpost
  wait_curl 30 "$url" || fail "$url does not answer"

  step "coexist: start Docker and ufw"
  t0=$(date +%s%N)
  run systemctl start docker
  echo "VMTEST-INFO: coexist: systemctl start docker: $(ms_since "$t0") ms"
  run ufw --force enable
  run ufw status verbose
  iptables-save | grep -E '^:(DOCKER|ufw)' | head -n 40
  iptables-save | grep -q '^:DOCKER-USER' || fail "no DOCKER-USER chain after Docker's start"
  iptables-save | grep -q '^:ufw-user-input' || fail "no ufw chains after ufw enable"
  wait_curl 10 "$url" || fail "$url does not answer beside Docker and ufw"
  # Docker's restart leaves our rules alone in either mode (measured): once.
  coexist_round "Docker and ufw" "ufw reload;systemctl restart docker" "ufw reload"

  step "coexist: ufw off, firewalld (nftables backend) on"
  run ufw --force disable
  t0=$(date +%s%N)
  run systemctl start firewalld
  echo "VMTEST-INFO: coexist: systemctl start firewalld: $(ms_since "$t0") ms"
  run grep -x FirewallBackend=nftables /etc/firewalld/firewalld.conf
  run firewall-cmd --state
  nft list tables
  nft list tables | grep -q 'inet firewalld' || fail "no nftables table of firewalld"
  wait_curl 10 "$url" || fail "$url does not answer beside Docker and firewalld"
  coexist_round "Docker and firewalld" "firewall-cmd --reload" "firewall-cmd --reload"

  step "coexist: nft flush ruleset"
  through_reload "nft flush ruleset" nft flush ruleset

  step "coexist: stop them all"
  run systemctl stop kube-outpost firewalld docker docker.socket containerd
  run kube-outpost cleanup
  run apt-get purge -y -q kube-outpost
  nft flush ruleset
}
