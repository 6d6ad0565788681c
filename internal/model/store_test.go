package model

import (
	"context"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

// warnCounter is a slog handler that records Warn records.
type warnCounter struct {
	mu    sync.Mutex
	warns []string // "service reason"
}

func (h *warnCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *warnCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *warnCounter) WithGroup(string) slog.Handler            { return h }
func (h *warnCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level != slog.LevelWarn {
		return nil
	}
	var svc, reason string
	r.Attrs(func(a slog.Attr) bool {
		switch a.Key {
		case "service":
			svc = a.Value.String()
		case "reason":
			reason = a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	h.warns = append(h.warns, svc+" "+reason)
	h.mu.Unlock()
	return nil
}

func (h *warnCounter) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.warns)
}

type testStore struct {
	*Store
	log     *warnCounter
	changes int
}

// newTestStore makes a store with testCfg ("c1") configured, and resets the
// change counter.
func newTestStore(t *testing.T) *testStore {
	t.Helper()
	ts := &testStore{log: &warnCounter{}}
	ts.Store = NewStore(slog.New(ts.log), func() { ts.changes++ })
	ts.SetClusters([]ClusterConfig{testCfg})
	ts.changes = 0
	return ts
}

// expectChanges checks and resets the number of onChange calls.
func (ts *testStore) expectChanges(t *testing.T, want int, what string) {
	t.Helper()
	if ts.changes != want {
		t.Errorf("%s: onChange called %d times, want %d", what, ts.changes, want)
	}
	ts.changes = 0
}

func (ts *testStore) cluster(t *testing.T, name string) *ClusterState {
	t.Helper()
	for _, c := range ts.Snapshot().Clusters {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("cluster %q not in snapshot", name)
	return nil
}

func (ts *testStore) port(t *testing.T, k PortKey) *ServicePort {
	t.Helper()
	return ts.cluster(t, k.Cluster).Ports[k]
}

var (
	webPorts   = []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 80)}
	slicePorts = []discoveryv1.EndpointPort{slicePortOf("", tcp, 8080)}
	webKey     = key("web", "", TCP, false)
)

func webSvc(opts ...svcOpt) *corev1.Service {
	return newSvc("web", []string{"10.96.0.10"}, webPorts, opts...)
}

func webSlice(name string, e ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return newSlice("web", name, discoveryv1.AddressTypeIPv4, slicePorts, e...)
}

func checkEndpoints(t *testing.T, p *ServicePort, want ...string) {
	t.Helper()
	if p == nil {
		t.Fatalf("no port, want endpoints %v", want)
	}
	w := eps(want...)
	if len(p.Endpoints) != len(w) {
		t.Fatalf("endpoints of %s, want %v", fmtPort(p), want)
	}
	for i := range w {
		if p.Endpoints[i] != w[i] {
			t.Fatalf("endpoints of %s, want %v", fmtPort(p), want)
		}
	}
}

func TestStoreLifecycle(t *testing.T) {
	ts := newTestStore(t)

	ts.UpsertService("c1", webSvc())
	ts.expectChanges(t, 1, "service added")
	p1 := ts.port(t, webKey)
	checkEndpoints(t, p1)
	if p1.NoEndpointsReason != "no endpoints" {
		t.Errorf("reason = %q", p1.NoEndpointsReason)
	}

	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.2"), readyEP("10.0.0.1")))
	ts.expectChanges(t, 1, "slice added")
	p2 := ts.port(t, webKey)
	checkEndpoints(t, p2, "10.0.0.1:8080", "10.0.0.2:8080")
	if p1 == p2 {
		t.Error("a changed port kept its pointer")
	}

	// The same objects again (a resync): nothing changes, same pointer.
	ts.UpsertService("c1", webSvc())
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1"), readyEP("10.0.0.2")))
	ts.expectChanges(t, 0, "no-op updates")
	if p := ts.port(t, webKey); p != p2 {
		t.Error("a no-op update replaced the ServicePort pointer")
	}

	// A second slice with a duplicate.
	ts.UpsertSlice("c1", webSlice("web-2", readyEP("10.0.0.2"), readyEP("10.0.0.3")))
	ts.expectChanges(t, 1, "second slice")
	checkEndpoints(t, ts.port(t, webKey), "10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080")
	checkCounts(t, ts.cluster(t, "c1"), 1, 3)

	// Deleting a slice updates the endpoints.
	ts.DeleteSlice("c1", webSlice("web-1"))
	ts.expectChanges(t, 1, "slice deleted")
	checkEndpoints(t, ts.port(t, webKey), "10.0.0.2:8080", "10.0.0.3:8080")

	ts.DeleteSlice("c1", webSlice("web-2"))
	ts.expectChanges(t, 1, "last slice deleted")
	p := ts.port(t, webKey)
	checkEndpoints(t, p)
	if p.NoEndpointsReason != "no endpoints" {
		t.Errorf("reason = %q", p.NoEndpointsReason)
	}

	// Deleting an unknown slice changes nothing.
	ts.DeleteSlice("c1", webSlice("web-9"))
	ts.expectChanges(t, 0, "unknown slice deleted")

	// Deleting the service removes its ports.
	ts.DeleteService("c1", testNS, "web")
	ts.expectChanges(t, 1, "service deleted")
	if n := len(ts.cluster(t, "c1").Ports); n != 0 {
		t.Errorf("%d ports left after the service was deleted", n)
	}
	checkCounts(t, ts.cluster(t, "c1"), 0, 0)
	ts.DeleteService("c1", testNS, "web")
	ts.expectChanges(t, 0, "service deleted twice")
}

// checkCounts checks the snapshot's counts, and that they are what
// counting its ports by hand gives.
func checkCounts(t *testing.T, c *ClusterState, services, endpoints int) {
	t.Helper()
	byHand := *c
	byHand.Services, byHand.Endpoints = 0, 0
	s, e := byHand.Counts()
	if c.Services != services || c.Endpoints != endpoints || s != services || e != endpoints {
		t.Errorf("counts: snapshot %d services %d endpoints, by hand %d and %d; want %d and %d", c.Services, c.Endpoints, s, e, services, endpoints)
	}
}

func TestStoreSlicesBeforeService(t *testing.T) {
	ts := newTestStore(t)
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1")))
	ts.expectChanges(t, 0, "slice without service")
	if n := len(ts.cluster(t, "c1").Ports); n != 0 {
		t.Fatalf("%d ports without a service", n)
	}
	ts.UpsertService("c1", webSvc())
	ts.expectChanges(t, 1, "service added")
	checkEndpoints(t, ts.port(t, webKey), "10.0.0.1:8080")

	// And again after the service is deleted and added back.
	ts.DeleteService("c1", testNS, "web")
	ts.UpsertService("c1", webSvc())
	checkEndpoints(t, ts.port(t, webKey), "10.0.0.1:8080")
}

func TestStoreSliceWithoutServiceLabelIgnored(t *testing.T) {
	ts := newTestStore(t)
	ts.UpsertService("c1", webSvc())
	ts.changes = 0
	es := webSlice("web-1", readyEP("10.0.0.1"))
	delete(es.Labels, discoveryv1.LabelServiceName)
	ts.UpsertSlice("c1", es)
	ts.DeleteSlice("c1", es)
	ts.expectChanges(t, 0, "unlabelled slice")
	checkEndpoints(t, ts.port(t, webKey))
}

func TestStoreServiceUpdate(t *testing.T) {
	ts := newTestStore(t)
	ts.UpsertService("c1", newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{
		svcPort("http", corev1.ProtocolTCP, 80), svcPort("https", corev1.ProtocolTCP, 443)}))
	httpKey, httpsKey := key("web", "http", TCP, false), key("web", "https", TCP, false)
	if len(ts.cluster(t, "c1").Ports) != 2 {
		t.Fatal("want two ports")
	}
	keep := ts.port(t, httpKey)
	ts.changes = 0

	// One port removed: it goes, the other keeps its pointer.
	ts.UpsertService("c1", newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{
		svcPort("http", corev1.ProtocolTCP, 80)}))
	ts.expectChanges(t, 1, "port removed")
	if ts.port(t, httpsKey) != nil {
		t.Error("removed port still present")
	}
	if ts.port(t, httpKey) != keep {
		t.Error("unchanged port replaced")
	}

	// The service becomes headless: everything goes.
	ts.UpsertService("c1", newSvc("web", []string{corev1.ClusterIPNone}, webPorts))
	ts.expectChanges(t, 1, "became headless")
	if n := len(ts.cluster(t, "c1").Ports); n != 0 {
		t.Errorf("%d ports left for a headless service", n)
	}
}

func TestStoreUnknownCluster(t *testing.T) {
	ts := newTestStore(t)
	ts.UpsertService("other", webSvc())
	ts.UpsertSlice("other", webSlice("web-1", readyEP("10.0.0.1")))
	ts.DeleteSlice("other", webSlice("web-1"))
	ts.DeleteService("other", testNS, "web")
	ts.SetSynced("other")
	ts.expectChanges(t, 0, "events for an unknown cluster")
	st := ts.Snapshot()
	if len(st.Clusters) != 1 || len(st.Clusters[0].Ports) != 0 || st.Clusters[0].Synced {
		t.Errorf("unknown cluster events changed the state: %+v", st.Clusters)
	}
}

func TestStoreSetClusters(t *testing.T) {
	ts := newTestStore(t)
	c2 := ClusterConfig{Cluster: config.Cluster{Name: "a-c2", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.100.0.0/16")}}}
	c3 := ClusterConfig{Cluster: config.Cluster{Name: "z-c3", ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.200.0.0/16")}}}
	ts.SetClusters([]ClusterConfig{c3, testCfg, c2})
	ts.expectChanges(t, 1, "SetClusters")

	st := ts.Snapshot()
	var names []string
	for _, c := range st.Clusters {
		names = append(names, c.Name)
	}
	if got := strings.Join(names, ","); got != "a-c2,c1,z-c3" {
		t.Errorf("snapshot clusters = %s, want sorted a-c2,c1,z-c3", got)
	}

	ts.UpsertService("c1", webSvc())
	ts.SetSynced("c1")
	ts.UpsertService("a-c2", newSvc("web", []string{"10.100.0.10"}, webPorts))
	ts.changes = 0

	// Same config for c1 again: its data and synced flag stay.
	ts.SetClusters([]ClusterConfig{testCfg, c2})
	ts.expectChanges(t, 1, "SetClusters removing z-c3")
	st = ts.Snapshot()
	if len(st.Clusters) != 2 || st.Clusters[0].Name != "a-c2" || st.Clusters[1].Name != "c1" {
		t.Fatalf("clusters after removal: %+v", st.Clusters)
	}
	if c1 := st.Clusters[1]; !c1.Synced || c1.Ports[webKey] == nil {
		t.Errorf("c1 lost its data: synced=%v ports=%d", c1.Synced, len(c1.Ports))
	}

	// Removing a cluster drops its ports; events for it are then ignored.
	ts.SetClusters([]ClusterConfig{testCfg})
	ts.changes = 0
	st = ts.Snapshot()
	if len(st.Clusters) != 1 || st.Clusters[0].Name != "c1" {
		t.Fatalf("clusters after removal: %+v", st.Clusters)
	}
	ts.UpsertService("a-c2", newSvc("other", []string{"10.100.0.11"}, webPorts))
	ts.expectChanges(t, 0, "event for a removed cluster")

	// Changing a cluster's CIDRs starts it from scratch.
	changed := testCfg
	changed.ServiceCIDRs = []netip.Prefix{netip.MustParsePrefix("10.97.0.0/16")}
	ts.SetClusters([]ClusterConfig{changed})
	c1 := ts.cluster(t, "c1")
	if c1.Synced || len(c1.Ports) != 0 || len(c1.ServiceCIDRs) != 1 || c1.ServiceCIDRs[0] != changed.ServiceCIDRs[0] {
		t.Errorf("c1 after a CIDR change: %+v", c1)
	}
}

func TestStoreSetSynced(t *testing.T) {
	ts := newTestStore(t)
	if ts.cluster(t, "c1").Synced {
		t.Fatal("synced before SetSynced")
	}
	ts.SetSynced("c1")
	ts.expectChanges(t, 1, "SetSynced")
	if !ts.cluster(t, "c1").Synced {
		t.Fatal("not synced after SetSynced")
	}
	ts.SetSynced("c1")
	ts.expectChanges(t, 0, "SetSynced twice")
}

func TestStoreRefusals(t *testing.T) {
	ts := newTestStore(t)
	outside := func(opts ...svcOpt) *corev1.Service {
		return newSvc("bad", []string{"192.168.0.1"}, webPorts, opts...)
	}

	ts.UpsertService("c1", outside())
	if n := len(ts.cluster(t, "c1").Ports); n != 0 {
		t.Errorf("refused service has %d ports", n)
	}
	ref := ts.Refusals()
	if len(ref) != 1 || ref[0].Cluster != "c1" || ref[0].Namespace != testNS || ref[0].Name != "bad" ||
		!strings.Contains(ref[0].Reason, "outside the cluster's service_cidrs") {
		t.Fatalf("refusals = %+v", ref)
	}
	if n := ts.log.count(); n != 1 {
		t.Fatalf("warnings = %d, want 1: %q", n, ts.log.warns)
	}

	// The same problem again (an update, a resync): no new warning.
	ts.UpsertService("c1", outside(withLabel("x", "1")))
	ts.UpsertService("c1", outside(withLabel("x", "2")))
	if n := ts.log.count(); n != 1 {
		t.Fatalf("warnings after identical problems = %d, want 1: %q", n, ts.log.warns)
	}

	// A different problem warns again.
	ts.UpsertService("c1", newSvc("bad", []string{"192.168.0.2"}, webPorts))
	if n := ts.log.count(); n != 2 {
		t.Fatalf("warnings after a new problem = %d, want 2: %q", n, ts.log.warns)
	}

	// ExternalIPs: programmed, and refused in part.
	ts.UpsertService("c1", webSvc(func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"203.0.113.7"} }))
	if ts.port(t, webKey) == nil {
		t.Error("service with externalIPs not programmed")
	}
	ref = ts.Refusals()
	if len(ref) != 2 || ref[0].Name != "bad" || ref[1].Name != "web" || !strings.Contains(ref[1].Reason, "externalIPs") {
		t.Fatalf("refusals = %+v", ref)
	}

	// Bad endpoints are reported; fixed, the refusal goes away.
	ts.UpsertService("c1", webSvc())
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("169.254.169.254"), readyEP("10.0.0.1")))
	checkEndpoints(t, ts.port(t, webKey), "10.0.0.1:8080")
	ref = ts.Refusals()
	if len(ref) != 2 || !strings.Contains(ref[1].Reason, "169.254.169.254") {
		t.Fatalf("refusals = %+v", ref)
	}
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.1")))
	if ref = ts.Refusals(); len(ref) != 1 || ref[0].Name != "bad" {
		t.Fatalf("refusals after fix = %+v", ref)
	}

	// Deleting the bad service clears its refusal.
	before := ts.log.count()
	ts.DeleteService("c1", testNS, "bad")
	if ref = ts.Refusals(); len(ref) != 0 {
		t.Fatalf("refusals after delete = %+v", ref)
	}
	// And the same problem, coming back, warns again.
	ts.UpsertService("c1", outside())
	if n := ts.log.count(); n != before+1 {
		t.Errorf("warnings = %d, want %d", n, before+1)
	}
}

func TestStoreDeterminism(t *testing.T) {
	dual := newSvc("dual", []string{"10.96.0.20", "fd00:96::20"}, []corev1.ServicePort{
		svcPort("http", corev1.ProtocolTCP, 80), svcPort("dns", corev1.ProtocolUDP, 53)})
	dualPorts := []discoveryv1.EndpointPort{slicePortOf("http", tcp, 8080), slicePortOf("dns", udp, 5353)}
	svcs := []*corev1.Service{webSvc(withAffinity(nil)), dual}
	slices := []*discoveryv1.EndpointSlice{
		webSlice("web-a", readyEP("10.0.0.3"), terminatingEP("10.0.0.9", true)),
		webSlice("web-b", readyEP("10.0.0.1"), readyEP("10.0.0.3"), readyEP("127.0.0.1")),
		newSlice("dual", "dual-a", discoveryv1.AddressTypeIPv4, dualPorts, readyEP("10.1.0.2"), readyEP("10.1.0.1")),
		newSlice("dual", "dual-b", discoveryv1.AddressTypeIPv6, dualPorts, readyEP("2001:db8::2"), notReadyEP("2001:db8::1")),
		newSlice("dual", "dual-c", discoveryv1.AddressTypeIPv6, dualPorts, readyEP("2001:db8::3")),
	}

	type op func(*Store)
	var ops []op
	for _, s := range svcs {
		ops = append(ops, func(st *Store) { st.UpsertService("c1", s) })
	}
	for _, es := range slices {
		ops = append(ops, func(st *Store) { st.UpsertSlice("c1", es) })
	}
	run := func(order []int) map[PortKey]*ServicePort {
		st := NewStore(nil, nil)
		st.SetClusters([]ClusterConfig{testCfg})
		for _, i := range order {
			ops[i](st)
		}
		return st.Snapshot().Clusters[0].Ports
	}

	forward := make([]int, len(ops))
	backward := make([]int, len(ops))
	for i := range ops {
		forward[i] = i
		backward[i] = len(ops) - 1 - i
	}
	interleaved := []int{2, 6, 0, 4, 3, 1, 5}
	want := run(forward)
	if len(want) != 5 {
		t.Fatalf("want 5 ports (web, dual http/dns x v4/v6), got %d", len(want))
	}
	checkEndpoints(t, want[webKey], "10.0.0.1:8080", "10.0.0.3:8080")
	checkEndpoints(t, want[key("dual", "dns", UDP, true)], "[2001:db8::2]:5353", "[2001:db8::3]:5353")
	for _, order := range [][]int{backward, interleaved} {
		got := run(order)
		if len(got) != len(want) {
			t.Fatalf("order %v: %d ports, want %d", order, len(got), len(want))
		}
		for k, w := range want {
			if !got[k].Equal(w) {
				t.Errorf("order %v: %s\n got %s\nwant %s", order, k, fmtPort(got[k]), fmtPort(w))
			}
		}
	}
}

// Concurrent use must be safe (run with -race).
func TestStoreConcurrent(t *testing.T) {
	st := NewStore(nil, func() {})
	st.SetClusters([]ClusterConfig{testCfg})
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 50 {
				st.UpsertService("c1", webSvc())
				st.UpsertSlice("c1", webSlice("web-1", readyEP(netip.AddrFrom4([4]byte{10, 0, byte(i), byte(j + 1)}).String())))
				_ = st.Snapshot()
				_ = st.Refusals()
			}
		}()
	}
	wg.Wait()
}
