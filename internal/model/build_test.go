package model

import (
	"fmt"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ---- helpers to build Kubernetes objects by hand ----

const testNS = "ns"

var testCfg = ClusterConfig{Cluster: config.Cluster{Name: "c1", ServiceCIDRs: []netip.Prefix{
	netip.MustParsePrefix("10.96.0.0/16"),
	netip.MustParsePrefix("fd00:96::/112"),
}}}

func ptr[T any](v T) *T { return &v }

type svcOpt func(*corev1.Service)

// newSvc makes a ClusterIP Service in testNS. The first of clusterIPs is
// also spec.clusterIP.
func newSvc(name string, clusterIPs []string, ports []corev1.ServicePort, opts ...svcOpt) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: testNS, Name: name},
		Spec: corev1.ServiceSpec{
			Type:       corev1.ServiceTypeClusterIP,
			ClusterIPs: clusterIPs,
			Ports:      ports,
		},
	}
	if len(clusterIPs) > 0 {
		s.Spec.ClusterIP = clusterIPs[0]
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

func svcPort(name string, proto corev1.Protocol, port int32) corev1.ServicePort {
	return corev1.ServicePort{Name: name, Protocol: proto, Port: port}
}

func withLabel(k, v string) svcOpt {
	return func(s *corev1.Service) {
		if s.Labels == nil {
			s.Labels = map[string]string{}
		}
		s.Labels[k] = v
	}
}

func withAffinity(timeout *int32) svcOpt {
	return func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		if timeout != nil {
			s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{
				ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: timeout},
			}
		}
	}
}

// slicePortOf makes an EndpointPort; a nil proto is left nil (= TCP).
func slicePortOf(name string, proto *corev1.Protocol, port int32) discoveryv1.EndpointPort {
	return discoveryv1.EndpointPort{Name: ptr(name), Protocol: proto, Port: ptr(port)}
}

func newSlice(svcName, name string, at discoveryv1.AddressType, ports []discoveryv1.EndpointPort, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: testNS, Name: name,
			Labels: map[string]string{discoveryv1.LabelServiceName: svcName},
		},
		AddressType: at,
		Ports:       ports,
		Endpoints:   eps,
	}
}

// ep makes an endpoint with the given conditions (nil = unset).
func ep(addr string, ready, serving, terminating *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{addr},
		Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating},
	}
}

var (
	yes = ptr(true)
	no  = ptr(false)
)

func readyEP(addr string) discoveryv1.Endpoint { return ep(addr, yes, yes, no) }

// terminatingEP is a terminating endpoint, still serving or not.
func terminatingEP(addr string, serving bool) discoveryv1.Endpoint {
	return ep(addr, no, ptr(serving), yes)
}

func notReadyEP(addr string) discoveryv1.Endpoint { return ep(addr, no, no, no) }

var (
	tcp  = ptr(corev1.ProtocolTCP)
	udp  = ptr(corev1.ProtocolUDP)
	sctp = ptr(corev1.ProtocolSCTP)
)

// ---- expected values ----

func key(svc, port string, proto Protocol, v6 bool) PortKey {
	return PortKey{Cluster: testCfg.Name, Namespace: testNS, Name: svc, Port: port, Protocol: proto, IPv6: v6}
}

// eps parses "ip:port" strings; a leading "~" marks a terminating endpoint.
func eps(ss ...string) []Endpoint {
	var out []Endpoint
	for _, s := range ss {
		term := strings.HasPrefix(s, "~")
		out = append(out, Endpoint{Addr: netip.MustParseAddrPort(strings.TrimPrefix(s, "~")), Terminating: term})
	}
	return out
}

func sp(k PortKey, ip string, port uint16, endpoints []Endpoint, reason string) *ServicePort {
	return &ServicePort{Key: k, ClusterIP: netip.MustParseAddr(ip), Port: port, Endpoints: endpoints, NoEndpointsReason: reason}
}

func withAff(p *ServicePort, d time.Duration) *ServicePort {
	p.Affinity = d
	return p
}

func fmtPort(p *ServicePort) string {
	if p == nil {
		return "<nil>"
	}
	var es []string
	for _, e := range p.Endpoints {
		s := e.Addr.String()
		if e.Terminating {
			s = "~" + s
		}
		es = append(es, s)
	}
	return fmt.Sprintf("{%s %s:%d aff=%s eps=%v reason=%q}", p.Key, p.ClusterIP, p.Port, p.Affinity, es, p.NoEndpointsReason)
}

func fmtPorts(ps []*ServicePort) string {
	var out []string
	for _, p := range ps {
		out = append(out, fmtPort(p))
	}
	return "[" + strings.Join(out, "\n ") + "]"
}

// samePorts compares two lists of ports regardless of order, and without
// their Excluded endpoints: TestExcluded checks those, case by case.
func samePorts(got, want []*ServicePort) bool {
	if len(got) != len(want) {
		return false
	}
	byKey := map[PortKey]*ServicePort{}
	for _, p := range got {
		c := *p
		c.Excluded = nil
		byKey[p.Key] = &c
	}
	for _, w := range want {
		c := *w
		c.Excluded = nil
		if !byKey[w.Key].Equal(&c) {
			return false
		}
	}
	return true
}

// ---- tests ----

func TestBuildService(t *testing.T) {
	const vip = "10.96.0.10"
	const vip6 = "fd00:96::10"
	unnamed := []discoveryv1.EndpointPort{slicePortOf("", tcp, 8080)}
	web := []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 80)}
	k := key("web", "", TCP, false)
	local := corev1.ServiceInternalTrafficPolicyLocal

	tests := []struct {
		name   string
		svc    *corev1.Service
		slices []*discoveryv1.EndpointSlice
		want   []*ServicePort
		// problems are substrings that must each appear in some problem;
		// nil means no problem at all is expected.
		problems []string
	}{
		{
			name: "clusterIP TCP, three ready endpoints sorted",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				readyEP("10.0.0.3"), readyEP("10.0.0.1"), readyEP("10.0.0.2"))},
			want: []*ServicePort{sp(k, vip, 80, eps("10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"), "")},
		},
		{
			name: "clusterIPs empty, clusterIP alone is used",
			svc: func() *corev1.Service {
				s := newSvc("web", []string{vip}, web)
				s.Spec.ClusterIPs = nil
				return s
			}(),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1"))},
			want:   []*ServicePort{sp(k, vip, 80, eps("10.0.0.1:8080"), "")},
		},
		{
			name: "named target port resolved through the slice's port names",
			svc:  newSvc("web", []string{vip}, []corev1.ServicePort{svcPort("http", corev1.ProtocolTCP, 80)}),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{slicePortOf("metrics", tcp, 9090), slicePortOf("http", tcp, 8080)},
				readyEP("10.0.0.1"))},
			want: []*ServicePort{sp(key("web", "http", TCP, false), vip, 80, eps("10.0.0.1:8080"), "")},
		},
		{
			name: "slice port with another name only: no endpoints",
			svc:  newSvc("web", []string{vip}, []corev1.ServicePort{svcPort("http", corev1.ProtocolTCP, 80)}),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{slicePortOf("metrics", tcp, 9090)}, readyEP("10.0.0.1"))},
			want: []*ServicePort{sp(key("web", "http", TCP, false), vip, 80, nil, "no endpoints")},
		},
		{
			name: "multi-port service: one ServicePort per port, each with its target port",
			svc: newSvc("web", []string{vip}, []corev1.ServicePort{
				svcPort("http", corev1.ProtocolTCP, 80), svcPort("https", corev1.ProtocolTCP, 443)}),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{slicePortOf("https", tcp, 8443), slicePortOf("http", tcp, 8080)},
				readyEP("10.0.0.2"), readyEP("10.0.0.1"))},
			want: []*ServicePort{
				sp(key("web", "http", TCP, false), vip, 80, eps("10.0.0.1:8080", "10.0.0.2:8080"), ""),
				sp(key("web", "https", TCP, false), vip, 443, eps("10.0.0.1:8443", "10.0.0.2:8443"), ""),
			},
		},
		{
			name: "UDP",
			svc:  newSvc("web", []string{vip}, []corev1.ServicePort{svcPort("dns", corev1.ProtocolUDP, 53)}),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{slicePortOf("dns", udp, 5353)}, readyEP("10.0.0.1"))},
			want: []*ServicePort{sp(key("web", "dns", UDP, false), vip, 53, eps("10.0.0.1:5353"), "")},
		},
		{
			name: "SCTP",
			svc:  newSvc("web", []string{vip}, []corev1.ServicePort{svcPort("s", corev1.ProtocolSCTP, 3868)}),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{slicePortOf("s", sctp, 3869)}, readyEP("10.0.0.1"))},
			want: []*ServicePort{sp(key("web", "s", SCTP, false), vip, 3868, eps("10.0.0.1:3869"), "")},
		},
		{
			name: "same name TCP and UDP: each protocol gets its own slice port",
			svc: newSvc("web", []string{vip}, []corev1.ServicePort{
				svcPort("dns", corev1.ProtocolTCP, 53), svcPort("dns", corev1.ProtocolUDP, 53)}),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{slicePortOf("dns", udp, 5353), slicePortOf("dns", tcp, 5354)}, readyEP("10.0.0.1"))},
			want: []*ServicePort{
				sp(key("web", "dns", TCP, false), vip, 53, eps("10.0.0.1:5354"), ""),
				sp(key("web", "dns", UDP, false), vip, 53, eps("10.0.0.1:5353"), ""),
			},
		},
		{
			name: "protocol defaulting: empty in service and nil in slice mean TCP",
			svc:  newSvc("web", []string{vip}, []corev1.ServicePort{svcPort("", "", 80)}),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{slicePortOf("", nil, 8080)}, readyEP("10.0.0.1"))},
			want: []*ServicePort{sp(k, vip, 80, eps("10.0.0.1:8080"), "")},
		},
		{
			name: "nil protocol in slice does not match a UDP service port",
			svc:  newSvc("web", []string{vip}, []corev1.ServicePort{svcPort("dns", corev1.ProtocolUDP, 53)}),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{slicePortOf("dns", nil, 53)}, readyEP("10.0.0.1"))},
			want: []*ServicePort{sp(key("web", "dns", UDP, false), vip, 53, nil, "no endpoints")},
		},
		{
			name: "unsupported protocol and out-of-range port are refused, others kept",
			svc: newSvc("web", []string{vip}, []corev1.ServicePort{
				svcPort("a", "ICMP", 1), svcPort("b", corev1.ProtocolTCP, 70000), svcPort("c", corev1.ProtocolTCP, 80)}),
			want:     []*ServicePort{sp(key("web", "c", TCP, false), vip, 80, nil, "no endpoints")},
			problems: []string{`protocol "ICMP" is not supported`, "port 70000 is out of range"},
		},
		{
			name: "slice port number out of range: no endpoints",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
				[]discoveryv1.EndpointPort{slicePortOf("", tcp, 0)}, readyEP("10.0.0.1"))},
			want: []*ServicePort{sp(k, vip, 80, nil, "no endpoints")},
		},
		{
			name: "endpoints over two slices, a duplicate counted once",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1"), readyEP("10.0.0.2")),
				newSlice("web", "web-2", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.2"), readyEP("10.0.0.3")),
			},
			want: []*ServicePort{sp(k, vip, 80, eps("10.0.0.1:8080", "10.0.0.2:8080", "10.0.0.3:8080"), "")},
		},
		{
			name: "only the first address of an endpoint counts; empty endpoint skipped",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				discoveryv1.Endpoint{Addresses: []string{"10.0.0.1", "10.0.0.9"}},
				discoveryv1.Endpoint{})},
			want: []*ServicePort{sp(k, vip, 80, eps("10.0.0.1:8080"), "")},
		},
		{
			name: "ready endpoints win over terminating ones",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				readyEP("10.0.0.1"), terminatingEP("10.0.0.2", true), notReadyEP("10.0.0.3"))},
			want: []*ServicePort{sp(k, vip, 80, eps("10.0.0.1:8080"), "")},
		},
		{
			name: "no ready endpoint: serving terminating ones are used, not-serving ones never",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				terminatingEP("10.0.0.2", true), terminatingEP("10.0.0.3", false), terminatingEP("10.0.0.1", true), notReadyEP("10.0.0.4"))},
			want: []*ServicePort{sp(k, vip, 80, eps("~10.0.0.1:8080", "~10.0.0.2:8080"), "")},
		},
		{
			name: "only not-serving terminating endpoints: no ready endpoints",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				terminatingEP("10.0.0.1", false))},
			want: []*ServicePort{sp(k, vip, 80, nil, "no ready endpoints")},
		},
		{
			name: "nil conditions count as ready",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				ep("10.0.0.2", nil, nil, nil), notReadyEP("10.0.0.1"))},
			want: []*ServicePort{sp(k, vip, 80, eps("10.0.0.2:8080"), "")},
		},
		{
			name: "all not ready",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				notReadyEP("10.0.0.1"), notReadyEP("10.0.0.2"))},
			want: []*ServicePort{sp(k, vip, 80, nil, "no ready endpoints")},
		},
		{
			name: "no slices",
			svc:  newSvc("web", []string{vip}, web),
			want: []*ServicePort{sp(k, vip, 80, nil, "no endpoints")},
		},
		{
			name: "empty slice",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed)},
			want: []*ServicePort{sp(k, vip, 80, nil, "no endpoints")},
		},
		{
			name: "FQDN and IPv6 slices are ignored for an IPv4 ClusterIP",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-1", discoveryv1.AddressTypeFQDN, unnamed, readyEP("example.com")),
				newSlice("web", "web-2", discoveryv1.AddressTypeIPv6, unnamed, readyEP("2001:db8::1")),
			},
			want: []*ServicePort{sp(k, vip, 80, nil, "no endpoints")},
		},
		{
			name:   "nil service",
			svc:    nil,
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1"))},
		},
		{
			name: "headless",
			svc:  newSvc("web", []string{corev1.ClusterIPNone}, web),
		},
		{
			name: "no ClusterIP",
			svc:  newSvc("web", nil, web),
		},
		{
			name: "ExternalName",
			svc: newSvc("web", nil, web, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeExternalName
				s.Spec.ExternalName = "example.com"
			}),
		},
		{
			name: "ExternalName with a ClusterIP still not proxied",
			svc: newSvc("web", []string{vip}, web, func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeExternalName
			}),
		},
		{
			name: "service-proxy-name label",
			svc:  newSvc("web", []string{vip}, web, withLabel("service.kubernetes.io/service-proxy-name", "other")),
		},
		{
			name: "headless label",
			svc:  newSvc("web", []string{vip}, web, withLabel("service.kubernetes.io/headless", "")),
		},
		{
			name:     "ClusterIP outside the service CIDRs is refused",
			svc:      newSvc("web", []string{"192.168.1.1"}, web),
			problems: []string{"192.168.1.1 is outside the cluster's service_cidrs"},
		},
		{
			name:     "ClusterIP that is not an IP is refused",
			svc:      newSvc("web", []string{"bogus"}, web),
			problems: []string{`"bogus" is not an IP address`},
		},
		{
			name: "externalIPs are not programmed, the ClusterIP is",
			svc: newSvc("web", []string{vip}, web, func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"203.0.113.1"}
			}),
			slices:   []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1"))},
			want:     []*ServicePort{sp(k, vip, 80, eps("10.0.0.1:8080"), "")},
			problems: []string{"externalIPs"},
		},
		{
			name: "unsafe and invalid endpoint addresses are dropped and reported",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				readyEP("127.0.0.1"), readyEP("169.254.169.254"), readyEP("169.254.1.1"), readyEP("224.0.0.1"),
				readyEP("0.0.0.0"), readyEP("255.255.255.255"), readyEP("::ffff:127.0.0.2"), readyEP("not-an-ip"),
				readyEP("10.0.0.1"), readyEP("10.0.0.2"))},
			want: []*ServicePort{sp(k, vip, 80, eps("10.0.0.1:8080", "10.0.0.2:8080"), "")},
			problems: []string{
				"127.0.0.1 is a loopback address", "169.254.169.254 is the cloud metadata address",
				"169.254.1.1 is a link-local address", "224.0.0.1 is a multicast address",
				"0.0.0.0 is unspecified", "255.255.255.255 is the broadcast address",
				"127.0.0.2 is a loopback address", `"not-an-ip" is not an IP address`,
			},
		},
		{
			name: "unsafe IPv6 endpoint addresses are dropped and reported",
			svc:  newSvc("web", []string{vip6}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv6, unnamed,
				readyEP("fe80::1"), readyEP("::1"), readyEP("::"), readyEP("ff02::1"), readyEP("fd00:ec2::254"),
				readyEP("2001:db8::1"))},
			want: []*ServicePort{sp(key("web", "", TCP, true), vip6, 80, eps("[2001:db8::1]:8080"), "")},
			problems: []string{
				"fe80::1 is a link-local address", "::1 is a loopback address", ":: is unspecified",
				"ff02::1 is a multicast address", "fd00:ec2::254 is the cloud metadata address",
			},
		},
		{
			name: "only unsafe endpoints: no endpoints",
			svc:  newSvc("web", []string{vip}, web),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed,
				readyEP("127.0.0.1"))},
			want:     []*ServicePort{sp(k, vip, 80, nil, "no endpoints")},
			problems: []string{"127.0.0.1 is a loopback address"},
		},
		{
			name: "dual-stack: one ServicePort per family, each with its own endpoints",
			svc:  newSvc("web", []string{vip, vip6}, web),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-v4", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1"), readyEP("10.0.0.2")),
				newSlice("web", "web-v6", discoveryv1.AddressTypeIPv6, unnamed, readyEP("2001:db8::2"), readyEP("2001:db8::1")),
			},
			want: []*ServicePort{
				sp(k, vip, 80, eps("10.0.0.1:8080", "10.0.0.2:8080"), ""),
				sp(key("web", "", TCP, true), vip6, 80, eps("[2001:db8::1]:8080", "[2001:db8::2]:8080"), ""),
			},
		},
		{
			name: "dual-stack with one family outside the CIDRs: the other is kept",
			svc:  newSvc("web", []string{vip, "fd00:1::1"}, web),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-v4", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1")),
				newSlice("web", "web-v6", discoveryv1.AddressTypeIPv6, unnamed, readyEP("2001:db8::1")),
			},
			want:     []*ServicePort{sp(k, vip, 80, eps("10.0.0.1:8080"), "")},
			problems: []string{"fd00:1::1 is outside"},
		},
		{
			name: "IPv4 address in an IPv6 slice is ignored",
			svc:  newSvc("web", []string{vip6}, web),
			slices: []*discoveryv1.EndpointSlice{
				newSlice("web", "web-v6", discoveryv1.AddressTypeIPv6, unnamed, readyEP("10.0.0.1"), readyEP("::ffff:10.0.0.2")),
			},
			want: []*ServicePort{sp(key("web", "", TCP, true), vip6, 80, nil, "no endpoints")},
		},
		{
			name:   "session affinity ClientIP default timeout",
			svc:    newSvc("web", []string{vip}, web, withAffinity(nil)),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1"))},
			want:   []*ServicePort{withAff(sp(k, vip, 80, eps("10.0.0.1:8080"), ""), 10800*time.Second)},
		},
		{
			name:   "session affinity ClientIP configured timeout",
			svc:    newSvc("web", []string{vip}, web, withAffinity(ptr(int32(60)))),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1"))},
			want:   []*ServicePort{withAff(sp(k, vip, 80, eps("10.0.0.1:8080"), ""), 60*time.Second)},
		},
		{
			name: "session affinity ClientIP with config but nil timeout uses default",
			svc: newSvc("web", []string{vip}, web, withAffinity(nil), func(s *corev1.Service) {
				s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{}}
			}),
			want: []*ServicePort{withAff(sp(k, vip, 80, nil, "no endpoints"), 10800*time.Second)},
		},
		{
			name: "session affinity ClientIP with a zero timeout uses default",
			svc:  newSvc("web", []string{vip}, web, withAffinity(ptr(int32(0)))),
			want: []*ServicePort{withAff(sp(k, vip, 80, nil, "no endpoints"), 10800*time.Second)},
		},
		{
			name: "duplicate port name and protocol: the first wins, the second is reported",
			svc: newSvc("web", []string{vip}, []corev1.ServicePort{
				svcPort("http", corev1.ProtocolTCP, 80), svcPort("http", corev1.ProtocolTCP, 81)}),
			want:     []*ServicePort{sp(key("web", "http", TCP, false), vip, 80, nil, "no endpoints")},
			problems: []string{`duplicate port name "http" for TCP`},
		},
		{
			name: "session affinity None ignores the config",
			svc: newSvc("web", []string{vip}, web, withAffinity(ptr(int32(60))), func(s *corev1.Service) {
				s.Spec.SessionAffinity = corev1.ServiceAffinityNone
			}),
			want: []*ServicePort{sp(k, vip, 80, nil, "no endpoints")},
		},
		{
			name: "internalTrafficPolicy Local: no endpoints and a reason",
			svc: newSvc("web", []string{vip}, web, func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = &local
			}),
			slices: []*discoveryv1.EndpointSlice{newSlice("web", "web-1", discoveryv1.AddressTypeIPv4, unnamed, readyEP("10.0.0.1"))},
			want:   []*ServicePort{sp(k, vip, 80, nil, "internalTrafficPolicy is Local, and an outside host has no node-local endpoints")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := buildService(testCfg, nil, tt.svc, tt.slices)
			if !samePorts(res.ports, tt.want) {
				t.Errorf("ports:\n got %s\nwant %s", fmtPorts(res.ports), fmtPorts(tt.want))
			}
			if tt.problems == nil && len(res.problems) > 0 {
				t.Errorf("unexpected problems: %q", res.problems)
			}
			all := joinProblems(res.problems)
			for _, w := range tt.problems {
				if !strings.Contains(all, w) {
					t.Errorf("problems %q do not mention %q", res.problems, w)
				}
			}
			seen := map[string]bool{}
			for _, p := range res.problems {
				if seen[p.Msg] {
					t.Errorf("problem reported twice: %q", p)
				}
				seen[p.Msg] = true
				if p.Reason == "" {
					t.Errorf("problem without a reason: %q", p)
				}
			}
		})
	}
}

// The problems of endpoints are reported once even when several ports of
// the service use the same bad endpoint.
func TestBuildServiceProblemsDeduplicated(t *testing.T) {
	svc := newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{
		svcPort("a", corev1.ProtocolTCP, 80), svcPort("b", corev1.ProtocolTCP, 81)})
	es := newSlice("web", "web-1", discoveryv1.AddressTypeIPv4,
		[]discoveryv1.EndpointPort{slicePortOf("a", tcp, 80), slicePortOf("b", tcp, 81)}, readyEP("127.0.0.1"))
	res := buildService(testCfg, nil, svc, []*discoveryv1.EndpointSlice{es})
	if len(res.problems) != 1 {
		t.Fatalf("problems = %q, want exactly one", res.problems)
	}
}

// The order of slices must not matter.
func TestBuildServiceSliceOrder(t *testing.T) {
	svc := newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 80)})
	ports := []discoveryv1.EndpointPort{slicePortOf("", tcp, 8080)}
	a := newSlice("web", "a", discoveryv1.AddressTypeIPv4, ports, readyEP("10.0.0.5"), terminatingEP("10.0.0.1", true))
	b := newSlice("web", "b", discoveryv1.AddressTypeIPv4, ports, readyEP("10.0.0.3"), readyEP("10.0.0.5"))
	r1 := buildService(testCfg, nil, svc, []*discoveryv1.EndpointSlice{a, b})
	r2 := buildService(testCfg, nil, svc, []*discoveryv1.EndpointSlice{b, a})
	if !samePorts(r1.ports, r2.ports) {
		t.Fatalf("order matters:\n%s\n%s", fmtPorts(r1.ports), fmtPorts(r2.ports))
	}
}

// An IP reused by a new pod while the old pod is still terminating appears
// twice: once ready (new pod), once terminating (old pod). kube-proxy keeps
// the non-terminating one (pkg/proxy/endpointslicecache.go addEndpoints);
// the ready endpoint must stay among the ready ones.
func TestBuildServiceDuplicatePrefersReady(t *testing.T) {
	svc := newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 80)})
	ports := []discoveryv1.EndpointPort{slicePortOf("", tcp, 8080)}
	for _, slices := range [][]*discoveryv1.EndpointSlice{
		// Same slice (two pods, same IP) and two slices, in both orders.
		{newSlice("web", "a", discoveryv1.AddressTypeIPv4, ports, readyEP("10.0.0.1"), terminatingEP("10.0.0.2", true), readyEP("10.0.0.2"))},
		{newSlice("web", "a", discoveryv1.AddressTypeIPv4, ports, readyEP("10.0.0.1"), terminatingEP("10.0.0.2", true)),
			newSlice("web", "b", discoveryv1.AddressTypeIPv4, ports, readyEP("10.0.0.2"))},
		{newSlice("web", "a", discoveryv1.AddressTypeIPv4, ports, readyEP("10.0.0.1"), readyEP("10.0.0.2")),
			newSlice("web", "b", discoveryv1.AddressTypeIPv4, ports, terminatingEP("10.0.0.2", true))},
	} {
		res := buildService(testCfg, nil, svc, slices)
		want := sp(key("web", "", TCP, false), "10.96.0.10", 80, eps("10.0.0.1:8080", "10.0.0.2:8080"), "")
		if len(res.ports) != 1 || !res.ports[0].Equal(want) {
			t.Errorf("got %s, want %s", fmtPorts(res.ports), fmtPort(want))
		}
	}
}

// The EndpointConditions API says a nil serving "should be interpreted as
// true", and kube-proxy does so; a terminating endpoint with serving unset
// is a usable fallback.
func TestBuildServiceNilServingMeansServing(t *testing.T) {
	svc := newSvc("web", []string{"10.96.0.10"}, []corev1.ServicePort{svcPort("", corev1.ProtocolTCP, 80)})
	es := newSlice("web", "a", discoveryv1.AddressTypeIPv4, []discoveryv1.EndpointPort{slicePortOf("", tcp, 8080)},
		ep("10.0.0.1", no, nil, yes))
	res := buildService(testCfg, nil, svc, []*discoveryv1.EndpointSlice{es})
	want := sp(key("web", "", TCP, false), "10.96.0.10", 80, eps("~10.0.0.1:8080"), "")
	if len(res.ports) != 1 || !res.ports[0].Equal(want) {
		t.Errorf("got %s, want %s", fmtPorts(res.ports), fmtPort(want))
	}
}

func TestUnsafeEndpoint(t *testing.T) {
	tests := []struct {
		ip     string
		unsafe bool
	}{
		{"127.0.0.1", true},
		{"127.255.0.1", true},
		{"169.254.169.254", true},
		{"169.254.1.1", true},
		{"224.0.0.1", true},
		{"239.1.2.3", true},
		{"0.0.0.0", true},
		{"255.255.255.255", true},
		{"fe80::1", true},
		{"::1", true},
		{"::", true},
		{"ff02::1", true},
		{"ff05::2", true},
		{"fd00:ec2::254", true},
		{"10.0.0.1", false},
		{"192.168.1.1", false},
		{"100.64.0.1", false},
		{"2001:db8::1", false},
		{"fd00::1", false},
	}
	for _, tt := range tests {
		got := unsafeEndpoint(netip.MustParseAddr(tt.ip))
		if (got != "") != tt.unsafe {
			t.Errorf("unsafeEndpoint(%s) = %q, want unsafe=%v", tt.ip, got, tt.unsafe)
		}
	}
}

func TestPortKeyString(t *testing.T) {
	tests := []struct {
		k    PortKey
		want string
	}{
		{PortKey{Cluster: "c", Namespace: "n", Name: "s", Protocol: TCP}, "c/n/s"},
		{PortKey{Cluster: "c", Namespace: "n", Name: "s", Port: "http", Protocol: TCP}, "c/n/s:http"},
		{PortKey{Cluster: "c", Namespace: "n", Name: "s", Port: "dns", Protocol: UDP, IPv6: true}, "c/n/s:dns/UDP(v6)"},
	}
	for _, tt := range tests {
		if got := tt.k.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.k, got, tt.want)
		}
	}
}

func TestServicePortEqual(t *testing.T) {
	base := func() *ServicePort {
		return sp(key("web", "", TCP, false), "10.96.0.10", 80, eps("10.0.0.1:8080"), "")
	}
	var nilPort *ServicePort
	if !nilPort.Equal(nil) {
		t.Error("nil != nil")
	}
	if base().Equal(nil) || nilPort.Equal(base()) {
		t.Error("nil == non-nil")
	}
	if !base().Equal(base()) {
		t.Error("identical ports differ")
	}
	mods := map[string]func(p *ServicePort){
		"key":         func(p *ServicePort) { p.Key.IPv6 = true },
		"clusterIP":   func(p *ServicePort) { p.ClusterIP = netip.MustParseAddr("10.96.0.11") },
		"port":        func(p *ServicePort) { p.Port = 81 },
		"affinity":    func(p *ServicePort) { p.Affinity = time.Second },
		"endpoints":   func(p *ServicePort) { p.Endpoints = eps("10.0.0.2:8080") },
		"terminating": func(p *ServicePort) { p.Endpoints = eps("~10.0.0.1:8080") },
		"count":       func(p *ServicePort) { p.Endpoints = nil },
		"reason":      func(p *ServicePort) { p.NoEndpointsReason = "x" },
		"excluded": func(p *ServicePort) {
			p.Excluded = []ExcludedEndpoint{{Address: "10.0.0.2", Port: 8080, Reason: ExcludedNotReady, Detail: "not ready"}}
		},
	}
	for name, m := range mods {
		p := base()
		m(p)
		if p.Equal(base()) {
			t.Errorf("%s change not seen by Equal", name)
		}
	}
}
