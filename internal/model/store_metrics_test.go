package model

import (
	"fmt"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"net/netip"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// TestRefusalReasons produces every problem buildService reports, through
// the store, and checks the reason it is counted under: each problem is
// made with its reason where it is decided, and this pins that the right
// one is.
func TestRefusalReasons(t *testing.T) {
	bad := func(name string, opts ...svcOpt) *corev1.Service {
		return newSvc(name, []string{"10.96.0.10"}, webPorts, opts...)
	}
	for _, tt := range []struct {
		name  string
		svc   *corev1.Service
		slice *discoveryv1.EndpointSlice
		want  RefusalReason
		setup func(*testStore) // before the objects arrive
	}{
		{"external IPs", bad("web", func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"203.0.113.7"} }), nil, ReasonExternalIPs, nil},
		{"outside service_cidrs", newSvc("web", []string{"192.168.0.1"}, webPorts), nil, ReasonOutsideServiceCIDRs, nil},
		{"cluster IP not an IP", newSvc("web", []string{"10.96.0.300"}, webPorts), nil, ReasonInvalidClusterIP, nil},
		{"second ClusterIP of a family", newSvc("web", []string{"10.96.0.10", "10.96.0.11"}, webPorts), nil, ReasonInvalidClusterIP, nil},
		{"external IP not an IP", bad("web", func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"bogus"} }), nil, ReasonExternalIPs, nil},
		{"too many ports", newSvc("web", []string{"10.96.0.10"}, manyPorts(maxServicePorts+1)), nil, ReasonTooManyPorts, nil},
		{"protocol", newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{svcPort("", "ICMP", 80)}), nil, ReasonUnsupportedProtocol, nil},
		{"port out of range", newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 70000)}), nil, ReasonInvalidPort, nil},
		{"duplicate port", newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{
			svcPort("a", corev1.ProtocolTCP, 80), svcPort("a", corev1.ProtocolTCP, 81)}), nil, ReasonDuplicatePort, nil},
		{"endpoint not an IP", webSvc(), webSlice("web-1", readyEP("10.0.0.300")), ReasonInvalidEndpoint, nil},
		{"endpoint with a zone", newSvc("web", []string{"fd00:96::10"}, webPorts),
			newSlice("web", "web-1", discoveryv1.AddressTypeIPv6, slicePorts, readyEP("fe80::1%eth0")), ReasonInvalidEndpoint, nil},
		{"loopback endpoint", webSvc(), webSlice("web-1", readyEP("127.0.0.1")), ReasonUnsafeEndpoint, nil},
		{"metadata endpoint", webSvc(), webSlice("web-1", readyEP("169.254.169.254")), ReasonUnsafeEndpoint, nil},
		{"link-local endpoint", webSvc(), webSlice("web-1", readyEP("169.254.1.1")), ReasonUnsafeEndpoint, nil},
		{"multicast endpoint", webSvc(), webSlice("web-1", readyEP("224.1.1.1")), ReasonUnsafeEndpoint, nil},
		{"unspecified endpoint", webSvc(), webSlice("web-1", readyEP("0.0.0.0")), ReasonUnsafeEndpoint, nil},
		{"broadcast endpoint", webSvc(), webSlice("web-1", readyEP("255.255.255.255")), ReasonUnsafeEndpoint, nil},
		{"platform endpoint", webSvc(), webSlice("web-1", readyEP("100.100.100.200")), ReasonUnsafeEndpoint, nil},
		{"endpoint at the default gateway", webSvc(), webSlice("web-1", readyEP("10.250.0.1")), ReasonUnsafeEndpoint, func(ts *testStore) {
			ts.SetHostFacts(HostFacts{Gateways: []netip.Addr{netip.MustParseAddr("10.250.0.1")}})
		}},
		{"endpoint at another cluster's apiserver", webSvc(), webSlice("web-1", readyEP("10.250.0.11")), ReasonUnsafeEndpoint, func(ts *testStore) {
			ts.SetClusters([]ClusterConfig{testCfg, {Cluster: config.Cluster{Name: "c2", ServiceCIDRs: prefixes("10.97.0.0/16")}, APIServerAddrs: []netip.Addr{netip.MustParseAddr("10.250.0.11")}}})
		}},
		{"ClusterIP at the host's address", webSvc(), nil, ReasonProtectedAddress, func(ts *testStore) {
			ts.SetHostAddrs([]netip.Addr{netip.MustParseAddr("10.96.0.10")})
		}},
		{"ClusterIP at an apiserver", webSvc(), nil, ReasonProtectedAddress, func(ts *testStore) {
			c := testCfg
			c.APIServerAddrs = []netip.Addr{netip.MustParseAddr("10.96.0.10")}
			ts.SetClusters([]ClusterConfig{c})
		}},
		{"node at the host's address", webSvc(withNodePort(30080)), webSlice("web-1", readyEP("10.244.0.1")), ReasonUnsafeEndpoint, func(ts *testStore) {
			c := testCfg
			c.Reach = reach.NodePort
			ts.SetClusters([]ClusterConfig{c})
			ts.SetHostAddrs([]netip.Addr{netip.MustParseAddr("10.250.0.2")})
			ts.SetNodes("c1", []NodeInfo{testNode("n1", true, "10.250.0.2"), testNode("n2", true, "10.250.0.3")})
		}},
		{"node outside endpoint_cidrs", webSvc(withNodePort(30080)), webSlice("web-1", readyEP("10.244.0.1")), ReasonOutsideEndpointCIDRs, func(ts *testStore) {
			c := testCfg
			c.Reach, c.EndpointCIDRs = reach.NodePort, prefixes("10.250.0.0/24")
			ts.SetClusters([]ClusterConfig{c})
			ts.SetNodes("c1", []NodeInfo{testNode("n1", true, "192.0.2.1"), testNode("n2", true, "10.250.0.3")})
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTestStore(t)
			if tt.setup != nil {
				tt.setup(ts)
			}
			if tt.slice != nil {
				ts.UpsertSlice("c1", tt.slice)
			}
			ts.UpsertService("c1", tt.svc)
			want := []RefusalCount{{Cluster: "c1", Reason: tt.want, Count: 1}}
			if got := ts.RefusalCounts(); !reflect.DeepEqual(got, want) {
				t.Errorf("refusal counts %+v, want %+v (problems: %q)", got, want, ts.log.warns)
			}
		})
	}
}

func TestStoreRefusalCounts(t *testing.T) {
	ts := newTestStore(t)
	count := func(r RefusalReason) uint64 {
		for _, c := range ts.RefusalCounts() {
			if c.Cluster == "c1" && c.Reason == r {
				return c.Count
			}
		}
		return 0
	}
	ext := func(label string) *corev1.Service {
		return webSvc(withLabel("x", label), func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"203.0.113.7"} })
	}

	ts.UpsertService("c1", ext("1"))
	if n := count(ReasonExternalIPs); n != 1 {
		t.Fatalf("external_ips = %d after one refused change, want 1", n)
	}
	// Resyncs and unrelated updates repeat the same problem: not counted,
	// as they are not warned about.
	ts.UpsertService("c1", ext("1"))
	ts.UpsertService("c1", ext("2"))
	if n := count(ReasonExternalIPs); n != 1 {
		t.Fatalf("external_ips = %d after repeats of the same problem, want 1", n)
	}

	// Two unsafe endpoints in one change are one refusal of that change.
	ts.UpsertService("c1", newSvc("db", []string{"10.96.0.11"}, webPorts))
	ts.UpsertSlice("c1", newSlice("db", "db-1", discoveryv1.AddressTypeIPv4, slicePorts,
		readyEP("127.0.0.1"), readyEP("224.1.1.1"), readyEP("10.0.0.1")))
	if n := count(ReasonUnsafeEndpoint); n != 1 {
		t.Fatalf("unsafe_endpoint = %d, want 1", n)
	}

	// Fixed, then broken again: a new refusal.
	ts.UpsertService("c1", webSvc())
	ts.UpsertService("c1", ext("3"))
	if n := count(ReasonExternalIPs); n != 2 {
		t.Fatalf("external_ips = %d after the problem came back, want 2", n)
	}
	// Another problem of the same object is another change to warn about,
	// and the warning names every problem again: each is counted again.
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("127.0.0.1")))
	if e, u := count(ReasonExternalIPs), count(ReasonUnsafeEndpoint); e != 3 || u != 2 {
		t.Fatalf("external_ips = %d, unsafe_endpoint = %d after a second problem, want 3 and 2", e, u)
	}

	// A cluster that goes away takes its counters along; one that stays
	// keeps them even when it restarts from scratch.
	restarted := testCfg
	restarted.Generation++
	ts.SetClusters([]ClusterConfig{restarted, {Cluster: config.Cluster{Name: "c2", ServiceCIDRs: testCfg.ServiceCIDRs}}})
	if n := count(ReasonExternalIPs); n != 3 {
		t.Fatalf("external_ips = %d after a restart of the cluster, want 3", n)
	}
	ts.UpsertService("c2", newSvc("web", []string{"10.96.0.10"}, webPorts, func(s *corev1.Service) { s.Spec.ExternalIPs = []string{"203.0.113.7"} }))
	ts.SetClusters([]ClusterConfig{{Cluster: config.Cluster{Name: "c2", ServiceCIDRs: testCfg.ServiceCIDRs}}})
	want := []RefusalCount{{Cluster: "c2", Reason: ReasonExternalIPs, Count: 1}}
	if got := ts.RefusalCounts(); !reflect.DeepEqual(got, want) {
		t.Fatalf("refusal counts after c1 was removed: %+v, want %+v", got, want)
	}
}

func TestStoreTriggerTimes(t *testing.T) {
	start := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	ts := &testStore{log: &warnCounter{}}
	ts.Store = NewStore(nil, func() { ts.changes++ })
	ts.now = func() time.Time { return start }
	ts.SetClusters([]ClusterConfig{testCfg})

	at := func(d time.Duration) time.Time { return start.Add(d) }
	annotated := func(t time.Time, e ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
		es := webSlice("web-1", e...)
		es.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: t.Format(time.RFC3339Nano)}
		return es
	}
	checkout := func(what string, want ...time.Time) {
		t.Helper()
		_, got := ts.Checkout()
		if len(got) != len(want) {
			t.Fatalf("%s: trigger times %v, want %v", what, got, want)
		}
		for i := range want {
			if !got[i].Equal(want[i]) {
				t.Fatalf("%s: trigger times %v, want %v", what, got, want)
			}
		}
	}

	ts.UpsertService("c1", webSvc())
	// A change made before the store watched: the first list reports it,
	// but its latency is not ours to measure.
	ts.UpsertSlice("c1", annotated(at(-time.Minute), readyEP("10.0.0.1")))
	checkout("a change from before the start")

	ts.UpsertSlice("c1", annotated(at(time.Second), readyEP("10.0.0.1"), readyEP("10.0.0.2")))
	ts.UpsertSlice("c1", annotated(at(2*time.Second), readyEP("10.0.0.2")))
	// The same endpoints again with a new time: no change to program, so
	// nothing to measure.
	ts.UpsertSlice("c1", annotated(at(3*time.Second), readyEP("10.0.0.2")))
	// Without the annotation, or with one that does not parse.
	ts.UpsertSlice("c1", webSlice("web-1", readyEP("10.0.0.3")))
	broken := webSlice("web-1", readyEP("10.0.0.4"))
	broken.Annotations = map[string]string{corev1.EndpointsLastChangeTriggerTime: "yesterday"}
	ts.UpsertSlice("c1", broken)
	// A deleted slice carries the time of its last update, not of the
	// deletion.
	ts.DeleteSlice("c1", annotated(at(4*time.Second)))
	checkout("changes", at(time.Second), at(2*time.Second))
	checkout("a second checkout")

	// The times come with the snapshot that holds their changes.
	ts.UpsertSlice("c1", annotated(at(5*time.Second), readyEP("10.0.0.5")))
	st, got := ts.Checkout()
	if len(got) != 1 || !got[0].Equal(at(5*time.Second)) {
		t.Fatalf("trigger times %v, want [%v]", got, at(5*time.Second))
	}
	if p := st.Clusters[0].Ports[webKey]; p == nil || len(p.Endpoints) != 1 || p.Endpoints[0].Addr.String() != "10.0.0.5:8080" {
		t.Fatalf("snapshot does not hold the change: %+v", p)
	}
}

func manyPorts(n int) []corev1.ServicePort {
	out := make([]corev1.ServicePort, n)
	for i := range out {
		out[i] = svcPort(fmt.Sprintf("p%d", i), corev1.ProtocolTCP, int32(1+i))
	}
	return out
}
