package model

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

func externalName(target string) svcOpt {
	return func(s *corev1.Service) { s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, target }
}

func headlessSvc(name string, opts ...svcOpt) *corev1.Service {
	return newSvc(name, []string{corev1.ClusterIPNone}, []corev1.ServicePort{svcPort("peer", corev1.ProtocolTCP, 7000)}, opts...)
}

func withHostname(e discoveryv1.Endpoint, h string) discoveryv1.Endpoint {
	e.Hostname = &h
	return e
}

// namedText writes a named service's endpoints as "addr hostname ports"
// lines, to compare whole.
func namedText(n *NamedService) []string {
	if n == nil {
		return []string{"<nil>"}
	}
	var out []string
	for _, e := range n.Endpoints {
		var ps []string
		for _, p := range e.Ports {
			ps = append(ps, fmt.Sprintf("%s/%s:%d", p.Name, p.Protocol, p.Port))
		}
		out = append(out, strings.TrimSpace(fmt.Sprintf("%s %s %s", e.Addr, e.Hostname, strings.Join(ps, ","))))
	}
	return out
}

func reasons(ps []Problem) []RefusalReason {
	var out []RefusalReason
	for _, p := range ps {
		out = append(out, p.Reason)
	}
	slices.Sort(out)
	return out
}

// TestBuildNamedHeadless: a headless service names its ready endpoints
// that pass the same checks as a DNAT target, once each, with their
// hostnames and their slice's named ports; every refused one is reported
// as it would be for a ClusterIP service.
func TestBuildNamedHeadless(t *testing.T) {
	cfg := testCfg
	cfg.EndpointCIDRs = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/16"), netip.MustParsePrefix("fd00:10::/64")}
	env := &buildEnv{host: addrSet([]netip.Addr{netip.MustParseAddr("10.0.9.9")})}
	ports := []discoveryv1.EndpointPort{slicePortOf("peer", nil, 7000), slicePortOf("", tcp, 9), slicePortOf("gossip", udp, 7001)}
	v4 := newSlice("db", "db-v4", discoveryv1.AddressTypeIPv4, ports,
		withHostname(readyEP("10.0.0.2"), "db-1"),
		withHostname(readyEP("10.0.0.1"), "db-0"),
		readyEP("10.0.0.3"),           // no hostname
		notReadyEP("10.0.0.4"),        // never named
		ep("10.0.0.5", nil, nil, nil), // unknown readiness counts as ready
		readyEP("127.0.0.1"),          // unsafe
		readyEP("10.0.9.9"),           // this host's own
		readyEP("10.250.0.1"),         // outside endpoint_cidrs
		readyEP("nonsense"),
	)
	again := newSlice("db", "db-v4b", discoveryv1.AddressTypeIPv4, nil, withHostname(readyEP("10.0.0.1"), "other"))
	v6 := newSlice("db", "db-v6", discoveryv1.AddressTypeIPv6, ports[:1], readyEP("fd00:10::7"), readyEP("10.0.0.8"))
	fqdn := newSlice("db", "db-fqdn", discoveryv1.AddressTypeFQDN, nil, readyEP("db.example.com"))

	n, problems := buildNamed(cfg, env, headlessSvc("db"), []*discoveryv1.EndpointSlice{v4, again, v6, fqdn})
	want := []string{
		"10.0.0.1 db-0 gossip/UDP:7001,peer/TCP:7000",
		"10.0.0.2 db-1 gossip/UDP:7001,peer/TCP:7000",
		"10.0.0.3  gossip/UDP:7001,peer/TCP:7000",
		"10.0.0.5  gossip/UDP:7001,peer/TCP:7000",
		"fd00:10::7  peer/TCP:7000",
	}
	if got := namedText(n); !slices.Equal(got, want) {
		t.Errorf("endpoints\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if n.ExternalName != "" || n.Name != "db" || n.Namespace != testNS {
		t.Errorf("named service %+v", n)
	}
	wantReasons := []RefusalReason{ReasonInvalidEndpoint, ReasonOutsideEndpointCIDRs, ReasonUnsafeEndpoint, ReasonUnsafeEndpoint}
	if got := reasons(problems); !slices.Equal(got, wantReasons) {
		t.Errorf("problems %q, want reasons %v", problems, wantReasons)
	}
}

// TestBuildNamedNodePort: with reach = "nodeport" the pods are behind
// their nodes, where a headless service has no port: no addresses.
func TestBuildNamedNodePort(t *testing.T) {
	cfg := testCfg
	cfg.Reach = reach.NodePort
	n, problems := buildNamed(cfg, nil, headlessSvc("db"), []*discoveryv1.EndpointSlice{newSlice("db", "db-1", discoveryv1.AddressTypeIPv4, nil, readyEP("10.0.0.1"))})
	if n == nil || len(n.Endpoints) != 0 || len(problems) != 0 {
		t.Errorf("got %v %v, want the name without addresses", namedText(n), problems)
	}
}

// TestBuildNamedCap: at most max_endpoints_per_port addresses of each
// family, the first in address order, and the cluster hears of it.
func TestBuildNamedCap(t *testing.T) {
	cfg := testCfg
	cfg.MaxEndpointsPerPort = 2
	sl := []*discoveryv1.EndpointSlice{
		newSlice("db", "a", discoveryv1.AddressTypeIPv4, nil, readyEP("10.0.0.3"), readyEP("10.0.0.1"), readyEP("10.0.0.2")),
		newSlice("db", "b", discoveryv1.AddressTypeIPv6, nil, readyEP("fd00::2"), readyEP("fd00::1")),
	}
	n, problems := buildNamed(cfg, nil, headlessSvc("db"), sl)
	if got, want := namedText(n), []string{"10.0.0.1", "10.0.0.2", "fd00::1", "fd00::2"}; !slices.Equal(got, want) {
		t.Errorf("endpoints %q, want %q", got, want)
	}
	if got := reasons(problems); !slices.Equal(got, []RefusalReason{ReasonMaxEndpointsPerPort}) {
		t.Errorf("problems %q", problems)
	}
}

// TestBuildNamedExternalName: a CNAME only to a host name outside every
// zone this host answers, never to an address, a loopback name or a
// cluster's names.
func TestBuildNamedExternalName(t *testing.T) {
	env := &buildEnv{zones: []string{"c1.internal", "cluster.local"}}
	for _, c := range []struct{ target, want, why string }{
		{"db.example.com", "db.example.com", ""},
		{"DB.Example.COM.", "db.example.com", ""},
		{"single", "single", ""},
		{"x.c1.internal", "", "in the zone c1.internal"},
		{"c1.internal", "", "in the zone c1.internal"},
		{"web.shop.svc.cluster.local", "", "in the zone cluster.local"},
		{"xc1.internal", "xc1.internal", ""},
		{"localhost", "", "a loopback name"},
		{"a.localhost.", "", "a loopback name"},
		{"10.0.0.1", "", "an IP address"},
		{"", "", "empty"},
		{"a..b", "", "not a valid host name"},
		{"-a.example.com", "", "not a valid host name"},
		{"a_b.example.com", "", "not a valid host name"},
		{"a b.example.com", "", "not a valid host name"},
		{strings.Repeat("a", 64) + ".com", "", "not a valid host name"},
		{strings.Repeat("a.", 127) + "com", "", "longer than 253 bytes"},
	} {
		n, problems := buildNamed(testCfg, env, newSvc("ext", nil, nil, externalName(c.target)), nil)
		switch {
		case c.why == "" && (n == nil || n.ExternalName != c.want || len(problems) != 0):
			t.Errorf("%q: %v %v, want a CNAME to %q", c.target, n, problems, c.want)
		case c.why != "" && (n != nil || len(problems) != 1 || problems[0].Reason != ReasonExternalName || !strings.Contains(problems[0].Msg, c.why)):
			t.Errorf("%q: %v %q, want refused as %q", c.target, n, problems, c.why)
		}
	}
}

// TestStoreNames: a headless or ExternalName service gives names and never
// a port, follows its slices' changes, and goes with the service.
func TestStoreNames(t *testing.T) {
	ts := newTestStore(t)
	ts.UpsertService("c1", headlessSvc("db"))
	ts.UpsertService("c1", newSvc("ext", nil, nil, externalName("db.example.com")))
	ts.expectChanges(t, 2, "two named services")
	ts.UpsertSlice("c1", newSlice("db", "db-1", discoveryv1.AddressTypeIPv4, nil, withHostname(readyEP("10.0.0.1"), "db-0")))
	ts.expectChanges(t, 1, "a headless service's slice")
	c := ts.cluster(t, "c1")
	if len(c.Ports) != 0 {
		t.Errorf("named services gave ports: %v", c.Ports)
	}
	db, ext := c.Names[types.NamespacedName{Namespace: testNS, Name: "db"}], c.Names[types.NamespacedName{Namespace: testNS, Name: "ext"}]
	if got := namedText(db); !slices.Equal(got, []string{"10.0.0.1 db-0"}) {
		t.Errorf("db: %q", got)
	}
	if ext == nil || ext.ExternalName != "db.example.com" {
		t.Errorf("ext: %+v", ext)
	}
	// The same slice again changes nothing, and the state keeps its value.
	ts.UpsertSlice("c1", newSlice("db", "db-1", discoveryv1.AddressTypeIPv4, nil, withHostname(readyEP("10.0.0.1"), "db-0")))
	ts.expectChanges(t, 0, "the same slice again")
	if again := ts.cluster(t, "c1").Names[types.NamespacedName{Namespace: testNS, Name: "db"}]; again != db {
		t.Error("an unchanged named service was replaced")
	}
	ts.UpsertSlice("c1", newSlice("db", "db-1", discoveryv1.AddressTypeIPv4, nil, notReadyEP("10.0.0.1")))
	ts.expectChanges(t, 1, "its endpoint not ready")
	if got := namedText(ts.cluster(t, "c1").Names[types.NamespacedName{Namespace: testNS, Name: "db"}]); len(got) != 0 {
		t.Errorf("a not-ready endpoint is named: %q", got)
	}
	ts.DeleteService("c1", testNS, "db")
	ts.DeleteService("c1", testNS, "ext")
	ts.expectChanges(t, 2, "both deleted")
	if n := ts.cluster(t, "c1").Names; n != nil {
		t.Errorf("names left after the services went: %v", n)
	}
}

// TestNamedCountAgainstLimits: a named service is held and built like a
// proxied one, so it takes its place under max_services and its endpoints
// count under max_endpoints: a cluster cannot grow this host's memory
// with headless services past its limits.
func TestNamedCountAgainstLimits(t *testing.T) {
	ts := limitedStore(t, Limits{MaxServices: 2, MaxEndpoints: 10})
	ts.UpsertService("c1", headlessSvc("db", bornAt(0)))
	ts.UpsertService("c1", newSvc("ext", nil, nil, externalName("db.example.com"), bornAt(time.Minute)))
	ts.UpsertService("c1", webSvc(bornAt(2*time.Minute)))
	if ts.port(t, webKey) != nil {
		t.Error("a third service was programmed under max_services = 2")
	}
	if got := refusalCount(ts, ReasonMaxServices); got != 1 {
		t.Errorf("limit_services refusals %d, want 1", got)
	}
	ts.DeleteService("c1", testNS, "ext")
	if ts.port(t, webKey) == nil {
		t.Error("web not programmed once ext left room")
	}
	// db grows past max_endpoints: being the oldest, it keeps its place,
	// and web, younger, is refused.
	var many []discoveryv1.Endpoint
	for i := range 12 {
		many = append(many, readyEP(nthIP(i+1)))
	}
	ts.UpsertSlice("c1", newSlice("db", "db-1", discoveryv1.AddressTypeIPv4, nil, many...))
	db := ts.cluster(t, "c1").Names[types.NamespacedName{Namespace: testNS, Name: "db"}]
	if db != nil {
		t.Errorf("db named with %d endpoints over max_endpoints = 10", len(db.Endpoints))
	}
	if got := refusalCount(ts, ReasonMaxEndpoints); got != 1 {
		t.Errorf("limit_endpoints refusals %d, want 1", got)
	}
	if ts.port(t, webKey) == nil {
		t.Error("web refused although db, over the budget alone, is")
	}
}
