package model

import (
	"errors"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Three clusters with one service range: a and b mapped, c not.
var (
	mcA = ClusterConfig{Cluster: config.Cluster{Name: "a", ServiceCIDRs: prefixes("10.96.0.0/16"), LocalServiceCIDR: netip.MustParsePrefix("100.64.0.0/16"), AllowExternalIPs: prefixes("192.0.2.0/24")}}
	mcB = ClusterConfig{Cluster: config.Cluster{Name: "b", ServiceCIDRs: prefixes("10.96.0.0/16"), LocalServiceCIDR: netip.MustParsePrefix("100.65.0.0/16"), AllowExternalIPs: prefixes("192.0.2.0/24"), EndpointCIDRs: prefixes("10.244.0.0/16")}}
	mcC = ClusterConfig{Cluster: config.Cluster{Name: "c", ServiceCIDRs: prefixes("10.96.0.0/16", "fd00:96::/112")}}
)

func newMultiStore(t *testing.T) *testStore {
	t.Helper()
	ts := &testStore{log: &warnCounter{}}
	ts.Store = NewStore(slog.New(ts.log), func() { ts.changes++ })
	ts.SetClusters([]ClusterConfig{mcA, mcB, mcC})
	ts.SetHostAddrs([]netip.Addr{netip.MustParseAddr("10.250.0.2")})
	ts.changes = 0
	return ts
}

func created(sec int64) svcOpt {
	return func(s *corev1.Service) { s.CreationTimestamp = metav1.NewTime(time.Unix(sec, 0)) }
}

func externalIPsOpt(ips ...string) svcOpt {
	return func(s *corev1.Service) { s.Spec.ExternalIPs = ips }
}

func mkey(cluster, svc string) PortKey {
	return PortKey{Cluster: cluster, Namespace: testNS, Name: svc, Protocol: TCP}
}

func TestMapAddr(t *testing.T) {
	for _, tt := range []struct{ ip, from, to, want string }{
		{"10.96.0.10", "10.96.0.0/16", "100.64.0.0/16", "100.64.0.10"},
		{"10.96.255.254", "10.96.0.0/16", "100.64.0.0/16", "100.64.255.254"},
		{"10.111.3.4", "10.96.0.0/12", "100.64.0.0/12", "100.79.3.4"},
		{"10.96.0.10", "10.96.0.0/29", "172.16.5.8/29", "172.16.5.10"},
		{"fd00:96::1:10", "fd00:96::/108", "fd00:64::/108", "fd00:64::1:10"},
	} {
		got := mapAddr(netip.MustParseAddr(tt.ip), netip.MustParsePrefix(tt.from), netip.MustParsePrefix(tt.to))
		if got.String() != tt.want {
			t.Errorf("mapAddr(%s, %s -> %s) = %v, want %s", tt.ip, tt.from, tt.to, got, tt.want)
		}
	}
}

// TestLocalServiceCIDR: the same ClusterIP in three clusters is three
// VIPs on this host, each keeping its ClusterIP for status and explain.
func TestLocalServiceCIDR(t *testing.T) {
	ts := newMultiStore(t)
	for _, c := range []string{"a", "b", "c"} {
		ts.UpsertService(c, webSvc())
		ts.UpsertSlice(c, webSlice("web-1", readyEP("10.244.0.5")))
	}
	st := ts.Snapshot()
	want := map[string]string{"a": "100.64.0.10", "b": "100.65.0.10", "c": "10.96.0.10"}
	for c, vip := range want {
		p := ts.port(t, mkey(c, "web"))
		if p.VIP().String() != vip || p.ClusterIP.String() != "10.96.0.10" {
			t.Errorf("cluster %s: VIP %v ClusterIP %v, want %s and 10.96.0.10", c, p.VIP(), p.ClusterIP, vip)
		}
		m, err := st.Lookup(Query{Target: netip.MustParseAddrPort(vip + ":80")})
		if err != nil || len(m) != 1 || m[0].Cluster.Name != c || m[0].Addr.String() != vip {
			t.Errorf("Lookup(%s:80) = %+v, %v; want cluster %s", vip, m, err, c)
		}
	}
	// The mapped ClusterIP itself is c's here; c's IPv6 range is its own.
	if c := st.ClusterFor(netip.MustParseAddr("100.65.1.1")); c == nil || c.Name != "b" {
		t.Errorf("ClusterFor(100.65.1.1) = %v, want b", c)
	}
	// A ClusterIP in a mapped range that no unmapped cluster has points
	// the operator at the local address.
	ts.SetClusters([]ClusterConfig{mcA})
	_, err := ts.Snapshot().Lookup(Query{Target: netip.MustParseAddrPort("10.96.0.10:80")})
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "ask for 100.64.0.10:80") {
		t.Errorf("Lookup of a mapped-away ClusterIP: %v", err)
	}
}

// TestExternalIPs: only allowed external IPs are programmed, never this
// host's own, and never in any cluster's VIP range.
func TestExternalIPs(t *testing.T) {
	ts := newMultiStore(t)
	svc := webSvc(externalIPsOpt("192.0.2.7", "192.0.2.5", "192.0.2.5", "198.51.100.1"), func(s *corev1.Service) {
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
			{IP: "192.0.2.9"}, {IP: "192.0.2.10", IPMode: ptr(corev1.LoadBalancerIPModeProxy)}, {Hostname: "lb.example"},
		}
	})
	ts.UpsertService("a", svc)
	p := ts.port(t, mkey("a", "web"))
	if got := addrsString(p.ExternalIPs); got != "192.0.2.5 192.0.2.7 192.0.2.9" {
		t.Errorf("external IPs %s, want the allowed ones sorted, the Proxy-mode LB IP left out", got)
	}
	if r := ts.Refusals(); len(r) != 1 || !strings.Contains(r[0].Reason, "spec.externalIPs [198.51.100.1] are not programmed") ||
		!strings.Contains(r[0].Reason, "outside allow_external_ips [192.0.2.0/24]") {
		t.Errorf("refusals %+v", r)
	}

	// c allows nothing: its external IPs and LB IPs stay out; only the
	// external IPs are worth a warning.
	ts.UpsertService("c", svc)
	if p := ts.port(t, mkey("c", "web")); len(p.ExternalIPs) != 0 {
		t.Errorf("cluster c programs external IPs %v without allow_external_ips", p.ExternalIPs)
	}
	for _, r := range ts.Refusals() {
		if r.Cluster == "c" && (!strings.Contains(r.Reason, "allow_external_ips is not set") || strings.Contains(r.Reason, "loadBalancer")) {
			t.Errorf("cluster c refusal %q", r.Reason)
		}
	}

	wide := mcA
	wide.AllowExternalIPs = prefixes("0.0.0.0/0")
	ts.SetClusters([]ClusterConfig{wide, mcB, mcC})
	ts.UpsertService("a", webSvc(externalIPsOpt("10.250.0.2", "127.0.0.1", "100.65.0.3", "10.96.0.99", "192.0.2.1")))
	p = ts.port(t, mkey("a", "web"))
	if got := addrsString(p.ExternalIPs); got != "192.0.2.1" {
		t.Errorf("external IPs %s, want only 192.0.2.1", got)
	}
	reason := ts.Refusals()[0].Reason
	for _, want := range []string{
		"10.250.0.2 is this host's own address", "127.0.0.1 is a loopback address",
		`100.65.0.3 is in cluster "b"'s service range 100.65.0.0/16`, `10.96.0.99 is in cluster "c"'s service range 10.96.0.0/16`,
	} {
		if !strings.Contains(reason, want) {
			t.Errorf("refusal %q lacks %q", reason, want)
		}
	}
}

// TestEndpointFilters: this host's own address and, with endpoint_cidrs,
// addresses outside them are dropped, warned about and counted; the host's
// addresses are learnt at any time and apply to every service.
func TestEndpointFilters(t *testing.T) {
	ts := newMultiStore(t)
	ts.UpsertService("b", webSvc())
	ts.UpsertSlice("b", webSlice("web-1", readyEP("10.250.0.2"), readyEP("10.1.0.1"), readyEP("10.244.0.5")))
	p := ts.port(t, mkey("b", "web"))
	checkEndpoints(t, p, "10.244.0.5:8080")
	if got := fmtExcluded(p.Excluded); !reflect.DeepEqual(got, []string{
		"10.1.0.1:8080 outside-endpoint-cidrs",
		"10.250.0.2:8080 unsafe-address",
	}) {
		t.Errorf("excluded %q", got)
	}
	counts := map[RefusalReason]uint64{}
	for _, c := range ts.RefusalCounts() {
		counts[c.Reason] = c.Count
	}
	if counts[ReasonUnsafeEndpoint] != 1 || counts[ReasonOutsideEndpointCIDRs] != 1 {
		t.Errorf("refusal counts %v", counts)
	}

	// The host gains 10.244.0.5: it goes, with a change to sync.
	ts.changes = 0
	ts.SetHostAddrs([]netip.Addr{netip.MustParseAddr("10.250.0.2"), netip.MustParseAddr("10.244.0.5")})
	ts.expectChanges(t, 1, "a new host address")
	if p := ts.port(t, mkey("b", "web")); len(p.Endpoints) != 0 {
		t.Errorf("endpoints %v after the host took 10.244.0.5", p.Endpoints)
	}
	ts.SetHostAddrs([]netip.Addr{netip.MustParseAddr("10.244.0.5"), netip.MustParseAddr("10.250.0.2")})
	ts.expectChanges(t, 0, "the same host addresses again")
}

// TestConflicts: two services of two clusters claiming one external
// IP:port: the cluster earlier in the config holds it whatever the event
// order and however old the other's service claims to be; the other is
// refused and named, and gets it when the holder goes. Inside one
// cluster, the older service holds it.
func TestConflicts(t *testing.T) {
	backdated := webSvc(created(1), externalIPsOpt("192.0.2.5"))
	newer := webSvc(created(200), externalIPsOpt("192.0.2.5"))
	for _, order := range []string{"b first", "a first"} {
		t.Run(order, func(t *testing.T) {
			ts := newMultiStore(t)
			if order == "b first" {
				ts.UpsertService("b", backdated)
				ts.UpsertService("a", newer)
			} else {
				ts.UpsertService("a", newer)
				ts.UpsertService("b", backdated)
			}
			if a, b := ts.port(t, mkey("a", "web")), ts.port(t, mkey("b", "web")); addrsString(a.ExternalIPs) != "192.0.2.5" || len(b.ExternalIPs) != 0 {
				t.Fatalf("a has %v, b has %v; want a (first in the config) to hold 192.0.2.5", a.ExternalIPs, b.ExternalIPs)
			}
			r := ts.Refusals()
			if len(r) != 1 || r[0].Cluster != "b" || !strings.HasPrefix(r[0].Reason,
				`conflict: external IP 192.0.2.5:80/TCP of port unnamed/TCP is already programmed for cluster "a" service ns/web`) {
				t.Fatalf("refusals %+v", r)
			}
			if n := ts.RefusalCounts(); len(n) != 1 || n[0].Reason != ReasonConflict {
				t.Errorf("refusal counts %+v", n)
			}
			ts.DeleteService("a", testNS, "web")
			if b := ts.port(t, mkey("b", "web")); addrsString(b.ExternalIPs) != "192.0.2.5" {
				t.Errorf("b has %v after a's service went, want 192.0.2.5", b.ExternalIPs)
			}
			if r := ts.Refusals(); len(r) != 0 {
				t.Errorf("refusals %+v after the conflict ended", r)
			}
		})
	}

	// Inside one cluster the older service wins, whatever the names and
	// the event order.
	ts := newMultiStore(t)
	ts.UpsertService("a", newSvc("aaa", []string{"10.96.0.20"}, webPorts, created(200), externalIPsOpt("192.0.2.6")))
	ts.UpsertService("a", newSvc("zzz", []string{"10.96.0.21"}, webPorts, created(100), externalIPsOpt("192.0.2.6")))
	if z := ts.port(t, mkey("a", "zzz")); addrsString(z.ExternalIPs) != "192.0.2.6" {
		t.Errorf("a/zzz, the older service, has %v", z.ExternalIPs)
	}
	if r := refusalOf(ts, "a", "aaa"); !strings.Contains(r, `cluster "a" service ns/zzz, which wins`) {
		t.Errorf("refusal of a/aaa %q", r)
	}

	// Two ports of one service on the same port number and protocol: one
	// VIP:port, so the second is refused, not programmed twice.
	ts.UpsertService("c", newSvc("dup", []string{"10.96.0.20"}, []corev1.ServicePort{
		svcPort("x", corev1.ProtocolTCP, 80), svcPort("y", corev1.ProtocolTCP, 80)}))
	c := ts.cluster(t, "c")
	n := 0
	for k := range c.Ports {
		if k.Name == "dup" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d ports of dup programmed at 10.96.0.20:80/TCP, want 1", n)
	}
}

// TestOddObjects: absurd objects are refused without touching others.
func TestOddObjects(t *testing.T) {
	ts := newMultiStore(t)
	ts.UpsertService("c", newSvc("ok", []string{"10.96.0.30"}, webPorts))
	many := make([]corev1.ServicePort, maxServicePorts+5)
	for i := range many {
		many[i] = svcPort("p"+strings.Repeat("x", i%3)+string(rune('a'+i%26))+string(rune('a'+i/26%26))+string(rune('a'+i/676)), corev1.ProtocolTCP, int32(1+i))
	}
	ts.UpsertService("c", newSvc("many", []string{"10.96.0.31"}, many))
	ts.UpsertService("c", newSvc("two-v4", []string{"10.96.0.32", "10.96.0.33"}, webPorts))
	ts.UpsertService("c", newSvc("zero", []string{"10.96.0.34"}, []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 0)}))
	ts.UpsertSlice("c", newSlice("ok", "ok-1", discoveryv1.AddressTypeIPv4, slicePorts, readyEP("10.244.0.1"), readyEP("10.244.0.1"), readyEP("nope")))
	counts := map[string]int{}
	for k := range ts.cluster(t, "c").Ports {
		counts[k.Name]++
	}
	if !reflect.DeepEqual(counts, map[string]int{"ok": 1, "many": maxServicePorts, "two-v4": 1}) {
		t.Errorf("ports per service %v", counts)
	}
	checkEndpoints(t, ts.port(t, PortKey{Cluster: "c", Namespace: testNS, Name: "ok", Protocol: TCP}), "10.244.0.1:8080")
	// A service that turns ExternalName loses its ports; the others stay.
	ts.UpsertService("c", newSvc("ok", []string{"10.96.0.30"}, webPorts, func(s *corev1.Service) { s.Spec.Type = corev1.ServiceTypeExternalName }))
	if _, ok := ts.cluster(t, "c").Ports[PortKey{Cluster: "c", Namespace: testNS, Name: "ok", Protocol: TCP}]; ok {
		t.Error("an ExternalName service is still programmed")
	}
	if len(ts.cluster(t, "c").Ports) != maxServicePorts+1 {
		t.Errorf("other services changed: %d ports", len(ts.cluster(t, "c").Ports))
	}
}

func addrsString(a []netip.Addr) string {
	s := make([]string, len(a))
	for i, x := range a {
		s[i] = x.String()
	}
	return strings.Join(s, " ")
}
