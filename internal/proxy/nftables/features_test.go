package nftables

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
)

// npState: modeltest.NodePorts at this host's addresses.
func npState() *model.State {
	return modeltest.NodePorts(netip.MustParseAddr(hostIP), netip.MustParseAddr(hostIP6), netip.MustParseAddr("127.0.0.1"))
}

// TestNodePortFlows: to this host's address at a served node port, from
// local processes, routed clients and strangers alike, packets reach the
// endpoints, masqueraded, or are refused without endpoints; loopback,
// unserved node ports and other addresses are left alone.
func TestNodePortFlows(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			f := newFake(v6)
			mustSync(t, newProxier(f, v6, testMark), npState(), true)
			host, lo := hostIP, "127.0.0.1"
			web := shares(webKey, true, "10.0.1.1:8080", "10.0.1.2:8080")
			if v6 {
				host, lo = hostIP6, "::1"
				web = shares(web6Key, true, "[fd00:1::1]:8080")
			}
			for _, pkt := range []packet{tcp(host, 30080), tcp(host, 30080).viaRoute(), tcp(host, 30080).fromStranger()} {
				checkFlow(t, f, pkt, web)
				checkFlow(t, f, packet{routed: pkt.routed, src: pkt.src, dst: host, proto: "tcp", dport: 30081}, rejected("tcp-reset"))
				checkFlow(t, f, packet{routed: pkt.routed, src: pkt.src, dst: host, proto: "tcp", dport: 30083}, untouched)
			}
			checkFlow(t, f, tcp(lo, 30080), untouched)
			if !v6 {
				checkFlow(t, f, udp(host, 30053), shares(key("alpha", "default", "dns", "dns", model.UDP, false), true, "10.0.2.1:5353"))
				checkFlow(t, f, udp(host, 30082).fromStranger(), rejected("icmp-port-unreachable"))
				checkFlow(t, f, tcp(host, 30090), untouched) // beta serves none
			}
		})
	}
}

// TestNodePortsNeedMasquerade: without a mark no node port is served.
func TestNodePortsNeedMasquerade(t *testing.T) {
	f := newFake(false)
	mustSync(t, newProxier(f, false, 0), npState(), true)
	checkFlow(t, f, tcp(hostIP, 30080), untouched)
	checkFlow(t, f, tcp(hostIP, 30081).viaRoute(), untouched)
}

// npChanges are the random changes with node ports coming and going.
var npChanges = append(slices.Clone(modeltest.Changes),
	modeltest.Change{Name: "serve a node port", Do: func(w *modeltest.World, c *model.ClusterState) bool {
		k, ok := w.PickKey(c)
		if ok {
			c.Ports[k] = modeltest.WithNodePort(c.Ports[k], uint16(30000+w.Next()), true)
		}
		return ok
	}},
	modeltest.Change{Name: "refuse a node port", Do: func(w *modeltest.World, c *model.ClusterState) bool {
		k, ok := w.PickKey(c)
		if ok {
			c.Ports[k] = modeltest.WithNodePort(c.Ports[k], c.Ports[k].NodePort, false)
		}
		return ok
	}},
	modeltest.Change{Name: "start or stop serving node ports", Do: func(w *modeltest.World, c *model.ClusterState) bool {
		c.ServeNodePorts = !c.ServeNodePorts
		return true
	}},
)

// TestNodePortIncrementalEqualsFull is TestIncrementalEqualsFull with node
// ports coming, going and moving.
func TestNodePortIncrementalEqualsFull(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			w := &modeltest.World{Rng: rand.New(rand.NewPCG(3, 4)), St: npState()}
			f := newFake(v6)
			p := newProxier(f, v6, testMark)
			mustSync(t, p, w.St, true)
			for i := range 120 {
				ch := npChanges[w.Rng.IntN(len(npChanges))]
				step := []string{"alpha", "beta"}[w.Rng.IntN(2)] + ": " + ch.Name
				w.Apply(step, npChanges)
				if err := p.Sync(t.Context(), w.St, false); err != nil {
					t.Fatalf("step %d (%s): %v", i, step, err)
				}
				checkSameAsFull(t, f, w.St, v6)
				checkAllFlows(t, f, w.St, v6)
				checkNodePorts(t, f, w.St, v6)
				if t.Failed() {
					t.Fatalf("step %d (%s) failed", i, step)
				}
			}
		})
	}
}

// checkNodePorts traces a stranger's packet to every node port of st.
func checkNodePorts(t *testing.T, fake *knftables.Fake, st *model.State, v6 bool) {
	t.Helper()
	host := hostIP
	if v6 {
		host = hostIP6
	}
	for _, c := range st.Clusters {
		for _, sp := range c.Ports {
			if sp.Key.IPv6 != v6 || sp.NodePort == 0 {
				continue
			}
			pkt := packet{src: stranger, dst: host, proto: proto(sp.Key.Protocol), dport: sp.NodePort}.fromStranger()
			want := untouched
			if c.ServeNodePorts && sp.ServedNodePort != 0 && !servedTwice(st, sp) {
				want = wantFlow(sp, true)
			}
			if !servedTwice(st, sp) {
				checkFlow(t, fake, pkt, want)
			}
		}
	}
}

// servedTwice: the random changes may serve one node port for two ports,
// which the model never does; such a port is not checked.
func servedTwice(st *model.State, sp *model.ServicePort) bool {
	n := 0
	for _, c := range st.Clusters {
		for _, o := range c.Ports {
			if o.Key.IPv6 == sp.Key.IPv6 && o.Key.Protocol == sp.Key.Protocol && o.NodePort == sp.NodePort && o.NodePort != 0 {
				n++
			}
		}
	}
	return n > 1
}

func extState(webExt ...string) *model.State {
	web := svc("a", "ns", "web", "", model.TCP, "10.96.0.10", 80, "10.244.0.5:8080")
	web.LocalIP = netip.MustParseAddr("100.64.0.10")
	for _, e := range webExt {
		web.ExternalIPs = append(web.ExternalIPs, netip.MustParseAddr(e))
	}
	empty := svc("a", "ns", "empty", "", model.TCP, "10.96.0.11", 80)
	empty.LocalIP = netip.MustParseAddr("100.64.0.11")
	empty.ExternalIPs = []netip.Addr{netip.MustParseAddr("192.0.2.6")}
	c := cluster("a", true, []string{"10.96.0.0/16"}, web, empty)
	c.LocalServiceCIDR = netip.MustParsePrefix("100.64.0.0/16")
	c.AllowExternalIPs = []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}
	return state(c)
}

// TestExternalIPsAndLocalRange: the local VIP and allowed external IPs
// reach the endpoints or are refused; the mapped ClusterIP is left alone.
func TestExternalIPsAndLocalRange(t *testing.T) {
	f := newFake(false)
	p := newProxier(f, false, testMark)
	mustSync(t, p, extState("192.0.2.5"), true)
	k := key("a", "ns", "web", "", model.TCP, false)
	dnat := shares(k, true, "10.244.0.5:8080")
	runFlows(t, f, []flowCase{
		{"local VIP", tcp("100.64.0.10", 80), dnat},
		{"external IP", tcp("192.0.2.5", 80), dnat},
		{"external IP without endpoints", tcp("192.0.2.6", 80), rejected("tcp-reset")},
		{"local VIP without endpoints", tcp("100.64.0.11", 80), rejected("tcp-reset")},
		{"the mapped ClusterIP itself", tcp("10.96.0.10", 80), untouched},
		{"an external IP of no service", tcp("192.0.2.7", 80), untouched},
	})
	for _, st := range []*model.State{extState("192.0.2.5", "192.0.2.8"), extState()} {
		mustSync(t, p, st, false)
		checkSameAsFull(t, f, st, false)
	}
	st := extState()
	st.Clusters[0].AllowExternalIPs = nil
	for k, sp := range st.Clusters[0].Ports {
		c := *sp
		c.ExternalIPs = nil
		st.Clusters[0].Ports[k] = &c
	}
	mustSync(t, p, st, false)
	checkFlow(t, f, tcp("192.0.2.6", 80), untouched)
	checkSameAsFull(t, f, st, false)
}

// TestNoRoutedClients: without routed_clients, routed packets reach no
// service (node ports aside), local ones do.
func TestNoRoutedClients(t *testing.T) {
	f := newFake(false)
	mustSync(t, New(Options{NFT: f, MasqueradeMark: testMark}), testState(), true)
	checkFlow(t, f, tcp("10.96.0.10", 80), shares(webKey, true, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"))
	checkFlow(t, f, tcp("10.96.0.10", 80).viaRoute(), untouched)
	checkFlow(t, f, tcp("10.96.0.14", 80).viaRoute(), untouched)
}

func TestComment(t *testing.T) {
	long := strings.Repeat("n", 300)
	for _, c := range []struct{ in, want string }{
		{"alpha/default/web:http(v6)", "alpha/default/web:http(v6)"},
		{`evil" ; flush ruleset ; "`, "evil? ? flush ruleset ? ?"},
		{"tab\tnew\nline\\é", "tab?new?line??"},
	} {
		if got := *comment(c.in); got != c.want {
			t.Errorf("comment(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	a, b := *comment(long + "a"), *comment(long + "b")
	if len(a) != MaxComment || a == b || !strings.Contains(a, "...") {
		t.Errorf("long comments: %q (%d bytes) and %q", a, len(a), b)
	}
}

// TestHostileNamesStayComments: a service whose names hold nft syntax
// makes a transaction like any other: names reach nft only as hashes and
// sanitised comments.
func TestHostileNamesStayComments(t *testing.T) {
	f := newFake(false)
	p := newProxier(f, false, testMark)
	bad := svc("alpha", `x" } ; flush ruleset ; {`, strings.Repeat("é", 200), "p\n", model.TCP, "10.96.0.30", 80, "10.0.9.1:80")
	mustSync(t, p, state(cluster("alpha", true, alphaCIDRs, bad)), true)
	tx := f.LastTransaction.String()
	for _, l := range strings.Split(tx, "\n") {
		if strings.Count(l, `"`)%2 != 0 || strings.Contains(l, "flush ruleset ;") {
			t.Errorf("a name escaped its comment: %s", l)
		}
	}
	checkFlow(t, f, tcp("10.96.0.30", 80), shares(bad.Key, true, "10.0.9.1:80"))
}

// fakeReader is the explainer's reader over a Fake.
type fakeReader struct{ *knftables.Fake }

func (f fakeReader) chainRules(_ context.Context, chain string) ([]string, error) {
	f.RLock()
	defer f.RUnlock()
	if f.Table == nil || f.Table.Chains[chain] == nil {
		return nil, nil
	}
	var out []string
	for _, r := range f.Table.Chains[chain].Rules {
		out = append(out, r.Rule)
	}
	return out, nil
}

type recordingConntrack struct {
	flows      []iptables.Flow
	undiverted []iptables.Portal
}

func (r *recordingConntrack) Clear(_ context.Context, f iptables.Forget) error {
	r.flows = append(r.flows, f.UDP...)
	r.undiverted = append(r.undiverted, f.Undiverted...)
	return nil
}

// TestStaleUDP: a UDP endpoint that goes has its flows forgotten after
// the transaction; a TCP one, or one that stays, does not.
func TestStaleUDP(t *testing.T) {
	ct := &recordingConntrack{}
	f := newFake(false)
	p := New(Options{NFT: f, MasqueradeMark: testMark, Conntrack: ct})
	st := testState()
	mustSync(t, p, st, true)
	if len(ct.flows) != 0 {
		t.Fatalf("the first sync forgets %v", ct.flows)
	}
	st = modeltest.CloneState(st)
	alpha := modeltest.ClusterOf(st, "alpha")
	alpha.Ports[dnsKey] = withEndpoints(alpha.Ports[dnsKey], "10.0.2.1:5353")
	alpha.Ports[webKey] = withEndpoints(alpha.Ports[webKey], "10.0.1.1:8080")
	mustSync(t, p, st, false)
	want := []iptables.Flow{{VIP: netip.MustParseAddrPort("10.96.0.11:53"), Endpoint: netip.MustParseAddrPort("10.0.2.2:5353")}}
	if !slices.Equal(ct.flows, want) {
		t.Errorf("forgot %v, want %v", ct.flows, want)
	}
}

// TestExplain: explain reads back what a sync wrote with no mismatch, and
// names what someone changed behind our back.
func TestExplain(t *testing.T) {
	f := newFake(false)
	st := testState()
	web := withAffinity(modeltest.ClusterOf(st, "alpha").Ports[webKey], 600e9)
	modeltest.ClusterOf(st, "alpha").Ports[webKey] = web
	mustSync(t, newProxier(f, false, testMark), st, true)
	ex := &explainer{readers: func() map[bool]reader { return map[bool]reader{false: fakeReader{f}} }}
	explain := func(sp *model.ServicePort) proxy.PortView {
		t.Helper()
		v, err := ex.ExplainPort(t.Context(), proxy.PortWant(ex, sp, sp.VIP()))
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, c := range st.Clusters {
		for _, sp := range c.Ports {
			if sp.Key.IPv6 {
				continue
			}
			if v := explain(sp); len(v.Mismatches) > 0 || v.Empty {
				t.Errorf("%v: %q (empty %v)\n%s", sp.Key, v.Mismatches, v.Empty, strings.Join(v.Lines, "\n"))
			}
		}
	}
	v := explain(web)
	if len(v.Endpoints) != 3 || v.Endpoints[0].Probability != 1.0/3 {
		t.Errorf("endpoints %+v", v.Endpoints)
	}
	if !slices.ContainsFunc(v.Lines, func(l string) bool { return strings.HasPrefix(l, "counter "+counterName(webKey)) }) {
		t.Errorf("no counter line:\n%s", strings.Join(v.Lines, "\n"))
	}
	// The model wants other endpoints and no affinity: both are named.
	other := withAffinity(withEndpoints(web, "10.0.1.1:8080", "10.0.1.9:8080"), 0)
	v = explain(other)
	joined := strings.Join(v.Mismatches, "\n")
	for _, want := range []string{"10.0.1.9:8080 is wanted", "to 10.0.1.2:8080, which the model does not want", "affinity"} {
		if !strings.Contains(joined, want) {
			t.Errorf("mismatches lack %q:\n%s", want, joined)
		}
	}
	// A port the model does not have, still in the kernel.
	v, err := ex.ExplainPort(t.Context(), proxy.Want{Target: netip.MustParseAddrPort("10.96.0.14:80"), Protocol: model.TCP})
	if err != nil || !strings.Contains(strings.Join(v.Mismatches, ""), "still refuses") {
		t.Errorf("a refusal left behind: %q, %v", v.Mismatches, err)
	}
}

// TestConnectionCounts: each programmed port's counter is read back under
// its key; nothing before the first sync or after a cleanup.
func TestConnectionCounts(t *testing.T) {
	f := newFake(false)
	p := newProxier(f, false, testMark)
	if c, err := p.ConnectionCounts(t.Context()); err != nil || c != nil {
		t.Fatalf("before a sync: %v, %v", c, err)
	}
	mustSync(t, p, testState(), true)
	n := uint64(7)
	f.Table.Counters[counterName(webKey)].Packets = &n
	c, err := p.ConnectionCounts(t.Context())
	if err != nil || c[webKey] != 7 || len(c) != 1 {
		t.Errorf("counts = %v, %v; want %v: 7", c, err, webKey)
	}
	if err := p.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if c, _ := p.ConnectionCounts(t.Context()); c != nil {
		t.Errorf("after cleanup: %v", c)
	}
}

// TestUndivertedAfterFlush: the repair of a table found gone forgets the
// flows without DNAT of every VIP it serves, not only of the ports it
// newly serves: any of them may have been tried while the table was gone.
func TestUndivertedAfterFlush(t *testing.T) {
	ct := &recordingConntrack{}
	f := newFake(false)
	p := New(Options{NFT: f, MasqueradeMark: testMark, Conntrack: ct})
	mustSync(t, p, testState(), true)
	first := len(ct.undiverted)
	if first == 0 {
		t.Fatal("the first sync forgets no flow without DNAT")
	}
	ct.undiverted = nil
	mustSync(t, p, testState(), true)
	if len(ct.undiverted) != 0 {
		t.Fatalf("a full sync without a flush forgets %v", ct.undiverted)
	}
	tx := f.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := f.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	if m, _ := p.Missing(t.Context()); len(m) != 1 {
		t.Fatalf("deleted table: Missing = %q", m)
	}
	mustSync(t, p, testState(), true)
	if len(ct.undiverted) != first {
		t.Errorf("the repair forgets the flows without DNAT of %v, want all %d VIPs", ct.undiverted, first)
	}
}
