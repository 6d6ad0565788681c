package model

import (
	"github.com/kube-outpost/kube-outpost/internal/config"
	"log/slog"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// Two clusters and a host, as a hostile cluster "evil" sees them beside an
// honest one: the host at 10.250.0.2 on 10.250.0.0/24 with its router at
// 10.250.0.1, honest's apiserver at 10.250.0.10, evil's at 10.250.0.11.
var (
	honestCfg = ClusterConfig{Cluster: config.Cluster{Name: "honest", ServiceCIDRs: prefixes("10.96.0.0/16", "fd00:96::/112")}, APIServerAddrs: []netip.Addr{netip.MustParseAddr("10.250.0.10")}}
	// evil's service range holds the host's network, which check-config
	// refuses; the model must hold on its own all the same.
	evilCfg   = ClusterConfig{Cluster: config.Cluster{Name: "evil", ServiceCIDRs: prefixes("10.250.0.0/16"), LocalServiceCIDR: netip.MustParsePrefix("100.64.0.0/16"), AllowExternalIPs: prefixes("0.0.0.0/0", "::/0")}, APIServerAddrs: []netip.Addr{netip.MustParseAddr("10.250.0.11")}}
	hostFacts = HostFacts{
		Addrs:    []netip.Addr{netip.MustParseAddr("10.250.0.2"), netip.MustParseAddr("127.0.0.1")},
		Gateways: []netip.Addr{netip.MustParseAddr("10.250.0.1"), netip.MustParseAddr("fe80::1")},
	}
)

func newHostileStore(t *testing.T, evil ClusterConfig) *testStore {
	t.Helper()
	ts := &testStore{log: &warnCounter{}}
	ts.Store = NewStore(slog.New(ts.log), func() { ts.changes++ })
	ts.SetClusters([]ClusterConfig{honestCfg, evil})
	ts.SetHostFacts(hostFacts)
	ts.changes = 0
	return ts
}

// testEnv is the buildEnv newHostileStore makes, for the pure checks.
func testEnv() *buildEnv {
	s := NewStore(nil, nil)
	s.SetClusters([]ClusterConfig{honestCfg, evilCfg})
	s.SetHostFacts(hostFacts)
	return &s.env
}

func TestUnsafeEndpointPlatformAddrs(t *testing.T) {
	for ip, want := range map[string]string{
		"100.100.100.200":        "Alibaba Cloud's metadata address",
		"::ffff:100.100.100.200": "Alibaba Cloud's metadata address",
		"168.63.129.16":          "Azure's WireServer (platform agent) address",
		"fd20:ce::254":           "Google Cloud's metadata address",
		"fd00:ec2::254":          "the cloud metadata address",
		"fd00:ec2::253":          "AWS's DNS resolver address",
		"fd00:ec2::123":          "AWS's time service address",
		"fd00:ec2::23":           "the EKS Pod Identity Agent address",
		"169.254.169.254":        "the cloud metadata address",
		"169.254.170.23":         "a link-local address", // EKS Pod Identity, IPv4: the range covers it
		"169.254.169.253":        "a link-local address",
		// Neighbours of the platform addresses are ordinary addresses.
		"100.100.100.201": "",
		"168.63.129.17":   "",
		"fd20:ce::253":    "",
		"fd00:ec2::1":     "",
	} {
		if got := unsafeEndpoint(netip.MustParseAddr(ip)); got != want {
			t.Errorf("unsafeEndpoint(%s) = %q, want %q", ip, got, want)
		}
	}
}

// TestCheckTarget: the one check of every address a cluster's objects make
// this host send to.
func TestCheckTarget(t *testing.T) {
	env := testEnv()
	filtered := honestCfg
	filtered.EndpointCIDRs = prefixes("10.244.0.0/16", "10.250.0.0/24")
	for _, tt := range []struct {
		name   string
		cfg    ClusterConfig
		ip     string
		reason Exclusion
		detail string
	}{
		{"a pod", honestCfg, "10.244.1.5", "", ""},
		{"a neighbour on the host's network (AWS VPC CNI pods)", honestCfg, "10.250.0.77", "", ""},
		{"loopback", honestCfg, "127.0.0.5", ExcludedUnsafe, "a loopback address"},
		{"metadata", honestCfg, "169.254.169.254", ExcludedUnsafe, "the cloud metadata address"},
		{"Alibaba metadata", honestCfg, "100.100.100.200", ExcludedUnsafe, "Alibaba Cloud's metadata address"},
		{"Azure WireServer", honestCfg, "168.63.129.16", ExcludedUnsafe, "Azure's WireServer (platform agent) address"},
		{"the host", honestCfg, "10.250.0.2", ExcludedUnsafe, "this host's own address"},
		{"the default gateway", honestCfg, "10.250.0.1", ExcludedUnsafe, "this host's default gateway"},
		{"another cluster's apiserver", honestCfg, "10.250.0.11", ExcludedUnsafe, `cluster "evil"'s apiserver address`},
		{"its own apiserver: the kubernetes Service", honestCfg, "10.250.0.10", "", ""},
		{"another cluster's local range", honestCfg, "100.64.0.9", ExcludedUnsafe, `in cluster "evil"'s service range 100.64.0.0/16 on this host`},
		{"another cluster's service range", evilCfg, "10.96.0.1", ExcludedUnsafe, `in cluster "honest"'s service range 10.96.0.0/16 on this host`},
		{"another cluster's IPv6 service range", evilCfg, "fd00:96::1", ExcludedUnsafe, `in cluster "honest"'s service range fd00:96::/112 on this host`},
		{"outside endpoint_cidrs", filtered, "10.1.0.1", ExcludedOutsideEndpointCIDRs, "outside the cluster's endpoint_cidrs [10.244.0.0/16 10.250.0.0/24]"},
		{"inside endpoint_cidrs, still not the host", filtered, "10.250.0.2", ExcludedUnsafe, "this host's own address"},
		{"inside endpoint_cidrs, still not another apiserver", filtered, "10.250.0.11", ExcludedUnsafe, `cluster "evil"'s apiserver address`},
		{"outside endpoint_cidrs is the reason given first", filtered, "100.64.0.9", ExcludedOutsideEndpointCIDRs, "outside the cluster's endpoint_cidrs [10.244.0.0/16 10.250.0.0/24]"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r, detail := env.checkTarget(tt.cfg, netip.MustParseAddr(tt.ip))
			if r != tt.reason || detail != tt.detail {
				t.Errorf("checkTarget(%s, %s) = %q, %q; want %q, %q", tt.cfg.Name, tt.ip, r, detail, tt.reason, tt.detail)
			}
		})
	}
}

// TestStoreCheckTarget: what package routes calls for a route's gateway.
func TestStoreCheckTarget(t *testing.T) {
	ts := newHostileStore(t, evilCfg)
	for _, tt := range []struct {
		cluster, ip string
		reason      Exclusion
	}{
		{"honest", "10.250.0.77", ""},
		{"honest", "::ffff:10.250.0.2", ExcludedUnsafe},
		{"honest", "10.250.0.1", ExcludedUnsafe},
		{"evil", "10.250.0.10", ExcludedUnsafe},
		{"evil", "fe80::1%eth0", ExcludedInvalid},
		{"gone", "10.250.0.77", ExcludedUnsafe},
	} {
		if r, detail := ts.CheckTarget(tt.cluster, netip.MustParseAddr(tt.ip)); r != tt.reason {
			t.Errorf("CheckTarget(%s, %s) = %q (%s), want %q", tt.cluster, tt.ip, r, detail, tt.reason)
		}
	}
	// The facts it uses are the store's current ones.
	ts.SetHostFacts(HostFacts{Addrs: hostFacts.Addrs})
	if r, _ := ts.CheckTarget("honest", netip.MustParseAddr("10.250.0.1")); r != "" {
		t.Errorf("the old gateway is still refused after the default route changed: %q", r)
	}
}

// TestEndpointsAtProtectedAddresses: EndpointSlices of a hostile cluster
// that point at the host, its router, the platform or another cluster are
// dropped, each with its reason for explain and a problem line.
func TestEndpointsAtProtectedAddresses(t *testing.T) {
	ts := newHostileStore(t, evilCfg)
	ts.UpsertService("honest", webSvc())
	ts.UpsertSlice("honest", webSlice("web-1", readyEP("10.250.0.10"), readyEP("10.244.0.5")))
	checkEndpoints(t, ts.port(t, PortKey{Cluster: "honest", Namespace: testNS, Name: "web", Protocol: TCP}), "10.244.0.5:8080", "10.250.0.10:8080")

	ts.UpsertService("evil", newSvc("web", []string{"10.250.7.7"}, webPorts))
	ts.UpsertSlice("evil", webSlice("web-1", readyEP("10.250.0.1"), readyEP("10.250.0.10"), readyEP("10.96.0.10"),
		readyEP("100.100.100.200"), readyEP("168.63.129.16"), readyEP("10.250.0.99")))
	p := ts.port(t, PortKey{Cluster: "evil", Namespace: testNS, Name: "web", Protocol: TCP})
	checkEndpoints(t, p, "10.250.0.99:8080")
	if got := fmtExcluded(p.Excluded); !reflect.DeepEqual(got, []string{
		"10.96.0.10:8080 unsafe-address", "10.250.0.1:8080 unsafe-address", "10.250.0.10:8080 unsafe-address",
		"100.100.100.200:8080 unsafe-address", "168.63.129.16:8080 unsafe-address",
	}) {
		t.Errorf("excluded %q", got)
	}
	r := refusalOf(ts, "evil", "web")
	for _, want := range []string{
		"EndpointSlice web-1: endpoint 10.250.0.1 is this host's default gateway: dropped",
		`EndpointSlice web-1: endpoint 10.250.0.10 is cluster "honest"'s apiserver address: dropped`,
		`EndpointSlice web-1: endpoint 10.96.0.10 is in cluster "honest"'s service range 10.96.0.0/16 on this host: dropped`,
		"EndpointSlice web-1: endpoint 100.100.100.200 is Alibaba Cloud's metadata address: dropped",
		"EndpointSlice web-1: endpoint 168.63.129.16 is Azure's WireServer (platform agent) address: dropped",
	} {
		if !strings.Contains(r, want) {
			t.Errorf("refusal %q lacks %q", r, want)
		}
	}
	if n := reasonCount(ts, "evil", ReasonUnsafeEndpoint); n != 1 {
		t.Errorf("unsafe_endpoint count %d, want 1 (one object change)", n)
	}

	// The default route moves: the old router is a neighbour again, the
	// new one is refused.
	ts.changes = 0
	ts.SetHostFacts(HostFacts{Addrs: hostFacts.Addrs, Gateways: []netip.Addr{netip.MustParseAddr("10.250.0.99")}})
	ts.expectChanges(t, 1, "a new default gateway")
	checkEndpoints(t, ts.port(t, PortKey{Cluster: "evil", Namespace: testNS, Name: "web", Protocol: TCP}), "10.250.0.1:8080")
	ts.SetHostFacts(HostFacts{Addrs: hostFacts.Addrs, Gateways: []netip.Addr{netip.MustParseAddr("::ffff:10.250.0.99")}})
	ts.expectChanges(t, 0, "the same facts again")
	ts.SetHostAddrs(hostFacts.Addrs)
	ts.expectChanges(t, 0, "the same addresses, gateways kept")
}

// TestProtectedVIPs: a ClusterIP whose address on this host is the host's
// own, its gateway, an apiserver or a special address is refused, with a
// problem counted as protected_address; re-evaluated when the host's facts
// change.
func TestProtectedVIPs(t *testing.T) {
	direct := evilCfg
	direct.LocalServiceCIDR = netip.Prefix{}
	ts := newHostileStore(t, direct)
	evilKey := func(name string) PortKey {
		return PortKey{Cluster: "evil", Namespace: testNS, Name: name, Protocol: TCP}
	}
	for name, ip := range map[string]string{"ssh": "10.250.0.2", "router": "10.250.0.1", "api": "10.250.0.10", "own-api": "10.250.0.11", "ok": "10.250.9.9"} {
		ts.UpsertService("evil", newSvc(name, []string{ip}, webPorts))
	}
	for name, want := range map[string]string{
		"ssh":     "spec.clusterIPs[0] 10.250.0.2 is this host's own address: refused" + protectedSuffix,
		"router":  "spec.clusterIPs[0] 10.250.0.1 is this host's default gateway: refused" + protectedSuffix,
		"api":     `spec.clusterIPs[0] 10.250.0.10 is cluster "honest"'s apiserver address: refused` + protectedSuffix,
		"own-api": `spec.clusterIPs[0] 10.250.0.11 is cluster "evil"'s apiserver address: refused` + protectedSuffix,
	} {
		if p := ts.port(t, evilKey(name)); p != nil {
			t.Errorf("%s: programmed at %v", name, p.VIP())
		}
		if r := refusalOf(ts, "evil", name); r != want {
			t.Errorf("%s: refusal\n %q, want\n %q", name, r, want)
		}
	}
	if ts.port(t, evilKey("ok")) == nil {
		t.Error("a ClusterIP at no protected address is not programmed")
	}
	if n := reasonCount(ts, "evil", ReasonProtectedAddress); n != 4 {
		t.Errorf("protected_address count %d, want 4", n)
	}

	// The host takes 10.250.9.9 later (an address added by DHCP, a VPN):
	// the VIP goes at once, and comes back when the address goes.
	ts.changes = 0
	ts.SetHostFacts(HostFacts{Addrs: append([]netip.Addr{netip.MustParseAddr("10.250.9.9")}, hostFacts.Addrs...), Gateways: hostFacts.Gateways})
	ts.expectChanges(t, 1, "a new host address under a VIP")
	if ts.port(t, evilKey("ok")) != nil {
		t.Error("a VIP at a new host address is still programmed")
	}
	ts.SetHostFacts(hostFacts)
	if ts.port(t, evilKey("ok")) == nil {
		t.Error("the VIP did not come back when the host dropped the address")
	}

	// Mapped: the local address is what this host captures.
	ts = newHostileStore(t, evilCfg)
	ts.SetHostFacts(HostFacts{Addrs: append([]netip.Addr{netip.MustParseAddr("100.64.0.7")}, hostFacts.Addrs...), Gateways: hostFacts.Gateways})
	ts.UpsertService("evil", newSvc("mapped", []string{"10.250.0.7"}, webPorts))
	want := "spec.clusterIPs[0] 10.250.0.7 is reached at 100.64.0.7 on this host, which is this host's own address: refused" + protectedSuffix
	if r := refusalOf(ts, "evil", "mapped"); r != want || ts.port(t, evilKey("mapped")) != nil {
		t.Errorf("a mapped VIP at a host address: refusal %q, want %q", r, want)
	}
	// Unmapped ClusterIP 10.250.0.2 is mapped away: 100.64.0.2 is no one's.
	ts.UpsertService("evil", newSvc("ssh", []string{"10.250.0.2"}, webPorts))
	if p := ts.port(t, evilKey("ssh")); p == nil || p.VIP().String() != "100.64.0.2" {
		t.Errorf("a ClusterIP mapped away from the host's address: %v", p)
	}
}

// TestExternalIPsNeverProtected: external IPs may be neither an apiserver
// (its own cluster's included: it would capture our watch of it), nor a
// default gateway, nor a platform address, even inside allow_external_ips.
func TestExternalIPsNeverProtected(t *testing.T) {
	ts := newHostileStore(t, evilCfg)
	ts.UpsertService("evil", newSvc("web", []string{"10.250.0.7"}, webPorts, externalIPsOpt(
		"10.250.0.10", "10.250.0.11", "10.250.0.1", "100.100.100.200", "168.63.129.16", "10.250.0.2", "192.0.2.9"),
		func(s *corev1.Service) {
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "10.250.0.10"}}
		}))
	p := ts.port(t, PortKey{Cluster: "evil", Namespace: testNS, Name: "web", Protocol: TCP})
	if got := addrsString(p.ExternalIPs); got != "192.0.2.9" {
		t.Errorf("external IPs %s, want only 192.0.2.9", got)
	}
	r := refusalOf(ts, "evil", "web")
	for _, want := range []string{
		`spec.externalIPs[0] 10.250.0.10 is cluster "honest"'s apiserver address: never programmed` + protectedSuffix,
		`spec.externalIPs[1] 10.250.0.11 is cluster "evil"'s apiserver address: never programmed`,
		"spec.externalIPs[2] 10.250.0.1 is this host's default gateway: never programmed",
		"spec.externalIPs[3] 100.100.100.200 is Alibaba Cloud's metadata address: never programmed",
		"spec.externalIPs[4] 168.63.129.16 is Azure's WireServer (platform agent) address: never programmed",
		"spec.externalIPs[5] 10.250.0.2 is this host's own address: never programmed",
		`status.loadBalancer.ingress[0].ip 10.250.0.10 is cluster "honest"'s apiserver address: never programmed`,
	} {
		if !strings.Contains(r, want) {
			t.Errorf("refusal %q lacks %q", r, want)
		}
	}
	if n := reasonCount(ts, "evil", ReasonExternalIPs); n != 1 {
		t.Errorf("external_ips count %d, want 1", n)
	}
}

// TestNodePortReachChecksNodes: with reach = "nodeport" the nodes are where
// packets go: a Node whose address is the host's, its gateway, another
// cluster's apiserver or outside endpoint_cidrs is refused like such an
// endpoint; endpoint_cidrs then holds the nodes, not the pods.
func TestNodePortReachChecksNodes(t *testing.T) {
	evil := evilCfg
	evil.LocalServiceCIDR = netip.Prefix{}
	evil.ServiceCIDRs = prefixes("10.97.0.0/16")
	evil.Reach = reach.NodePort
	evil.EndpointCIDRs = prefixes("192.0.2.0/24", "10.250.0.0/24")
	ts := newHostileStore(t, evil)
	k := PortKey{Cluster: "evil", Namespace: testNS, Name: "web", Protocol: TCP}
	ts.UpsertService("evil", newSvc("web", []string{"10.97.0.10"}, webPorts, withNodePort(30080)))
	// The pod is outside endpoint_cidrs: with reach = "nodeport" it is
	// not where packets go, so it still counts as an endpoint.
	ts.UpsertSlice("evil", webSlice("web-1", readyEP("10.244.0.5")))
	ts.SetNodes("evil", []NodeInfo{
		testNode("good", true, "192.0.2.1"), testNode("self", true, "10.250.0.2"), testNode("router", true, "10.250.0.1"),
		testNode("api", true, "10.250.0.10"), testNode("far", true, "198.51.100.1"), testNode("ali", true, "100.100.100.200"),
	})
	p := ts.port(t, k)
	checkEndpoints(t, p, "192.0.2.1:30080")
	var got []string
	for _, e := range p.Excluded {
		got = append(got, e.String()+" "+string(e.Reason)+" "+e.Detail)
	}
	if want := []string{
		"10.250.0.1:30080 unsafe-address node router: this host's default gateway",
		"10.250.0.2:30080 unsafe-address node self: this host's own address",
		`10.250.0.10:30080 unsafe-address node api: cluster "honest"'s apiserver address`,
		"198.51.100.1:30080 outside-endpoint-cidrs node far: outside the cluster's endpoint_cidrs [192.0.2.0/24 10.250.0.0/24]",
	}; !reflect.DeepEqual(got, want) {
		t.Errorf("excluded\n %q\nwant\n %q", got, want)
	}
	r := refusalOf(ts, "evil", "web")
	for _, want := range []string{
		"node self: address 10.250.0.2 is this host's own address: dropped",
		"node router: address 10.250.0.1 is this host's default gateway: dropped",
		`node api: address 10.250.0.10 is cluster "honest"'s apiserver address: dropped`,
		"node far: address 198.51.100.1 is outside endpoint_cidrs [192.0.2.0/24 10.250.0.0/24]: dropped",
	} {
		if !strings.Contains(r, want) {
			t.Errorf("refusal %q lacks %q", r, want)
		}
	}
	if strings.Contains(r, "10.244.0.5") {
		t.Errorf("the pod is reported although reach = nodeport never sends to it: %q", r)
	}
	if ts.port(t, k).Endpoints == nil {
		t.Fatal("no endpoints")
	}

	// Only refused nodes: the port refuses connections, and says why.
	ts.SetNodes("evil", []NodeInfo{testNode("self", true, "10.250.0.2")})
	if p := ts.port(t, k); len(p.Endpoints) != 0 || !strings.Contains(p.NoEndpointsReason, "1 node's address is refused") {
		t.Errorf("only a refused node: %s", fmtPort(p))
	}
}
