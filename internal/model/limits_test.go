package model

import (
	"fmt"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

var limitsEpoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func bornAt(d time.Duration) svcOpt {
	return func(s *corev1.Service) { s.CreationTimestamp = metav1.NewTime(limitsEpoch.Add(d)) }
}

// nthIP is the n-th address of 10.0.0.0/8 (n < 2^24).
func nthIP(n int) string {
	return netip.AddrFrom4([4]byte{10, byte(n >> 16), byte(n >> 8), byte(n)}).String()
}

// bigSlices are the slices of service svc holding n ready endpoints
// 10.0.0.1 on, 1,000 to a slice (the most a slice may hold), with ports.
func bigSlices(svc string, n int, ports []discoveryv1.EndpointPort) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for i := 0; i < n; i += 1000 {
		var e []discoveryv1.Endpoint
		for j := i; j < min(n, i+1000); j++ {
			e = append(e, readyEP(nthIP(j+1)))
		}
		out = append(out, newSlice(svc, fmt.Sprintf("%s-%d", svc, i/1000), discoveryv1.AddressTypeIPv4, ports, e...))
	}
	return out
}

// limitedStore is a test store whose cluster c1 has limits lim.
func limitedStore(t *testing.T, lim Limits) *testStore {
	t.Helper()
	ts := newTestStore(t)
	cfg := testCfg
	cfg.MaxServices, cfg.MaxEndpointsPerPort, cfg.MaxEndpoints = lim.MaxServices, lim.MaxEndpointsPerPort, lim.MaxEndpoints
	ts.SetClusters([]ClusterConfig{cfg})
	ts.changes = 0
	return ts
}

func refusalCount(ts *testStore, r RefusalReason) uint64 {
	for _, c := range ts.RefusalCounts() {
		if c.Cluster == "c1" && c.Reason == r {
			return c.Count
		}
	}
	return 0
}

func TestMaxEndpointsPerPort(t *testing.T) {
	ts := newTestStore(t) // the default, 1,000
	ts.UpsertService("c1", webSvc())
	// 2,500 endpoints, in slices that arrive last-first: the ones kept
	// are the first in address order, whatever the order of the slices.
	sl := bigSlices("web", 2500, slicePorts)
	for i := len(sl) - 1; i >= 0; i-- {
		ts.UpsertSlice("c1", sl[i])
	}
	p := ts.port(t, webKey)
	if len(p.Endpoints) != config.DefaultMaxEndpointsPerPort {
		t.Fatalf("%d endpoints programmed, want %d", len(p.Endpoints), config.DefaultMaxEndpointsPerPort)
	}
	if first, last := p.Endpoints[0].Addr.String(), p.Endpoints[999].Addr.String(); first != "10.0.0.1:8080" || last != nthIP(1000)+":8080" {
		t.Errorf("programmed %s .. %s, want the first 1,000 addresses", first, last)
	}
	over := 0
	for _, e := range p.Excluded {
		if e.Reason == ExcludedOverLimit {
			over++
		}
	}
	if over != 1500 || len(p.Excluded) != 1500 {
		t.Errorf("%d endpoints excluded as over-limit (%d excluded), want 1500", over, len(p.Excluded))
	}
	if n := refusalCount(ts, ReasonMaxEndpointsPerPort); n != 1 {
		t.Errorf("limit_endpoints_per_port counted %d times, want 1", n)
	}
	warned := ts.log.count()
	if warned != 1 || !strings.Contains(ts.log.warns[0], "max_endpoints_per_port") {
		t.Errorf("warnings %q, want one naming max_endpoints_per_port", ts.log.warns)
	}

	// An endpoint beyond the cap flaps: the rules stay, and the same
	// problem is not warned about again.
	flapped := bigSlices("web", 2500, slicePorts)[2]
	flapped.Endpoints = flapped.Endpoints[1:]
	ts.UpsertSlice("c1", flapped)
	if q := ts.port(t, webKey); !slices.Equal(q.Endpoints, p.Endpoints) {
		t.Error("a change beyond the cap changed the programmed endpoints")
	}
	if ts.log.count() != warned || refusalCount(ts, ReasonMaxEndpointsPerPort) != 1 {
		t.Errorf("a flap beyond the cap warned again: %q", ts.log.warns)
	}

	// Below the cap again: no problem left.
	for _, es := range sl[1:] {
		ts.DeleteSlice("c1", es)
	}
	if refs := ts.Refusals(); len(refs) != 0 {
		t.Errorf("refusals below the cap: %+v", refs)
	}
	if n := len(ts.port(t, webKey).Endpoints); n != 1000 {
		t.Errorf("%d endpoints, want 1000", n)
	}
}

func TestMaxEndpointsPerPortConfigured(t *testing.T) {
	ts := limitedStore(t, Limits{MaxEndpointsPerPort: 3})
	ts.UpsertService("c1", webSvc())
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.9"), readyEP("10.0.0.1"), readyEP("10.0.0.5"), readyEP("10.0.0.3"),
		notReadyEP("10.0.0.2")))
	p := ts.port(t, webKey)
	checkEndpoints(t, p, "10.0.0.1:8080", "10.0.0.3:8080", "10.0.0.5:8080")
	got := fmtExcluded(p.Excluded)
	if len(got) != 2 || !strings.Contains(got[0], "not-ready") || !strings.Contains(got[1], "10.0.0.9:8080 over-limit") {
		t.Errorf("excluded %q, want 10.0.0.2 not ready and 10.0.0.9 over the limit", got)
	}
	// internalTrafficPolicy: Local programs nothing: nothing is over.
	ts.UpsertService("c1", webSvc(func(s *corev1.Service) {
		s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyLocal)
	}))
	if refs := ts.Refusals(); len(refs) != 0 {
		t.Errorf("refusals of a port that programs nothing: %+v", refs)
	}
}

// TestMaxEndpointsRefusesHugeService: a Service with 1,000 ports and slices
// with thousands of endpoints would be millions of entries; it is refused
// whole, without being built, and leaves the other services alone.
func TestMaxEndpointsRefusesHugeService(t *testing.T) {
	ts := newTestStore(t)
	ts.UpsertService("c1", webSvc(bornAt(0)))
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1")))

	var ports []corev1.ServicePort
	var sports []discoveryv1.EndpointPort
	for i := range 1000 {
		name := fmt.Sprintf("p%d", i)
		ports = append(ports, svcPort(name, corev1.ProtocolTCP, int32(1000+i)))
		sports = append(sports, slicePortOf(name, tcp, int32(2000+i)))
	}
	for _, es := range bigSlices("huge", 5000, sports) {
		ts.UpsertSlice("c1", es)
	}
	start := time.Now()
	ts.UpsertService("c1", newSvc("huge", []string{"10.96.0.20"}, ports, bornAt(time.Hour)))
	took := time.Since(start)

	for k := range ts.cluster(t, "c1").Ports {
		if k.Name == "huge" {
			t.Fatalf("port %s of the huge service programmed", k)
		}
	}
	refs := ts.Refusals()
	if len(refs) != 1 || refs[0].Name != "huge" || !strings.HasPrefix(refs[0].Reason, overEndpointsPrefix) {
		t.Fatalf("refusals %+v, want the huge service over max_endpoints", refs)
	}
	if n := refusalCount(ts, ReasonMaxEndpoints); n != 1 {
		t.Errorf("limit_endpoints counted %d times, want 1", n)
	}
	checkEndpoints(t, ts.port(t, webKey), "10.0.0.1:8080")
	// Not a timed assertion, a report: building it would take seconds.
	t.Logf("refusing a service of 1,000 ports x 5,000 endpoints took %v", took)

	// Younger services still fit in the room left.
	ts.UpsertService("c1", newSvc("small", []string{"10.96.0.30"}, webPorts, bornAt(2*time.Hour)))
	if ts.port(t, key("small", "", TCP, false)) == nil {
		t.Error("a younger small service was refused after a huge one")
	}
	// Its slices shrink below the limit: it is built.
	for _, es := range bigSlices("huge", 5000, sports)[1:] {
		ts.DeleteSlice("c1", es)
	}
	ts.UpsertSlice("c1", newSlice("huge", "huge-0", discoveryv1.AddressTypeIPv4, sports, readyEP("10.1.0.1")))
	if n := countPorts(ts, "huge"); n != 1000 {
		t.Errorf("%d ports of the shrunk service programmed, want 1000", n)
	}
}

func countPorts(ts *testStore, name string) int {
	n := 0
	for _, c := range ts.Snapshot().Clusters {
		for k := range c.Ports {
			if k.Name == name {
				n++
			}
		}
	}
	return n
}

// TestMaxEndpointsOldestFirst: the budget goes to the oldest services; a
// younger one that does not fit is refused and gets in when room is made.
func TestMaxEndpointsOldestFirst(t *testing.T) {
	ts := limitedStore(t, Limits{MaxEndpoints: 25})
	svc := func(name string, ip string, age time.Duration) *corev1.Service {
		return newSvc(name, []string{ip}, webPorts, bornAt(age))
	}
	// Each costs its endpoints plus one for its slice.
	fill := func(name string, n int) {
		var e []discoveryv1.Endpoint
		for i := range n {
			e = append(e, readyEP(fmt.Sprintf("10.1.%d.%d", len(name), i+1)))
		}
		ts.UpsertSlice("c1", newSlice(name, name+"-1", discoveryv1.AddressTypeIPv4, slicePorts, e...))
	}
	ts.UpsertService("c1", svc("young", "10.96.0.3", 3*time.Hour))
	fill("young", 9) // 10
	ts.UpsertService("c1", svc("old", "10.96.0.1", time.Hour))
	fill("old", 9) // 10
	ts.UpsertService("c1", svc("mid", "10.96.0.2", 2*time.Hour))
	fill("mid", 9) // 10: 30 > 25, the youngest is out
	if countPorts(ts, "old") != 1 || countPorts(ts, "mid") != 1 || countPorts(ts, "young") != 0 {
		t.Fatalf("old %d mid %d young %d ports, want the two oldest", countPorts(ts, "old"), countPorts(ts, "mid"), countPorts(ts, "young"))
	}
	// The old one grows past the room: it is refused, the others fit.
	fill("old", 30) // 31, more than the whole budget
	if countPorts(ts, "old") != 0 || countPorts(ts, "mid") != 1 || countPorts(ts, "young") != 1 {
		t.Fatalf("after old grew: old %d mid %d young %d ports", countPorts(ts, "old"), countPorts(ts, "mid"), countPorts(ts, "young"))
	}
	// And shrinks back: it is the oldest, the youngest goes again.
	fill("old", 9)
	if countPorts(ts, "old") != 1 || countPorts(ts, "mid") != 1 || countPorts(ts, "young") != 0 {
		t.Fatalf("after old shrank: old %d mid %d young %d ports", countPorts(ts, "old"), countPorts(ts, "mid"), countPorts(ts, "young"))
	}
	// The middle one is deleted: room for the youngest.
	ts.DeleteService("c1", testNS, "mid")
	if countPorts(ts, "young") != 1 {
		t.Fatal("a refused service did not get in when room was made")
	}
}

// TestMaxServicesFlood: a flood of new services past max_services cannot
// push out the services that were there before it, whatever the order of
// the events, and what is refused is counted, reported and warned once.
func TestMaxServicesFlood(t *testing.T) {
	const limit = 200
	type ev struct {
		svc   *corev1.Service
		slice *discoveryv1.EndpointSlice
	}
	var honest, flood []ev
	for i := range 20 {
		name := fmt.Sprintf("honest-%02d", i)
		honest = append(honest, ev{
			newSvc(name, []string{nthIP96(i)}, webPorts, bornAt(time.Duration(i)*time.Minute), func(s *corev1.Service) { s.Namespace = "zz-prod" }),
			withNS(newSlice(name, name+"-1", discoveryv1.AddressTypeIPv4, slicePorts, readyEP(nthIP(i+1))), "zz-prod"),
		})
	}
	for i := range 1000 {
		name := fmt.Sprintf("flood-%04d", i)
		// All in one second, in a namespace that sorts first.
		flood = append(flood, ev{newSvc(name, []string{nthIP96(100 + i)}, webPorts, bornAt(24*time.Hour), func(s *corev1.Service) { s.Namespace = "aa" }), nil})
	}
	run := func(order []ev) *testStore {
		ts := limitedStore(t, Limits{MaxServices: limit})
		for _, e := range order {
			if e.slice != nil {
				ts.UpsertSlice("c1", e.slice)
			}
			ts.UpsertService("c1", e.svc)
		}
		return ts
	}
	// The honest services first, then the flood; and everything shuffled,
	// as a restart's first list could have it.
	a := run(append(slices.Clone(honest), flood...))
	mixed := append(slices.Clone(honest), flood...)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(mixed), func(i, j int) { mixed[i], mixed[j] = mixed[j], mixed[i] })
	b := run(mixed)

	for _, ts := range []*testStore{a, b} {
		ports := ts.cluster(t, "c1").Ports
		if len(ports) != limit {
			t.Fatalf("%d ports programmed, want %d", len(ports), limit)
		}
		for _, h := range honest {
			if p := ports[PortKey{Cluster: "c1", Namespace: "zz-prod", Name: h.svc.Name, Protocol: TCP}]; p == nil || len(p.Endpoints) != 1 {
				t.Fatalf("honest service %s not programmed with its endpoint: %v", h.svc.Name, p)
			}
		}
		refs := ts.Refusals()
		if len(refs) != 1020-limit {
			t.Fatalf("%d refusals, want %d", len(refs), 1020-limit)
		}
		for _, r := range refs {
			if r.Namespace != "aa" || !strings.HasPrefix(r.Reason, overServicesPrefix) {
				t.Fatalf("refusal %+v, want only flood services over max_services", r)
			}
		}
	}
	if !slices.Equal(a.Refusals(), b.Refusals()) {
		t.Error("the refused services depend on the order of the events")
	}
	// In order, each refused newcomer is one warning and one count.
	if n := refusalCount(a, ReasonMaxServices); n != 1020-limit {
		t.Errorf("limit_services counted %d times, want %d", n, 1020-limit)
	}
	// The log lines are rate-limited per cluster (warnlog.go): the burst,
	// then the rest suppressed; the counts above still hold every one.
	if n := a.log.count(); n == 0 || n > warnBurst {
		t.Errorf("%d warnings, want between 1 and the burst of %d", n, warnBurst)
	}

	// An admitted flood service goes: the first refused one (by name,
	// within the same second) takes its place.
	a.DeleteService("c1", "aa", "flood-0000")
	ports := a.cluster(t, "c1").Ports
	if len(ports) != limit || ports[PortKey{Cluster: "c1", Namespace: "aa", Name: fmt.Sprintf("flood-%04d", limit-20), Protocol: TCP}] == nil {
		t.Errorf("after a delete: %d ports, or flood-%04d not taken in", len(ports), limit-20)
	}
}

func nthIP96(n int) string { return netip.AddrFrom4([4]byte{10, 96, byte(n >> 8), byte(n)}).String() }

func withNS(es *discoveryv1.EndpointSlice, ns string) *discoveryv1.EndpointSlice {
	es.Namespace = ns
	return es
}

// TestLimitsPerCluster: one cluster over its limits leaves another alone.
func TestLimitsPerCluster(t *testing.T) {
	ts := newTestStore(t)
	c1 := testCfg
	c1.MaxServices = 1
	c2 := ClusterConfig{Cluster: config.Cluster{Name: "c2", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.97.0.0/16")}}}
	ts.SetClusters([]ClusterConfig{c1, c2})
	for i := range 5 {
		ts.UpsertService("c1", newSvc(fmt.Sprintf("s%d", i), []string{nthIP96(i)}, webPorts, bornAt(time.Duration(i))))
		ts.UpsertService("c2", newSvc(fmt.Sprintf("s%d", i), []string{fmt.Sprintf("10.97.0.%d", i)}, webPorts))
	}
	if n1, n2 := len(ts.cluster(t, "c1").Ports), len(ts.cluster(t, "c2").Ports); n1 != 1 || n2 != 5 {
		t.Errorf("c1 %d ports, c2 %d, want 1 and 5", n1, n2)
	}
	// A reload that raises the limit takes the refused ones in.
	c1.MaxServices = 10
	ts.SetClusters([]ClusterConfig{c1, c2})
	if n := len(ts.cluster(t, "c1").Ports); n != 5 {
		t.Errorf("after raising max_services: %d ports, want 5", n)
	}
}

func TestLimitRefusalReasons(t *testing.T) {
	for _, tt := range []struct {
		lim  Limits
		want RefusalReason
	}{
		{Limits{MaxServices: 1}, ReasonMaxServices},
		{Limits{MaxEndpoints: 2}, ReasonMaxEndpoints},
		{Limits{MaxEndpointsPerPort: 1}, ReasonMaxEndpointsPerPort},
	} {
		t.Run(string(tt.want), func(t *testing.T) {
			ts := limitedStore(t, tt.lim)
			ts.UpsertService("c1", newSvc("first", []string{"10.96.0.9"}, webPorts, bornAt(0)))
			ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1"), readyEP("10.0.0.2")))
			ts.UpsertService("c1", webSvc(bornAt(time.Hour)))
			got := ts.RefusalCounts()
			if len(got) != 1 || got[0].Reason != tt.want || got[0].Count != 1 {
				t.Errorf("refusal counts %+v, want one %s (warnings %q)", got, tt.want, ts.log.warns)
			}
		})
	}
	// Object text that reads like a limit's problem is counted under the
	// reason of the problem it is in.
	for _, tt := range []struct {
		name  string
		svc   *corev1.Service
		slice *discoveryv1.EndpointSlice
		want  RefusalReason
	}{
		{"protocol", newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{svcPort("", "]: over max_endpoints_per_port: ", 80)}),
			nil, ReasonUnsupportedProtocol},
		{"endpoint", webSvc(), webSlice("web-1", readyEP("over max_services: ")), ReasonInvalidEndpoint},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestStore(t)
			if tt.slice != nil {
				ts.UpsertSlice("c1", tt.slice)
			}
			ts.UpsertService("c1", tt.svc)
			got := ts.RefusalCounts()
			if len(got) != 1 || got[0].Reason != tt.want || got[0].Count != 1 {
				t.Errorf("refusal counts %+v, want one %s (warnings %q)", got, tt.want, ts.log.warns)
			}
		})
	}
}

// TestAdmissionMatchesGreedy checks the incremental admission, with its
// early stops, against deciding everything again in order, over random
// adds, deletes, re-creations and cost changes.
func TestAdmissionMatchesGreedy(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	lim := Limits{MaxServices: 12, MaxEndpoints: 60}
	var a admission
	a.reset(lim, nil, nil)
	svcs := map[types.NamespacedName]*corev1.Service{}
	sl := map[types.NamespacedName]map[string]*discoveryv1.EndpointSlice{}
	for step := range 5000 {
		nn := types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("s%d", rng.IntN(30))}
		switch op := rng.IntN(10); {
		case op < 2:
			delete(svcs, nn)
		case op < 5:
			svcs[nn] = newSvc(nn.Name, []string{"10.96.0.1"}, webPorts, bornAt(time.Duration(rng.IntN(5))*time.Second))
		default:
			es := newSlice(nn.Name, "x", discoveryv1.AddressTypeIPv4, slicePorts, make([]discoveryv1.Endpoint, rng.IntN(15))...)
			if sl[nn] == nil {
				sl[nn] = map[string]*discoveryv1.EndpointSlice{}
			}
			a.sliceChanged(nn, sl[nn]["x"], es)
			sl[nn]["x"] = es
		}
		a.update(nn, svcs[nn])

		var want admission
		want.reset(lim, svcs, sl)
		for name := range svcs {
			if got, w := a.refusal(name), want.refusal(name); got != w {
				t.Fatalf("step %d: %s: incremental %q, from scratch %q", step, name, got, w)
			}
		}
		if len(a.entries) != len(want.entries) {
			t.Fatalf("step %d: %d entries, want %d", step, len(a.entries), len(want.entries))
		}
	}
}

// TestAdmissionFloodIsCheap: a newcomer to a full cluster is decided in
// one step, not by a walk over the services.
func TestAdmissionFloodIsCheap(t *testing.T) {
	var a admission
	a.reset(Limits{MaxServices: 10}, nil, nil)
	for i := range 100 {
		nn := types.NamespacedName{Namespace: "ns", Name: fmt.Sprintf("s%03d", i)}
		a.update(nn, newSvc(nn.Name, []string{"10.96.0.1"}, webPorts, bornAt(time.Duration(i))))
	}
	// Count the steps of one more: the entries it decides get fresh
	// state; any other keeps the state it had.
	before := map[*admEntry][2]int{}
	for _, e := range a.entries {
		before[e] = [2]int{e.count, e.sum}
	}
	nn := types.NamespacedName{Namespace: "ns", Name: "s999"}
	if flipped := a.update(nn, newSvc(nn.Name, []string{"10.96.0.1"}, webPorts, bornAt(time.Hour))); len(flipped) != 1 || flipped[0] != nn {
		t.Fatalf("flipped %v, want only the newcomer", flipped)
	}
	for _, e := range a.entries[:len(a.entries)-1] {
		if before[e] != [2]int{e.count, e.sum} {
			t.Fatalf("the newcomer's walk touched %s", e.nn)
		}
	}

	// One older than all: it is taken, the tenth is pushed out, and the
	// walk stops where the services were past max_services before too.
	touched := 0
	for _, e := range a.entries {
		before[e] = [2]int{e.count, e.sum}
	}
	nn = types.NamespacedName{Namespace: "ns", Name: "old"}
	flipped := a.update(nn, newSvc(nn.Name, []string{"10.96.0.1"}, webPorts, bornAt(-time.Hour)))
	if want := []types.NamespacedName{{Namespace: "ns", Name: "s009"}}; !slices.Equal(flipped, want) {
		t.Errorf("flipped %v, want %v", flipped, want)
	}
	for _, e := range a.entries[1:] {
		if before[e] != [2]int{e.count, e.sum} {
			touched++
		}
	}
	if touched > 10 {
		t.Errorf("an old newcomer's walk touched %d entries, want at most max_services", touched)
	}
}

// ---- benchmarks: the cost of one event and of a rebuild at the limits ----

// benchStore is a store holding n services of one port with m endpoints
// each, in one cluster with default limits.
func benchStore(b *testing.B, n, m int) *Store {
	b.Helper()
	s := NewStore(slog.New(slog.DiscardHandler), nil)
	s.SetClusters([]ClusterConfig{{Cluster: config.Cluster{Name: "c1", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}}})
	for i := range n {
		name := fmt.Sprintf("svc-%d", i)
		var e []discoveryv1.Endpoint
		for j := range m {
			e = append(e, readyEP(nthIP(i*m+j+1)))
		}
		es := newSlice(name, name+"-1", discoveryv1.AddressTypeIPv4, slicePorts, e...)
		es.Endpoints = EndpointsRead(es.Endpoints) // as the informers' transform does
		s.UpsertSlice("c1", es)
		s.UpsertService("c1", newSvc(name, []string{netip.AddrFrom4([4]byte{10, 96 + byte(i>>16), byte(i >> 8), byte(i)}).String()}, webPorts))
	}
	s.SetSynced("c1")
	return s
}

// BenchmarkEventAtMaxEndpoints: one endpoint flaps in a service as large
// as one service may be under the default limits (200 ports x 1,000
// endpoints = 200,000 entries, the whole budget): the worst single event.
func BenchmarkEventAtMaxEndpoints(b *testing.B) {
	s := NewStore(slog.New(slog.DiscardHandler), nil)
	s.SetClusters([]ClusterConfig{{Cluster: config.Cluster{Name: "c1", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}}})
	var ports []corev1.ServicePort
	var sports []discoveryv1.EndpointPort
	for i := range 199 { // 199 x 1,001 + 1 slice < 200,000
		name := fmt.Sprintf("p%d", i)
		ports = append(ports, svcPort(name, corev1.ProtocolTCP, int32(1000+i)))
		sports = append(sports, slicePortOf(name, tcp, int32(2000+i)))
	}
	es := bigSlices("big", 1000, sports)[0]
	s.UpsertSlice("c1", es)
	s.UpsertService("c1", newSvc("big", []string{"10.96.0.10"}, ports))
	if n := len(s.Snapshot().Clusters[0].Ports); n != 199 {
		b.Fatalf("%d ports programmed, want 199", n)
	}
	flapped := *es
	flapped.Endpoints = es.Endpoints[1:]
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			s.UpsertSlice("c1", &flapped)
		} else {
			s.UpsertSlice("c1", es)
		}
	}
}

// BenchmarkEventPerPortCap: one endpoint flaps in a one-port service of
// 100,000 endpoints, of which 1,000 are programmed.
func BenchmarkEventPerPortCap(b *testing.B) {
	s := NewStore(slog.New(slog.DiscardHandler), nil)
	s.SetClusters([]ClusterConfig{{Cluster: config.Cluster{Name: "c1", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}}}})
	sl := bigSlices("web", 100000, slicePorts)
	for _, es := range sl {
		s.UpsertSlice("c1", es)
	}
	s.UpsertService("c1", webSvc())
	es := sl[50]
	flapped := *es
	flapped.Endpoints = es.Endpoints[1:]
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			s.UpsertSlice("c1", &flapped)
		} else {
			s.UpsertSlice("c1", es)
		}
	}
}

// BenchmarkRebuildAll: every service built again (a reload, or a change
// of this host's addresses) at 20,000 services of 10 endpoints: the
// default max_services, and 220,000 entries, the default budget's size.
func BenchmarkRebuildAll(b *testing.B) {
	s := benchStore(b, 20000, 10)
	a := []netip.Addr{netip.MustParseAddr("192.0.2.1")}
	c := []netip.Addr{netip.MustParseAddr("192.0.2.2")}
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			s.SetHostAddrs(a)
		} else {
			s.SetHostAddrs(c)
		}
	}
}

// BenchmarkFloodNewcomer: one more service arrives in a cluster already
// full at the default max_services.
func BenchmarkFloodNewcomer(b *testing.B) {
	s := NewStore(slog.New(slog.DiscardHandler), nil)
	s.SetClusters([]ClusterConfig{{Cluster: config.Cluster{Name: "c1", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}, MaxServices: 1000}}})
	for i := range 1000 {
		s.UpsertService("c1", newSvc(fmt.Sprintf("svc-%d", i), []string{nthIP96(i)}, webPorts, bornAt(0)))
	}
	b.ResetTimer()
	for i := range b.N {
		s.UpsertService("c1", newSvc(fmt.Sprintf("flood-%d", i), []string{nthIP96(1000 + i%60000)}, webPorts, bornAt(time.Hour)))
	}
}

// BenchmarkHeapAtDefaultLimits reports the live heap of a store holding
// one cluster at the default limits: 20,000 services of one port and 10
// endpoints each, in 20,000 slices (200,000 endpoints and 220,000 entries,
// just past max_endpoints, so that a few services are refused as well).
// The Kubernetes objects are counted: the daemon's informers hold the same
// ones. It sizes MemoryMax= in unitfile/kube-outpost.service.
func BenchmarkHeapAtDefaultLimits(b *testing.B) {
	for range b.N {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := benchStore(b, 20000, 10)
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MiB")
		// The most the heap held at once, garbage included: what the
		// process asks of the system at its peak.
		b.ReportMetric(float64(after.HeapSys)/(1<<20), "heap-sys-MiB")
		runtime.KeepAlive(s)
	}
}

// TestMaxEndpointsCountsExternalIPs: where a cluster may have external
// IPs, each address a service names multiplies its endpoint entries (a
// datapath holds a translation per address), so that a service naming
// thousands of them is refused by max_endpoints, not programmed; where
// none are allowed, they cost nothing (none is taken).
func TestMaxEndpointsCountsExternalIPs(t *testing.T) {
	var many []string
	for i := range 60 {
		many = append(many, fmt.Sprintf("203.0.113.%d", i+1))
	}
	for _, allow := range []bool{true, false} {
		t.Run(fmt.Sprintf("allowed=%v", allow), func(t *testing.T) {
			ts := newTestStore(t)
			cfg := testCfg
			cfg.MaxEndpoints = 100
			if allow {
				cfg.AllowExternalIPs = []netip.Prefix{netip.MustParsePrefix("203.0.113.0/24")}
			}
			ts.SetClusters([]ClusterConfig{cfg})
			ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1"), readyEP("10.0.0.2")))
			// 1 port x 2 endpoints x 61 addresses + 1 slice = 123 > 100.
			ts.UpsertService("c1", webSvc(externalIPsOpt(many...)))
			refs := ts.Refusals()
			if !allow {
				if len(refs) != 1 || refs[0].Reason == "" || strings.HasPrefix(refs[0].Reason, overEndpointsPrefix) {
					t.Fatalf("refusals %+v, want only the external IPs refused", refs)
				}
				checkEndpoints(t, ts.port(t, webKey), "10.0.0.1:8080", "10.0.0.2:8080")
				return
			}
			if len(refs) != 1 || !strings.HasPrefix(refs[0].Reason, overEndpointsPrefix) {
				t.Fatalf("refusals %+v, want web over max_endpoints", refs)
			}
			if n := countPorts(ts, "web"); n != 0 {
				t.Fatalf("%d ports of web programmed", n)
			}
			// 3 addresses: 1 x 2 x 4 + 1 = 9.
			ts.UpsertService("c1", webSvc(externalIPsOpt(many[:3]...)))
			if p := ts.port(t, webKey); p == nil || len(p.ExternalIPs) != 3 {
				t.Fatalf("web with 3 external IPs: %+v", p)
			}
		})
	}
}
