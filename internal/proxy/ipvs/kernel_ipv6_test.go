//go:build ipvskernel && linux

package ipvs

// Real-kernel tests of IPv6: an IPv6 Proxier alone, and one next to an IPv4
// Proxier in the same namespace over one Kernel, as the daemon runs them
// for dual-stack clusters (proxy.Families). Like the others, each builds
// its own namespaces (newDualTopo) and runs in the VM of test/vm.

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

const (
	vip6Web      = "fd00:96::10" // TCP 80 and UDP 53
	vip6Empty    = "fd00:96::11" // a service without endpoints
	vip6Sticky   = "fd00:96::12" // ClientIP affinity
	serviceCIDR6 = "fd00:96::/108"
)

// kernelStateIPVS6 is /proc/net/ip_vs (ipvsText, without counts) once
// kernelState6(tp, "pod1", "pod2") is programmed.
const kernelStateIPVS6 = `TCP [fd00:96::10]:80 rr
  -> [fd00:250::11]:8080 Masq 1
  -> [fd00:250::12]:8080 Masq 1
TCP [fd00:96::12]:80 rr persistent
  -> [fd00:250::11]:8080 Masq 1
  -> [fd00:250::12]:8080 Masq 1
UDP [fd00:96::10]:53 rr
  -> [fd00:250::11]:5353 Masq 1
  -> [fd00:250::12]:5353 Masq 1`

// Our sets (setMembers) with kernelState and kernelState6 programmed.
const (
	kernelStateSets = `OUTPOST-IPVS-VIPS: 10.96.0.10 10.96.0.11 10.96.0.12
OUTPOST-IPVS-PORTS: 10.96.0.10,tcp:80 10.96.0.10,udp:53 10.96.0.12,tcp:80`
	kernelStateSets6 = `OUTPOST-IPVS-VIPS6: fd00:96::10 fd00:96::11 fd00:96::12
OUTPOST-IPVS-PORTS6: fd00:96::10,tcp:80 fd00:96::10,udp:53 fd00:96::12,tcp:80`
)

// foreignRules6 are someone else's ip6tables rules (foreignRules for IPv6).
const foreignRules6 = `*filter
:FOREIGN - [0:0]
-A FOREIGN -p tcp --dport 22 -j ACCEPT
-A INPUT -j FOREIGN
COMMIT
*nat
:OUTPOST-SERVICES - [0:0]
-A POSTROUTING -s fd00:17::/64 -j MASQUERADE
-A OUTPUT -j OUTPOST-SERVICES
COMMIT
`

// kernelState6 is kernelState over IPv6: one IPv6-only cluster.
func kernelState6(tp *topo, webPods ...string) *model.State {
	return state6(kernelPorts(tp, true, webPods...)...)
}

// state6 is one IPv6-only cluster with ports.
func state6(ports ...*model.ServicePort) *model.State {
	return state(cluster("k", true, []string{serviceCIDR6}, ports...))
}

// mapPorts returns f of each port, leaving out those it returns nil for.
func mapPorts(ports []*model.ServicePort, f func(*model.ServicePort) *model.ServicePort) []*model.ServicePort {
	var out []*model.ServicePort
	for _, sp := range ports {
		if sp = f(sp); sp != nil {
			out = append(out, sp)
		}
	}
	return out
}

// dualState is one dual-stack cluster: every service of kernelState has
// an IPv4 and an IPv6 ClusterIP, as the model gives a dual-stack Service.
func dualState(tp *topo, webPods ...string) *model.State {
	ports := append(kernelPorts(tp, false, webPods...), kernelPorts(tp, true, webPods...)...)
	return state(cluster("k", true, []string{"10.96.0.0/16", serviceCIDR6}, ports...))
}

// bracket is "[a]" for an IPv6 address, to append ":port" to.
func bracket(a string) string { return "[" + a + "]" }

func requireIP6Tables(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"ip6tables-restore", "ip6tables-save"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Fatalf("%s is needed (iptables package): %v", bin, err)
		}
	}
}

// restoreRules loads a script with iptables-restore --noflush, or
// ip6tables-restore, in the host namespace.
func (tp *topo) restoreRules(v6 bool, script string) {
	tp.t.Helper()
	tp.in(func() {
		r, err := iptables.NewRunner(v6)
		if err == nil {
			err = r.Restore(context.Background(), []byte(script))
		}
		if err != nil {
			tp.t.Fatal(err)
		}
	})
}

// rulesOf is iptablesSave or, for IPv6, ip6tablesSave.
func (tp *topo) rulesOf(v6 bool) string {
	tp.t.Helper()
	if v6 {
		return tp.ip6tablesSave()
	}
	return tp.iptablesSave()
}

// ipvsOf keeps the virtual servers of one family.
func ipvsOf(es []ipvsEntry, v6 bool) []ipvsEntry {
	var out []ipvsEntry
	for _, e := range es {
		if strings.Contains(e.Service, "[") == v6 {
			out = append(out, e)
		}
	}
	return out
}

// ourSetNames lists the sets of ours in the host namespace.
func (tp *topo) ourSetNames() []string {
	tp.t.Helper()
	out, err := tp.cmdIn("ipset", "list", "-n")
	if err != nil {
		tp.t.Fatalf("ipset list -n: %v: %s", err, out)
	}
	var names []string
	for _, n := range strings.Fields(out) {
		if strings.HasPrefix(n, setPrefix) {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// outpostAddrs lists the addresses on outpost0 as `ip -o addr` shows
// them ("inet6 fd00:96::10/128 scope global nodad"), sorted; nil when
// outpost0 does not exist.
func (tp *topo) outpostAddrs() []string {
	tp.t.Helper()
	out, err := tp.cmdIn("ip", "-o", "addr", "show", "dev", Interface)
	if err != nil {
		if strings.Contains(out, "does not exist") {
			return nil
		}
		tp.t.Fatalf("ip addr show dev %s: %v: %s", Interface, err, out)
	}
	var addrs []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		// "3: outpost0    inet6 fd00:96::10/128 scope global nodad \       valid_lft ...",
		// "3: outpost0    inet 10.96.0.10/32 scope host outpost0\       valid_lft ..."
		rest, _, _ := strings.Cut(strings.Join(f[2:], " "), `\`)
		addrs = append(addrs, strings.TrimSpace(rest))
	}
	slices.Sort(addrs)
	return addrs
}

func TestKernelIPv6(t *testing.T) {
	requireIPVS(t)
	requireIP6Tables(t)
	tp := newDualTopo(t)
	tp.restoreRules(true, foreignRules6)
	rules6Before, rulesBefore := tp.ip6tablesSave(), tp.iptablesSave()

	k := NewKernel()
	p := tp.newProxier(k, ipv6)
	st := kernelState6(tp, "pod1", "pod2")
	if err := tp.sync(p, st); err != nil {
		t.Fatal(err)
	}
	web, empty, sticky := bracket(vip6Web), bracket(vip6Empty), bracket(vip6Sticky)

	// Round robin over both pods, TCP and UDP, each reply masqueraded to
	// the bridge's IPv6 address (the pods have no other route back).
	if seen := tp.podsAnswering(10, tp.askTCP, web+":80"); seen["pod1"] == 0 || seen["pod2"] == 0 {
		t.Errorf("TCP answers: %v, want both pods", seen)
	}
	if seen := tp.podsAnswering(10, tp.askUDP, web+":53"); seen["pod1"] == 0 || seen["pod2"] == 0 {
		t.Errorf("UDP answers: %v, want both pods", seen)
	}
	// ClientIP affinity: one pod for every connection.
	if seen := tp.podsAnswering(8, tp.askTCP, sticky+":80"); len(seen) != 1 {
		t.Errorf("sticky answers: %v, want one pod", seen)
	}

	if got := ipvsText(tp.readIPVS(), false); got != kernelStateIPVS6 {
		t.Errorf("/proc/net/ip_vs:\n%s\nwant:\n%s", got, kernelStateIPVS6)
	}
	tp.in(func() {
		vss, err := k.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, vs := range vss {
			if vs.VIP.String() == vip6Sticky && (!vs.Persistent || vs.Timeout != 3600) {
				t.Errorf("sticky virtual server: %+v, want persistent 3600", vs.Service)
			}
		}
	})

	// A service without endpoints is refused, even though this host
	// listens on its port on every IPv6 address; the services with
	// endpoints on that port still go to the pods.
	var ln80 net.Listener
	var err error
	tp.in(func() { ln80, err = net.Listen("tcp6", ":80") })
	if err != nil {
		t.Fatal(err)
	}
	_, err = tp.dialTCP(empty + ":80")
	wantRefused(t, "service without endpoints", err)
	if seen := tp.podsAnswering(4, tp.askTCP, web+":80"); seen["pod1"] == 0 || seen["pod2"] == 0 {
		t.Errorf("TCP answers with a host listener on port 80: %v, want both pods", seen)
	}
	ln80.Close()

	// A port of a VIP that is no service is refused, even though this host
	// listens on it on every IPv6 address.
	ln, pc := hostListeners(t, tp, true)
	defer ln.Close()
	defer pc.Close()
	if _, err := tp.askTCP("[::1]:2222"); err != nil {
		t.Fatalf("the host's own listener does not answer: %v", err)
	}
	if _, err := tp.askUDP("[::1]:5555"); err != nil {
		t.Fatalf("the host's own UDP listener does not answer: %v", err)
	}
	for _, vip := range []string{web, empty, sticky} {
		_, err := tp.dialTCP(vip + ":2222")
		wantRefused(t, "TCP to "+vip+":2222", err)
		_, err = tp.askUDP(vip + ":5555")
		wantRefused(t, "UDP to "+vip+":5555", err)
	}

	// The VIPs are on outpost0, with full-length prefixes and as local
	// addresses. Linux gives them global scope whatever hostAddr asks for
	// (see TestKernelInterface).
	wantAddrs := []string{
		"inet6 fd00:96::10/128 scope global nodad",
		"inet6 fd00:96::11/128 scope global nodad",
		"inet6 fd00:96::12/128 scope global nodad",
	}
	if got := tp.outpostAddrs(); !slices.Equal(got, wantAddrs) {
		t.Errorf("addresses on outpost0:\n  got  %q\n  want %q", got, wantAddrs)
	}
	routes, err := tp.cmdIn("ip", "-6", "route", "show", "table", "local", "dev", Interface)
	if err != nil {
		t.Fatalf("ip -6 route: %v: %s", err, routes)
	}
	for _, vip := range []string{vip6Web, vip6Empty, vip6Sticky} {
		if !strings.Contains(routes, "local "+vip+" ") {
			t.Errorf("no local route for %s:\n%s", vip, routes)
		}
	}

	// The IPv6 sets and rules; nothing of IPv4.
	if got := tp.setMembers(true); got != kernelStateSets6 {
		t.Errorf("ipsets:\n%s\nwant:\n%s", got, kernelStateSets6)
	}
	if got, want := tp.ourSetNames(), []string{"OUTPOST-IPVS-CLIENTS6", "OUTPOST-IPVS-PORTS6", "OUTPOST-IPVS-VIPS6"}; !slices.Equal(got, want) {
		t.Errorf("our sets: %q, want %q", got, want)
	}
	rules6 := tp.ip6tablesSave()
	for _, want := range []string{
		"\n:OUTPOST-IPVS-FILTER - ",
		"\n:OUTPOST-IPVS-POSTROUTING - ",
		"-m set --match-set OUTPOST-IPVS-VIPS6 dst -m set ! --match-set OUTPOST-IPVS-PORTS6 dst,dst",
		"-j OUTPOST-IPVS-FILTER\n",
		"-j OUTPOST-IPVS-POSTROUTING\n",
	} {
		if !strings.Contains(rules6, want) {
			t.Errorf("ip6tables-save: no %q in:\n%s", want, rules6)
		}
	}
	if got := tp.iptablesSave(); got != rulesBefore {
		t.Errorf("the IPv6 Proxier changed iptables:\n%s\nwant:\n%s", got, rulesBefore)
	}

	// Changes, through every kind of IPVS and address operation: an
	// endpoint leaves (its TCP destination drains at weight 0 under an
	// open connection, its UDP one goes at once) and the affinity timeout
	// changes; then the endpoint comes back and the sticky service goes,
	// its VIP with it; then all is as it was.
	c, err := tp.dialTCP(web + ":80")
	if err != nil {
		t.Fatal(err)
	}
	defer c.abort()
	a, err := c.ask()
	if err != nil {
		t.Fatal(err)
	}
	leaving, staying := a.pod, map[string]string{"pod1": "pod2", "pod2": "pod1"}[a.pod]
	longer := func(sp *model.ServicePort) *model.ServicePort {
		if sp.Key.Name == "sticky" {
			return withAffinity(sp, 2*time.Hour)
		}
		return sp
	}
	if err := tp.sync(p, state6(mapPorts(kernelPorts(tp, true, staying), longer)...)); err != nil {
		t.Fatal(err)
	}
	l, s := tp.pods6[leaving], tp.pods6[staying]
	es := tp.readIPVS()
	tcpDests := []string{fmt.Sprintf("  -> [%s]:8080 Masq 0", l), fmt.Sprintf("  -> [%s]:8080 Masq 1", s)}
	slices.Sort(tcpDests)
	want := fmt.Sprintf(`TCP [fd00:96::10]:80 rr
%s
TCP [fd00:96::12]:80 rr persistent
  -> [fd00:250::11]:8080 Masq 1
  -> [fd00:250::12]:8080 Masq 1
UDP [fd00:96::10]:53 rr
  -> [%s]:5353 Masq 1`, strings.Join(tcpDests, "\n"), s)
	if got := ipvsText(es, false); got != want {
		t.Errorf("/proc/net/ip_vs with %s leaving:\n%s\nwant:\n%s", leaving, got, want)
	}
	if e := find(es, "TCP [fd00:96::10]:80 "); e != nil {
		for _, d := range e.Dests {
			if d.Weight == 0 && d.Active == 0 {
				t.Errorf("draining destination %s without its open connection: %+v", d.Addr, d)
			}
		}
	}
	if b, err := c.ask(); err != nil || b.pod != leaving {
		t.Errorf("open connection after its endpoint left: %+v, %v (was on %s)", b, err, leaving)
	}
	if seen := tp.podsAnswering(4, tp.askTCP, web+":80"); seen[leaving] != 0 {
		t.Errorf("new connections: %v, want only %s", seen, staying)
	}
	tp.in(func() {
		vss, err := k.List()
		if err != nil {
			t.Fatal(err)
		}
		for _, vs := range vss {
			if vs.VIP.String() == vip6Sticky && vs.Timeout != 7200 {
				t.Errorf("sticky virtual server after the affinity change: %+v, want persistent 7200", vs.Service)
			}
		}
	})

	noSticky := func(sp *model.ServicePort) *model.ServicePort {
		if sp.Key.Name == "sticky" {
			return nil
		}
		return sp
	}
	if err := tp.sync(p, state6(mapPorts(kernelPorts(tp, true, "pod1", "pod2"), noSticky)...)); err != nil {
		t.Fatal(err)
	}
	if got, want := ipvsText(tp.readIPVS(), false), `TCP [fd00:96::10]:80 rr
  -> [fd00:250::11]:8080 Masq 1
  -> [fd00:250::12]:8080 Masq 1
UDP [fd00:96::10]:53 rr
  -> [fd00:250::11]:5353 Masq 1
  -> [fd00:250::12]:5353 Masq 1`; got != want {
		t.Errorf("/proc/net/ip_vs without the sticky service:\n%s\nwant:\n%s", got, want)
	}
	if got, want := tp.outpostAddrs(), wantAddrs[:2]; !slices.Equal(got, want) {
		t.Errorf("addresses on outpost0 without the sticky service:\n  got  %q\n  want %q", got, want)
	}
	if got, want := tp.setMembers(true), `OUTPOST-IPVS-VIPS6: fd00:96::10 fd00:96::11
OUTPOST-IPVS-PORTS6: fd00:96::10,tcp:80 fd00:96::10,udp:53`; got != want {
		t.Errorf("ipsets without the sticky service:\n%s\nwant:\n%s", got, want)
	}
	if b, err := c.ask(); err != nil || b.pod != leaving {
		t.Errorf("open connection after its endpoint came back: %+v, %v (was on %s)", b, err, leaving)
	}

	if err := tp.sync(p, st); err != nil {
		t.Fatal(err)
	}
	if got := ipvsText(tp.readIPVS(), false); got != kernelStateIPVS6 {
		t.Errorf("/proc/net/ip_vs back as it was:\n%s\nwant:\n%s", got, kernelStateIPVS6)
	}
	if got := tp.setMembers(true); got != kernelStateSets6 {
		t.Errorf("ipsets back as they were:\n%s\nwant:\n%s", got, kernelStateSets6)
	}

	// A restarted daemon changes nothing, and the open connection goes on.
	if got := tp.ip6tablesSave(); got != rules6 {
		t.Errorf("ip6tables before the restart:\n%s\nwant:\n%s", got, rules6)
	}
	tp.restartChangesNothing(t, st, ipv6, true, c, a)
	c.abort()

	// Cleanup leaves someone else's IPv6 virtual server, on an address
	// that is not on outpost0, and someone else's rules.
	foreign := Service{ServiceKey: ServiceKey{VIP: netip.MustParseAddr("fd00:200::1"), Port: 80, Protocol: model.TCP}, Scheduler: "rr"}
	tp.in(func() {
		if err := k.AddService(foreign); err != nil {
			t.Fatal(err)
		}
		if err := k.AddDest(foreign, Destination{Addr: netip.MustParseAddrPort("[fd00:250::11]:8080"), Weight: 1}); err != nil {
			t.Fatal(err)
		}
	})
	for range 2 { // the second finds nothing to do
		if err := tp.cleanup(p); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := ipvsText(tp.readIPVS(), false), "TCP [fd00:200::1]:80 rr\n  -> [fd00:250::11]:8080 Masq 1"; got != want {
		t.Errorf("IPVS after Cleanup:\n%s\nwant:\n%s", got, want)
	}
	if got := tp.ip6tablesSave(); got != rules6Before {
		t.Errorf("ip6tables after Cleanup:\n%s\nwant:\n%s", got, rules6Before)
	}
	if got := tp.iptablesSave(); got != rulesBefore {
		t.Errorf("iptables after Cleanup:\n%s\nwant:\n%s", got, rulesBefore)
	}
	if got := tp.ourSetNames(); len(got) != 0 {
		t.Errorf("ipsets after Cleanup: %q", got)
	}
	if got := tp.outpostAddrs(); got != nil {
		t.Errorf("outpost0 still exists, with %q", got)
	}
}

// TestKernelDualStack runs an IPv4 and an IPv6 Proxier over one Kernel in
// one namespace, as the daemon does for a dual-stack cluster: each programs
// its family and leaves the other's virtual servers, addresses, sets and
// rules alone, in its syncs and its Cleanup, whichever cleans up first;
// someone else's rules of both families stay.
func TestKernelDualStack(t *testing.T) {
	requireIPVS(t)
	requireIP6Tables(t)
	tp := newDualTopo(t)
	tp.restoreRules(false, foreignRules)
	tp.restoreRules(true, foreignRules6)
	before := map[bool]string{false: tp.rulesOf(false), true: tp.rulesOf(true)}
	st := dualState(tp, "pod1", "pod2")
	wantIPVS := map[bool]string{false: kernelStateIPVS, true: kernelStateIPVS6}
	wantSets := map[bool]string{false: kernelStateSets, true: kernelStateSets6}
	vip := map[bool]string{false: vipWeb, true: bracket(vip6Web)}
	name := map[bool]string{false: "IPv4", true: "IPv6"}

	for _, v6First := range []bool{true, false} {
		first, second := v6First, !v6First
		t.Logf("%s Proxier cleans up first", name[first])

		k := NewKernel() // one for both families, as the daemon's
		for _, p := range []*Proxier{tp.newProxier(k, nil), tp.newProxier(k, ipv6)} {
			if err := tp.sync(p, st); err != nil {
				t.Fatal(err)
			}
		}
		es := tp.readIPVS()
		for _, v6 := range []bool{false, true} {
			if seen := tp.podsAnswering(6, tp.askTCP, vip[v6]+":80"); seen["pod1"] == 0 || seen["pod2"] == 0 {
				t.Errorf("%s TCP answers: %v, want both pods", name[v6], seen)
			}
			if seen := tp.podsAnswering(6, tp.askUDP, vip[v6]+":53"); seen["pod1"] == 0 || seen["pod2"] == 0 {
				t.Errorf("%s UDP answers: %v, want both pods", name[v6], seen)
			}
			if got := ipvsText(ipvsOf(es, v6), false); got != wantIPVS[v6] {
				t.Errorf("%s virtual servers:\n%s\nwant:\n%s", name[v6], got, wantIPVS[v6])
			}
			if got := tp.setMembers(v6); got != wantSets[v6] {
				t.Errorf("%s ipsets:\n%s\nwant:\n%s", name[v6], got, wantSets[v6])
			}
		}
		if len(es) != 6 {
			t.Errorf("%d virtual servers, want 6:\n%s", len(es), ipvsText(es, false))
		}
		rules := map[bool]string{false: tp.rulesOf(false), true: tp.rulesOf(true)}
		for v6, r := range rules {
			if !strings.Contains(r, "-j OUTPOST-IPVS-FILTER\n") || !strings.Contains(r, "-j OUTPOST-IPVS-POSTROUTING\n") {
				t.Errorf("%s rules without our hooks:\n%s", name[v6], r)
			}
		}
		ipvsBefore, addrsBefore := ipvsText(es, false), tp.outpostAddrs()
		if len(addrsBefore) != 6 {
			t.Errorf("addresses on outpost0: %q, want three of each family", addrsBefore)
		}

		// Restarted, each syncs in turn, twice: nothing changes, of either
		// family.
		ck := &countingKernel{Kernel: NewKernel()}
		ps := map[bool]*Proxier{false: tp.newProxier(ck, nil), true: tp.newProxier(ck, ipv6)}
		for range 2 {
			for _, v6 := range []bool{false, true} {
				if err := tp.sync(ps[v6], st); err != nil {
					t.Fatal(err)
				}
			}
		}
		if len(ck.ops) != 0 {
			t.Errorf("syncs of both families changed the kernel: %q", ck.ops)
		}
		if got := ipvsText(tp.readIPVS(), false); got != ipvsBefore {
			t.Errorf("IPVS after syncs of both:\n%s\nwant:\n%s", got, ipvsBefore)
		}
		for _, v6 := range []bool{false, true} {
			if got := tp.setMembers(v6); got != wantSets[v6] {
				t.Errorf("%s ipsets after syncs of both:\n%s\nwant:\n%s", name[v6], got, wantSets[v6])
			}
		}
		for _, v6 := range []bool{false, true} {
			if got := tp.rulesOf(v6); got != rules[v6] {
				t.Errorf("%s rules after syncs of both:\n%s\nwant:\n%s", name[v6], got, rules[v6])
			}
		}

		// The first Cleanup takes its family only.
		if err := tp.cleanup(ps[first]); err != nil {
			t.Fatal(err)
		}
		es = tp.readIPVS()
		if got := ipvsOf(es, first); len(got) != 0 {
			t.Errorf("%s virtual servers after its Cleanup:\n%s", name[first], ipvsText(got, false))
		}
		if got := ipvsText(ipvsOf(es, second), false); got != wantIPVS[second] {
			t.Errorf("%s virtual servers after the %s Cleanup:\n%s\nwant:\n%s", name[second], name[first], got, wantIPVS[second])
		}
		if got := tp.setMembers(second); got != wantSets[second] {
			t.Errorf("%s ipsets after the %s Cleanup:\n%s\nwant:\n%s", name[second], name[first], got, wantSets[second])
		}
		for _, n := range tp.ourSetNames() {
			if isOurSet(n, first) {
				t.Errorf("set %s still there after the %s Cleanup", n, name[first])
			}
		}
		if got := tp.rulesOf(first); got != before[first] {
			t.Errorf("%s rules after its Cleanup:\n%s\nwant:\n%s", name[first], got, before[first])
		}
		if got := tp.rulesOf(second); got != rules[second] {
			t.Errorf("%s rules after the %s Cleanup:\n%s\nwant:\n%s", name[second], name[first], got, rules[second])
		}
		var wantAddrs []string
		for _, a := range addrsBefore {
			if strings.HasPrefix(a, "inet6 ") == second {
				wantAddrs = append(wantAddrs, a)
			}
		}
		if got := tp.outpostAddrs(); !slices.Equal(got, wantAddrs) {
			t.Errorf("outpost0 after the %s Cleanup: %q, want %q", name[first], got, wantAddrs)
		}
		// The other family still serves, and its next sync finds nothing
		// to do.
		if seen := tp.podsAnswering(4, tp.askTCP, vip[second]+":80"); seen["pod1"] == 0 || seen["pod2"] == 0 {
			t.Errorf("%s TCP answers after the %s Cleanup: %v, want both pods", name[second], name[first], seen)
		}
		ck.ops = nil
		if err := tp.sync(ps[second], st); err != nil {
			t.Fatal(err)
		}
		if len(ck.ops) != 0 {
			t.Errorf("%s sync after the %s Cleanup changed the kernel: %q", name[second], name[first], ck.ops)
		}

		// The second Cleanup leaves nothing.
		if err := tp.cleanup(ps[second]); err != nil {
			t.Fatal(err)
		}
		if es := tp.readIPVS(); len(es) != 0 {
			t.Errorf("IPVS after both Cleanups:\n%s", ipvsText(es, false))
		}
		if got := tp.ourSetNames(); len(got) != 0 {
			t.Errorf("ipsets after both Cleanups: %q", got)
		}
		for _, v6 := range []bool{false, true} {
			if got := tp.rulesOf(v6); got != before[v6] {
				t.Errorf("%s rules after both Cleanups:\n%s\nwant:\n%s", name[v6], got, before[v6])
			}
		}
		if got := tp.outpostAddrs(); got != nil {
			t.Errorf("outpost0 still exists after both Cleanups, with %q", got)
		}
	}
}
