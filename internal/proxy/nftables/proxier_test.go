package nftables

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/knftables"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/model/modeltest"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
)

// The tests here run the real Proxier against knftables' Fake and check
// what packets do with the result, through the tracer of trace_test.go.

const testMark = 0x4000

const (
	hostIP   = "192.168.0.5"  // source of packets from local processes
	remoteIP = "192.168.1.20" // source of routed packets from routed_clients
	stranger = "172.16.9.9"   // source of routed packets from elsewhere
	hostIP6  = "fd00:ffff::5"
	remote6  = "fd00:ffff::20"
	strange6 = "fd00:eeee::9"
)

var (
	svc           = modeltest.Svc
	withEndpoints = modeltest.WithEndpoints
	withAffinity  = modeltest.WithAffinity
	cluster       = modeltest.Cluster
	state         = modeltest.State
)

var (
	alphaCIDRs = modeltest.AlphaCIDRs
	testState  = modeltest.TwoClusters
)

var testRouted = []netip.Prefix{netip.MustParsePrefix("192.168.1.0/24"), netip.MustParsePrefix("fd00:ffff::/120")}

func newFake(v6 bool) *knftables.Fake { return knftables.NewFake(familyOf(v6).nft, TableName) }

func newProxier(f knftables.Interface, v6 bool, mark uint32) *Proxier {
	return New(Options{NFT: f, IPv6: v6, MasqueradeMark: mark, RoutedClients: testRouted})
}

func mustSync(t *testing.T, p *Proxier, st *model.State, full bool) {
	t.Helper()
	if err := p.Sync(t.Context(), st, full); err != nil {
		t.Fatalf("Sync(full=%v): %v", full, err)
	}
}

func local(proto, dst string, port uint16) packet {
	src := hostIP
	if strings.Contains(dst, ":") {
		src = hostIP6
	}
	return packet{src: src, dst: dst, proto: proto, dport: port}
}

func tcp(dst string, port uint16) packet  { return local("tcp", dst, port) }
func udp(dst string, port uint16) packet  { return local("udp", dst, port) }
func sctp(dst string, port uint16) packet { return local("sctp", dst, port) }

// viaRoute is the packet from a routed_clients host; fromStranger from a
// host routed through this one that is not in routed_clients.
func (p packet) viaRoute() packet {
	p.routed, p.src = true, remoteIP
	if strings.Contains(p.dst, ":") {
		p.src = remote6
	}
	return p
}

func (p packet) fromStranger() packet {
	p.routed, p.src = true, stranger
	if strings.Contains(p.dst, ":") {
		p.src = strange6
	}
	return p
}

func checkFlow(t *testing.T, f *knftables.Fake, pkt packet, want []outcome, seen ...string) {
	t.Helper()
	got, walked := tracePacket(t, f, pkt, seen...)
	want = mergeOutcomes(want)
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = got[i].key() == want[i].key() && math.Abs(got[i].P-want[i].P) < 1e-9
	}
	if !ok {
		t.Errorf("packet %v:\n got: %v\nwant: %v\nrules walked:\n%s", pkt, got, want, strings.Join(walked, "\n"))
	}
}

var untouched = []outcome{{P: 1}}

func rejected(with string) []outcome { return []outcome{{Reject: with, P: 1}} }

// shares is an even spread over endpoints, counted in k's counter.
func shares(k model.PortKey, masq bool, eps ...string) []outcome {
	var out []outcome
	for _, ep := range eps {
		out = append(out, outcome{DNAT: ep, Masq: masq, Counted: counterName(k), P: 1 / float64(len(eps))})
	}
	return out
}

func key(cluster, ns, name, port string, pr model.Protocol, v6 bool) model.PortKey {
	return model.PortKey{Cluster: cluster, Namespace: ns, Name: name, Port: port, Protocol: pr, IPv6: v6}
}

var (
	webKey   = key("alpha", "default", "web", "http", model.TCP, false)
	dnsKey   = key("alpha", "kube-system", "dns", "dns", model.UDP, false)
	sigKey   = key("alpha", "default", "sig", "", model.SCTP, false)
	apiKey   = key("beta", "default", "api", "https", model.TCP, false)
	web6Key  = key("alpha", "default", "web", "http", model.TCP, true)
	multiKey = key("alpha", "default", "multi", "https", model.TCP, false)
)

type flowCase struct {
	name string
	pkt  packet
	want []outcome
}

// runFlows checks each case sent by a local process and by a routed
// client, and that a stranger's routed packet is left alone.
func runFlows(t *testing.T, f *knftables.Fake, cases []flowCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			checkFlow(t, f, c.pkt, c.want)
			checkFlow(t, f, c.pkt.viaRoute(), c.want)
			checkFlow(t, f, c.pkt.fromStranger(), untouched)
		})
	}
}

func TestPacketFlowIPv4(t *testing.T) {
	f := newFake(false)
	mustSync(t, newProxier(f, false, testMark), testState(), true)
	runFlows(t, f, []flowCase{
		{"tcp service, 3 endpoints", tcp("10.96.0.10", 80), shares(webKey, true, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080")},
		{"other port of a service IP", tcp("10.96.0.10", 81), untouched},
		{"other protocol of a service port", udp("10.96.0.10", 80), untouched},
		{"unused IP in the service CIDR", tcp("10.96.0.99", 80), untouched},
		{"IP outside every service CIDR", tcp("192.0.2.1", 80), untouched},
		{"udp service", udp("10.96.0.11", 53), shares(dnsKey, true, "10.0.2.1:5353", "10.0.2.2:5353")},
		{"tcp to a udp service port", tcp("10.96.0.11", 53), untouched},
		{"sctp service", sctp("10.96.0.12", 9999), shares(sigKey, true, "10.0.3.1:9999")},
		{"multi-port, second port", tcp("10.96.0.13", 443), shares(multiKey, true, "10.0.4.1:8443", "10.0.4.2:8443")},
		{"no endpoints, tcp", tcp("10.96.0.14", 80), rejected("tcp-reset")},
		{"no endpoints, udp", udp("10.96.0.14", 53), rejected("icmp-port-unreachable")},
		{"no endpoints, other port", tcp("10.96.0.14", 81), untouched},
		{"second cluster", tcp("10.97.0.10", 443), shares(apiKey, true, "10.1.0.1:6443", "10.1.0.2:6443")},
		{"first cluster's IP in the second's CIDR", tcp("10.97.0.10", 80), untouched},
	})
	if d := f.Dump(); strings.Contains(d, "fd00:") || strings.Contains(d, "ip6 ") {
		t.Errorf("the IPv4 table holds IPv6:\n%s", d)
	}
}

func TestPacketFlowIPv6(t *testing.T) {
	f := newFake(true)
	mustSync(t, newProxier(f, true, testMark), testState(), true)
	runFlows(t, f, []flowCase{
		{"tcp service, 3 endpoints", tcp("fd00:96::10", 80), shares(web6Key, true, "[fd00:1::1]:8080", "[fd00:1::2]:8080", "[fd00:1::3]:8080")},
		{"other port of a service IP", tcp("fd00:96::10", 81), untouched},
		{"unused IP in the service CIDR", tcp("fd00:96::99", 80), untouched},
		{"no endpoints, tcp", tcp("fd00:96::14", 80), rejected("tcp-reset")},
		{"no endpoints, udp", udp("fd00:96::14", 53), rejected("icmp-port-unreachable")},
		{"second cluster", tcp("fd00:97::10", 443), shares(key("beta", "default", "api", "https", model.TCP, true), true, "[fd00:3::1]:6443")},
	})
	if d := f.Dump(); strings.Contains(d, "10.96.") || strings.Contains(d, " ip daddr") {
		t.Errorf("the IPv6 table holds IPv4:\n%s", d)
	}
}

func TestSessionAffinity(t *testing.T) {
	web := withAffinity(svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"), 3*time.Hour)
	f := newFake(false)
	mustSync(t, newProxier(f, false, testMark), state(cluster("alpha", true, alphaCIDRs, web)), true)
	set := func(ep string) string { return affinitySet(web.Key, netip.MustParseAddrPort(ep), 10800) }
	eps := []string{"10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"}
	for _, ep := range eps {
		s := f.Table.Sets[set(ep)]
		if s == nil || s.Timeout == nil || *s.Timeout != 3*time.Hour || !slices.Contains(s.Flags, knftables.DynamicFlag) {
			t.Fatalf("affinity set of %s: %+v", ep, s)
		}
	}
	// A new client is spread evenly, and remembered at its endpoint.
	var want []outcome
	for _, ep := range eps {
		want = append(want, outcome{DNAT: ep, Masq: true, Counted: counterName(web.Key), Update: set(ep), P: 1.0 / 3})
	}
	checkFlow(t, f, tcp("10.96.0.10", 80), want)
	checkFlow(t, f, tcp("10.96.0.10", 80).viaRoute(), want)
	// A client seen at an endpoint goes back there, whatever numgen says.
	for _, ep := range eps {
		checkFlow(t, f, tcp("10.96.0.10", 80), []outcome{{DNAT: ep, Masq: true, Counted: counterName(web.Key), Update: set(ep), P: 1}}, set(ep))
	}
	// Another service's sets do not count.
	checkFlow(t, f, tcp("10.96.0.10", 80), want, affinitySet(dnsKey, netip.MustParseAddrPort("10.0.1.1:8080"), 10800))
}

func TestMasqueradeOff(t *testing.T) {
	f := newFake(false)
	mustSync(t, newProxier(f, false, 0), testState(), true)
	runFlows(t, f, []flowCase{
		{"tcp service", tcp("10.96.0.10", 80), shares(webKey, false, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080")},
		{"no endpoints", tcp("10.96.0.14", 80), rejected("tcp-reset")},
	})
	if d := f.Dump(); strings.Contains(d, "meta mark") || strings.Contains(d, "masquerade fully-random") {
		t.Errorf("masquerading is off, but the table marks or masquerades:\n%s", d)
	}
}

// wantFlow is what a packet to sp at addr must become.
func wantFlow(sp *model.ServicePort, masq bool) []outcome {
	if len(sp.Endpoints) == 0 {
		if sp.Key.Protocol == model.TCP {
			return rejected("tcp-reset")
		}
		return rejected("icmp-port-unreachable")
	}
	var out []outcome
	for _, ep := range sp.Endpoints {
		o := outcome{DNAT: ep.Addr.String(), Masq: masq, Counted: counterName(sp.Key), P: 1 / float64(len(sp.Endpoints))}
		if sp.Affinity > 0 {
			o.Update = affinitySet(sp.Key, ep.Addr, int64(sp.Affinity.Seconds()))
		}
		out = append(out, o)
	}
	return out
}

// checkAllFlows traces packets to every address of every known port of
// st in the family, sent locally and routed.
func checkAllFlows(t *testing.T, f *knftables.Fake, st *model.State, v6 bool) {
	t.Helper()
	for _, c := range st.Clusters {
		if !c.PortsKnown() {
			continue
		}
		for _, k := range slices.SortedFunc(func(yield func(model.PortKey) bool) {
			for k := range c.Ports {
				if !yield(k) {
					return
				}
			}
		}, model.PortKey.Compare) {
			sp := c.Ports[k]
			if k.IPv6 != v6 {
				continue
			}
			for _, a := range sp.Addrs() {
				pkt := local(proto(k.Protocol), a.String(), sp.Port)
				checkFlow(t, f, pkt, wantFlow(sp, true))
				checkFlow(t, f, pkt.viaRoute(), wantFlow(sp, true))
			}
		}
	}
}

// canonicalDump is f.Dump() with the elements of each map and set sorted:
// a partial sync appends where a full one writes in its own order, and
// their order means nothing.
func canonicalDump(f *knftables.Fake) string {
	var elems, rest []string
	for _, l := range strings.Split(f.Dump(), "\n") {
		if strings.HasPrefix(l, "add element ") {
			elems = append(elems, l)
		} else {
			rest = append(rest, l)
		}
	}
	sort.Strings(elems)
	return strings.Join(append(rest, elems...), "\n")
}

// checkSameAsFull: what f holds is what a fresh Proxier's full sync of st
// writes into an empty table.
func checkSameAsFull(t *testing.T, f *knftables.Fake, st *model.State, v6 bool) {
	t.Helper()
	fresh := newFake(v6)
	mustSync(t, newProxier(fresh, v6, testMark), st, true)
	if got, want := canonicalDump(f), canonicalDump(fresh); got != want {
		t.Errorf("after partial syncs the table differs from a full sync's:\n%s", lineDiff(got, want))
	}
}

func lineDiff(got, want string) string {
	g, w := strings.Split(got, "\n"), strings.Split(want, "\n")
	var b strings.Builder
	for _, l := range g {
		if !slices.Contains(w, l) {
			fmt.Fprintf(&b, "+ %s\n", l)
		}
	}
	for _, l := range w {
		if !slices.Contains(g, l) {
			fmt.Fprintf(&b, "- %s\n", l)
		}
	}
	return b.String()
}

// countingNFT counts transactions, and fails the next one when asked.
type countingNFT struct {
	*knftables.Fake
	runs     int
	failNext bool
}

func (c *countingNFT) Run(ctx context.Context, tx *knftables.Transaction) error {
	c.runs++
	if c.failNext {
		c.failNext = false
		return errors.New("injected failure")
	}
	return c.Fake.Run(ctx, tx)
}

// TestIncrementalEqualsFull is the key property of partial syncs: after
// any sequence of changes, each applied by a partial sync, the table
// holds what a full sync of the final state writes, packets go where the
// state says, and a sync with nothing to change runs no transaction.
func TestIncrementalEqualsFull(t *testing.T) {
	for _, v6 := range []bool{false, true} {
		t.Run(fmt.Sprintf("ipv6=%v", v6), func(t *testing.T) {
			w := &modeltest.World{Rng: rand.New(rand.NewPCG(1, 2)), St: testState()}
			f := &countingNFT{Fake: newFake(v6)}
			p := newProxier(f, v6, testMark)
			mustSync(t, p, w.St, true)
			for i, step := range w.Steps(80, "alpha", "beta") {
				what := w.Apply(step, modeltest.Changes)
				before := f.runs
				if err := p.Sync(t.Context(), w.St, false); err != nil {
					t.Fatalf("step %d (%s): %v", i, step, err)
				}
				if what == "no change" && f.runs != before {
					t.Errorf("step %d (%s): a sync without changes ran a transaction:\n%s", i, step, f.LastTransaction)
				}
				if f.runs != before {
					if tx := f.LastTransaction.String(); strings.Contains(tx, "flush map") || strings.Contains(tx, "flush set") {
						t.Errorf("step %d (%s): the sync was full, want partial:\n%s", i, step, tx)
					}
				}
				checkSameAsFull(t, f.Fake, w.St, v6)
				checkAllFlows(t, f.Fake, w.St, v6)
				if t.Failed() {
					t.Fatalf("step %d (%s) failed", i, step)
				}
			}
		})
	}
}

// TestEndpointChangeTouchesOnePort: one endpoint change writes that
// port's chains and nothing of any other port.
func TestEndpointChangeTouchesOnePort(t *testing.T) {
	f := newFake(false)
	p := newProxier(f, false, testMark)
	st := testState()
	mustSync(t, p, st, true)
	st = modeltest.CloneState(st)
	alpha := modeltest.ClusterOf(st, "alpha")
	alpha.Ports[webKey] = withEndpoints(alpha.Ports[webKey], "10.0.1.1:8080", "10.0.1.4:8080")
	mustSync(t, p, st, false)
	tx := f.LastTransaction.String()
	for _, k := range []model.PortKey{dnsKey, sigKey, apiKey, multiKey} {
		if strings.Contains(tx, portHash(k)) {
			t.Errorf("the transaction touches %v, which did not change:\n%s", k, tx)
		}
	}
	if !strings.Contains(tx, "add rule ip kube-outpost "+serviceChain(webKey)+" meta l4proto tcp dnat to 10.0.1.4:8080") {
		t.Errorf("the service chain does not DNAT to the new endpoint:\n%s", tx)
	}
	if strings.Contains(tx, "chain ip kube-outpost "+prefixEndpoint) {
		t.Errorf("a port without affinity has endpoint chains:\n%s", tx)
	}
	if strings.Contains(tx, "element") {
		t.Errorf("an endpoint change touches map elements:\n%s", tx)
	}
	checkFlow(t, f, tcp("10.96.0.10", 80), shares(webKey, true, "10.0.1.1:8080", "10.0.1.4:8080"))
	checkSameAsFull(t, f, st, false)
}

// TestAffinityEndpointChange: with ClientIP affinity each endpoint has a
// chain and a set; an endpoint that goes takes both, and the port's
// verdict map no longer leads to its chain.
func TestAffinityEndpointChange(t *testing.T) {
	f := newFake(false)
	p := newProxier(f, false, testMark)
	st := modeltest.CloneState(testState())
	alpha := modeltest.ClusterOf(st, "alpha")
	alpha.Ports[webKey] = withAffinity(alpha.Ports[webKey], time.Hour)
	mustSync(t, p, st, true)
	st = modeltest.CloneState(st)
	alpha = modeltest.ClusterOf(st, "alpha")
	alpha.Ports[webKey] = withEndpoints(alpha.Ports[webKey], "10.0.1.1:8080")
	mustSync(t, p, st, false)
	tx := f.LastTransaction.String()
	for _, gone := range []string{"10.0.1.2:8080", "10.0.1.3:8080"} {
		ep := netip.MustParseAddrPort(gone)
		for _, obj := range []string{"chain ip kube-outpost " + endpointChain(webKey, ep), "set ip kube-outpost " + affinitySet(webKey, ep, 3600)} {
			if !strings.Contains(tx, "delete "+obj) {
				t.Errorf("%s is not deleted:\n%s", obj, tx)
			}
		}
	}
	set := affinitySet(webKey, netip.MustParseAddrPort("10.0.1.1:8080"), 3600)
	checkFlow(t, f, tcp("10.96.0.10", 80), []outcome{{DNAT: "10.0.1.1:8080", Masq: true, Counted: counterName(webKey), Update: set, P: 1}})
	checkSameAsFull(t, f, st, false)
}

// TestUnsyncedClusterKeepsElements: a restart while beta's apiserver is
// down leaves beta's maps, sets and chains as they were, and rewrites
// alpha's.
func TestUnsyncedClusterKeepsElements(t *testing.T) {
	f := newFake(false)
	mustSync(t, newProxier(f, false, testMark), testState(), true)
	betaObjects := func() string {
		var out []string
		for _, l := range strings.Split(f.Dump(), "\n") {
			if strings.Contains(l, clusterTag("beta")) {
				out = append(out, l)
			}
		}
		return strings.Join(out, "\n")
	}
	before := betaObjects()
	st := testState()
	alpha, beta := modeltest.ClusterOf(st, "alpha"), modeltest.ClusterOf(st, "beta")
	beta.Synced, beta.Ports = false, nil
	delete(alpha.Ports, webKey)
	p := newProxier(f, false, testMark)
	mustSync(t, p, st, false) // the first sync of a process is full
	if got := betaObjects(); got != before {
		t.Errorf("beta's objects changed:\n%s", lineDiff(got, before))
	}
	checkFlow(t, f, tcp("10.97.0.10", 443), shares(apiKey, true, "10.1.0.1:6443", "10.1.0.2:6443"))
	checkFlow(t, f, tcp("10.96.0.10", 80), untouched)
	// A partial sync of alpha leaves beta alone too.
	st = modeltest.CloneState(st)
	alpha = modeltest.ClusterOf(st, "alpha")
	alpha.Ports[dnsKey] = withEndpoints(alpha.Ports[dnsKey])
	mustSync(t, p, st, false)
	if got := betaObjects(); got != before {
		t.Errorf("a partial sync changed beta's objects:\n%s", lineDiff(got, before))
	}
	// Once beta syncs, without its service, its objects go.
	st = modeltest.CloneState(st)
	modeltest.ClusterOf(st, "beta").Synced = true
	mustSync(t, p, st, false)
	checkFlow(t, f, tcp("10.97.0.10", 443), untouched)
	checkSameAsFull(t, f, st, false)
}

func TestRemoveCluster(t *testing.T) {
	f := newFake(false)
	p := newProxier(f, false, testMark)
	mustSync(t, p, testState(), true)
	mustSync(t, p, state(modeltest.ClusterOf(testState(), "alpha")), false)
	if d := f.Dump(); strings.Contains(d, clusterTag("beta")) {
		t.Errorf("a removed cluster's objects are left:\n%s", d)
	}
	checkFlow(t, f, tcp("10.97.0.10", 443), untouched)
}

func TestFailedTransaction(t *testing.T) {
	f := &countingNFT{Fake: newFake(false)}
	p := newProxier(f, false, testMark)
	mustSync(t, p, testState(), true)
	st := modeltest.CloneState(testState())
	alpha := modeltest.ClusterOf(st, "alpha")
	alpha.Ports[webKey] = withEndpoints(alpha.Ports[webKey], "10.0.1.9:8080")
	f.failNext = true
	err := p.Sync(t.Context(), st, false)
	var tf proxy.TransactionFailure
	if !errors.As(err, &tf) {
		t.Fatalf("a refused transaction gives %v, want a proxy.TransactionFailure", err)
	}
	checkFlow(t, f.Fake, tcp("10.96.0.10", 80), shares(webKey, true, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"))
	mustSync(t, p, st, false)
	if tx := f.LastTransaction.String(); !strings.Contains(tx, "flush map") {
		t.Errorf("the sync after a failure is not full:\n%s", tx)
	}
	checkFlow(t, f.Fake, tcp("10.96.0.10", 80), shares(webKey, true, "10.0.1.9:8080"))
}

// TestRepairAfterFlush: a table deleted behind our back (nft flush
// ruleset) is found by the canary, and a full sync puts it back.
func TestRepairAfterFlush(t *testing.T) {
	f := newFake(false)
	p := newProxier(f, false, testMark)
	if m, err := p.Missing(t.Context()); err != nil || m != nil {
		t.Fatalf("before the first sync: Missing = %q, %v", m, err)
	}
	mustSync(t, p, testState(), true)
	if m, err := p.Missing(t.Context()); err != nil || m != nil {
		t.Fatalf("after a sync: Missing = %q, %v", m, err)
	}
	tx := f.NewTransaction()
	tx.Flush(&knftables.Chain{Name: chainCanary})
	if err := f.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	if m, _ := p.Missing(t.Context()); len(m) != 1 {
		t.Errorf("flushed canary: Missing = %q", m)
	}
	tx = f.NewTransaction()
	tx.Delete(&knftables.Table{})
	if err := f.Run(t.Context(), tx); err != nil {
		t.Fatal(err)
	}
	if m, _ := p.Missing(t.Context()); len(m) != 1 {
		t.Errorf("deleted table: Missing = %q", m)
	}
	mustSync(t, p, testState(), true)
	checkAllFlows(t, f, testState(), false)
	if m, _ := p.Missing(t.Context()); m != nil {
		t.Errorf("after the repair: Missing = %q", m)
	}
}

// TestCleanup: cleanup deletes our table, a second one finds nothing to
// do, and a sync after it writes everything again. (That it leaves other
// tables byte for byte as they were is a kernel test: the fake holds one
// table.)
func TestCleanup(t *testing.T) {
	f := newFake(false)
	p := newProxier(f, false, testMark)
	mustSync(t, p, testState(), true)
	if err := p.Cleanup(t.Context()); err != nil {
		t.Fatal(err)
	}
	if d := f.Dump(); d != "" {
		t.Errorf("after cleanup:\n%s", d)
	}
	if err := p.Cleanup(t.Context()); err != nil {
		t.Errorf("a second cleanup: %v", err)
	}
	mustSync(t, p, testState(), false)
	checkAllFlows(t, f, testState(), false)
}

// TestSameStateSameTransaction: the order ports come in makes no
// difference to what is written.
func TestSameStateSameTransaction(t *testing.T) {
	var dumps []string
	for range 3 {
		f := newFake(false)
		mustSync(t, newProxier(f, false, testMark), testState(), true)
		dumps = append(dumps, f.LastTransaction.String())
	}
	if dumps[0] != dumps[1] || dumps[1] != dumps[2] {
		t.Errorf("the same state makes different transactions:\n%s", lineDiff(dumps[0], dumps[1]))
	}
}
