package model

import (
	"fmt"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"maps"
	"net/netip"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The fuzzed clusters share one service range, as on a host that needs
// local_service_cidr; a and b allow external IPs, b filters endpoints. The
// host has an address in a's local range and its router in c's service
// range, which a config check refuses but the model must survive; b's
// apiserver is among the endpoints and a's among the external IPs.
var (
	fuzzHost     = netip.MustParseAddr("10.250.0.2")
	fuzzFacts    = HostFacts{Addrs: []netip.Addr{fuzzHost, netip.MustParseAddr("100.64.0.7")}, Gateways: []netip.Addr{netip.MustParseAddr("10.97.0.1")}}
	fuzzClusters = []ClusterConfig{
		{Cluster: config.Cluster{Name: "a", ServiceCIDRs: prefixes("10.96.0.0/16", "fd00:96::/112"), LocalServiceCIDR: netip.MustParsePrefix("100.64.0.0/16"), AllowExternalIPs: prefixes("192.0.2.0/24", "10.250.0.0/24", "100.64.0.0/10")}, APIServerAddrs: []netip.Addr{netip.MustParseAddr("192.0.2.2")}},
		{Cluster: config.Cluster{Name: "b", ServiceCIDRs: prefixes("10.96.0.0/16"), LocalServiceCIDR: netip.MustParsePrefix("100.65.0.0/16"), AllowExternalIPs: prefixes("192.0.2.0/24"), EndpointCIDRs: prefixes("10.244.0.0/16", "fd00:244::/64")}, APIServerAddrs: []netip.Addr{netip.MustParseAddr("10.244.0.2")}},
		{Cluster: config.Cluster{Name: "c", ServiceCIDRs: prefixes("10.97.0.0/16")}},
	}
	fuzzClusterIPs = []string{"10.96.0.10", "10.96.0.11", "10.97.0.10", "fd00:96::10", "10.98.0.1", "bogus", "::ffff:10.96.0.10", "10.96.0.7", "10.97.0.1"}
	fuzzExternal   = []string{"192.0.2.5", "192.0.2.6", "198.51.100.1", "127.0.0.1", "10.250.0.2", "100.64.0.5", "not-an-ip", "2001:db8::5", "192.0.2.2", "100.100.100.200"}
	fuzzEndpoints  = []string{"10.244.0.1", "10.244.0.2", "127.0.0.1", "10.250.0.2", "169.254.1.1", "10.1.0.1", "fd00:244::5", "bogus", "224.0.0.1", "10.244.0.1",
		"10.97.0.1", "100.65.0.3", "168.63.129.16"}
	fuzzPortNums  = []int32{80, 80, 443, 0, 70000, -1, 53}
	fuzzProtos    = []corev1.Protocol{corev1.ProtocolTCP, corev1.ProtocolUDP, "", "ICMP"}
	fuzzPortNames = []string{"", "a", "b"}
)

func prefixes(ss ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range ss {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}

// fuzzInput reads choices from the fuzzer's bytes; past the end, every
// choice is 0.
type fuzzInput struct {
	data []byte
}

func (in *fuzzInput) n(max int) int {
	if len(in.data) == 0 {
		return 0
	}
	b := in.data[0]
	in.data = in.data[1:]
	return int(b) % max
}

func pick[T any](in *fuzzInput, from []T) T { return from[in.n(len(from))] }

func (in *fuzzInput) service(name string) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name,
			CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+in.n(3)), 0))},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
	}
	switch in.n(8) {
	case 0:
		svc.Spec.Type = corev1.ServiceTypeExternalName // a service flipping type
	case 1:
		svc.Spec.Type = corev1.ServiceTypeLoadBalancer
	}
	for range 1 + in.n(2) {
		svc.Spec.ClusterIPs = append(svc.Spec.ClusterIPs, pick(in, fuzzClusterIPs))
	}
	svc.Spec.ClusterIP = svc.Spec.ClusterIPs[0]
	for range in.n(4) {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: pick(in, fuzzPortNames), Protocol: pick(in, fuzzProtos),
			Port: pick(in, fuzzPortNums), TargetPort: intstr.FromInt32(8080)})
	}
	for range in.n(3) {
		svc.Spec.ExternalIPs = append(svc.Spec.ExternalIPs, pick(in, fuzzExternal))
	}
	for range in.n(2) {
		svc.Status.LoadBalancer.Ingress = append(svc.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: pick(in, fuzzExternal)})
	}
	if in.n(4) == 0 {
		svc.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
	}
	return svc
}

func (in *fuzzInput) slice(svc, name string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "ns", Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: pick(in, []discoveryv1.AddressType{discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN}),
	}
	for range in.n(3) {
		p := pick(in, fuzzProtos)
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr(pick(in, fuzzPortNames)), Protocol: &p, Port: ptr(pick(in, fuzzPortNums))})
	}
	for range in.n(5) {
		e := discoveryv1.Endpoint{Addresses: []string{pick(in, fuzzEndpoints)}}
		switch in.n(4) {
		case 0:
			e.Conditions.Ready = ptr(false)
		case 1:
			e.Conditions = discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}
		}
		es.Endpoints = append(es.Endpoints, e)
	}
	return es
}

type objKey struct{ cluster, kind, name string }

// FuzzStore feeds random Services and EndpointSlices of three clusters to a
// store. It must not panic; it must never program what it refuses; and the
// state must depend on the objects alone, not on the order they came in.
func FuzzStore(f *testing.F) {
	f.Add([]byte{0, 0, 0, 1, 0, 2, 1, 0, 0, 0, 2, 0, 1, 0, 1, 2, 3})
	f.Add([]byte("external IPs in two clusters, the same port: a conflict"))
	f.Add([]byte{0, 1, 1, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 1, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		in := &fuzzInput{data: data}
		s := NewStore(nil, nil)
		s.SetClusters(fuzzClusters)
		s.SetHostFacts(fuzzFacts)
		live := map[objKey]any{}
		for len(in.data) > 0 {
			cl := fuzzClusters[in.n(len(fuzzClusters))].Name
			svc := pick(in, []string{"s0", "s1", "s2"})
			switch in.n(4) {
			case 0:
				o := in.service(svc)
				s.UpsertService(cl, o)
				live[objKey{cl, "svc", svc}] = o
			case 1:
				s.DeleteService(cl, "ns", svc)
				delete(live, objKey{cl, "svc", svc})
			case 2:
				es := in.slice(svc, svc+pick(in, []string{"-x", "-y"}))
				s.UpsertSlice(cl, es)
				live[objKey{cl, "slice", es.Name}] = es
			case 3:
				name := svc + pick(in, []string{"-x", "-y"})
				if o, ok := live[objKey{cl, "slice", name}]; ok {
					s.DeleteSlice(cl, o.(*discoveryv1.EndpointSlice))
					delete(live, objKey{cl, "slice", name})
				}
			}
		}
		got := s.Snapshot()
		checkInvariants(t, got)

		// The same objects, in the opposite order, with the host's
		// addresses learnt last: the same state.
		again := NewStore(nil, nil)
		again.SetClusters(fuzzClusters)
		keys := slices.SortedFunc(maps.Keys(live), func(a, b objKey) int {
			return -cmpStrings(a.cluster+a.kind+a.name, b.cluster+b.kind+b.name)
		})
		for _, k := range keys {
			switch o := live[k].(type) {
			case *corev1.Service:
				again.UpsertService(k.cluster, o)
			case *discoveryv1.EndpointSlice:
				again.UpsertSlice(k.cluster, o)
			}
		}
		again.SetHostFacts(fuzzFacts)
		if a, b := dumpState(got), dumpState(again.Snapshot()); a != b {
			t.Fatalf("the state depends on the order of events:\nin event order:\n%s\nin another order:\n%s", a, b)
		}
	})
}

func cmpStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func dumpState(st *State) string {
	var out string
	for _, c := range st.Clusters {
		for _, k := range slices.SortedFunc(maps.Keys(c.Ports), PortKey.Compare) {
			p := c.Ports[k]
			out += fmt.Sprintf("%s vip=%v cip=%v ext=%v port=%d aff=%v eps=%v reason=%q excl=%v\n",
				k, p.VIP(), p.ClusterIP, p.ExternalIPs, p.Port, p.Affinity, p.Endpoints, p.NoEndpointsReason, p.Excluded)
		}
	}
	return out
}

// checkInvariants fails when the state programs anything that must never
// be: an address two ports share, a VIP or external IP at this host, its
// gateway or an apiserver, an external IP outside its cluster's allowlist,
// an endpoint that checkTarget refuses.
func checkInvariants(t *testing.T, st *State) {
	t.Helper()
	cfgs := map[string]ClusterConfig{}
	for _, c := range fuzzClusters {
		cfgs[c.Name] = c
	}
	// What must never be a service address, written out rather than
	// asked of the code under test.
	protected := map[netip.Addr]bool{}
	for _, a := range append(slices.Clone(fuzzFacts.Addrs), fuzzFacts.Gateways...) {
		protected[a] = true
	}
	apiservers := map[netip.Addr]string{}
	for _, c := range fuzzClusters {
		for _, a := range c.APIServerAddrs {
			protected[a] = true
			apiservers[a] = c.Name
		}
	}
	held := map[claimKey]PortKey{}
	for _, c := range st.Clusters {
		cfg := cfgs[c.Name]
		for k, p := range c.Ports {
			if k != p.Key || p.Port == 0 {
				t.Fatalf("port %v: key %v, port %d", k, p.Key, p.Port)
			}
			if !inAny(c.Ranges(), p.VIP()) {
				t.Fatalf("%v: VIP %v outside the cluster's ranges %v", k, p.VIP(), c.Ranges())
			}
			for _, a := range p.Addrs() {
				if protected[a] || unsafeEndpoint(a) != "" {
					t.Fatalf("%v: service address %v is protected", k, a)
				}
			}
			for _, a := range p.Addrs() {
				ck := claimKey{addr: a, port: p.Port, proto: p.Key.Protocol}
				if other, ok := held[ck]; ok {
					t.Fatalf("%v is programmed for both %v and %v", ck, other, k)
				}
				held[ck] = k
			}
			for _, e := range p.ExternalIPs {
				if !inAny(cfg.AllowExternalIPs, e) || e == fuzzHost || unsafeEndpoint(e) != "" || e.Is6() != k.IPv6 {
					t.Fatalf("%v: external IP %v must not be programmed", k, e)
				}
				for _, oc := range st.Clusters {
					if inAny(oc.Ranges(), e) {
						t.Fatalf("%v: external IP %v in cluster %s's range", k, e, oc.Name)
					}
				}
			}
			for _, e := range p.Endpoints {
				ip := e.Addr.Addr()
				if unsafeEndpoint(ip) != "" || slices.Contains(fuzzFacts.Addrs, ip) || slices.Contains(fuzzFacts.Gateways, ip) ||
					e.Addr.Port() == 0 || ip.Is6() != k.IPv6 || (len(cfg.EndpointCIDRs) > 0 && !inAny(cfg.EndpointCIDRs, ip)) {
					t.Fatalf("%v: endpoint %v must not be programmed", k, e.Addr)
				}
				if owner, ok := apiservers[ip]; ok && owner != c.Name {
					t.Fatalf("%v: endpoint %v is cluster %s's apiserver", k, e.Addr, owner)
				}
				for _, oc := range st.Clusters {
					if oc.Name != c.Name && inAny(oc.Ranges(), ip) {
						t.Fatalf("%v: endpoint %v in cluster %s's range", k, e.Addr, oc.Name)
					}
				}
			}
		}
	}
}
