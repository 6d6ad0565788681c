package status

import (
	"context"
	"github.com/kube-outpost/kube-outpost/internal/config"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/proxy"
	"github.com/kube-outpost/kube-outpost/internal/proxy/iptables"
	"github.com/kube-outpost/kube-outpost/internal/proxy/ipvs"
)

// The fixture is built the way the daemon builds its state: Kubernetes
// objects through a model.Store, programmed by a real backend into fakes.

func ptr[T any](v T) *T { return &v }

type svcPort struct {
	name  string
	proto corev1.Protocol
	port  int32
}

func service(ns, name, ip string, ports []svcPort, opts ...func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP, ClusterIP: ip, ClusterIPs: []string{ip}},
	}
	for _, p := range ports {
		s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: p.name, Protocol: p.proto, Port: p.port})
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// endpoint conditions
var (
	ready       = discoveryv1.EndpointConditions{Ready: ptr(true), Serving: ptr(true), Terminating: ptr(false)}
	notReady    = discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(false), Terminating: ptr(false)}
	terminating = discoveryv1.EndpointConditions{Ready: ptr(false), Serving: ptr(true), Terminating: ptr(true)}
)

type ep struct {
	addr string
	cond discoveryv1.EndpointConditions
}

func slice(ns, svc, name string, ports []svcPort, target int32, eps ...ep) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for _, p := range ports {
		es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr(p.name), Protocol: ptr(p.proto), Port: ptr(target)})
	}
	for _, e := range eps {
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{Addresses: []string{e.addr}, Conditions: e.cond})
	}
	return es
}

var (
	httpPort   = []svcPort{{"http", corev1.ProtocolTCP, 80}}
	dnsPorts   = []svcPort{{"dns", corev1.ProtocolUDP, 53}, {"dns-tcp", corev1.ProtocolTCP, 53}}
	prodCIDRs  = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")}
	stageCIDRs = []netip.Prefix{netip.MustParsePrefix("10.100.0.0/16")}
)

// fixtureStore has a synced cluster "prod" with a web service (ready,
// not ready, terminating and unsafe endpoints), DNS over UDP and TCP on one
// ClusterIP, a sticky service, one refused for its externalIPs and without
// endpoints; and a cluster "staging" that has not synced.
func fixtureStore(t *testing.T) *model.Store {
	t.Helper()
	s := model.NewStore(nil, nil)
	s.SetClusters([]model.ClusterConfig{{Cluster: config.Cluster{Name: "prod", ServiceCIDRs: prodCIDRs}}, {Cluster: config.Cluster{Name: "staging", ServiceCIDRs: stageCIDRs}}})
	s.UpsertService("prod", service("default", "web", "10.96.0.10", httpPort))
	s.UpsertSlice("prod", slice("default", "web", "web-7f9c2", httpPort, 8080,
		ep{"10.0.1.7", ready}, ep{"10.0.1.8", ready}, ep{"10.0.1.9", ready},
		ep{"10.0.1.10", notReady}, ep{"10.0.1.11", terminating}, ep{"127.0.0.1", ready}))
	s.UpsertService("prod", service("kube-system", "dns", "10.96.0.53", dnsPorts))
	s.UpsertSlice("prod", slice("kube-system", "dns", "dns-x2k4p", dnsPorts, 53, ep{"10.0.2.2", ready}, ep{"10.0.2.3", ready}))
	s.UpsertService("prod", service("default", "sticky", "10.96.0.20", []svcPort{{"", corev1.ProtocolTCP, 443}}, func(s *corev1.Service) {
		s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
		s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr(int32(600))}}
	}))
	s.UpsertSlice("prod", slice("default", "sticky", "sticky-1", []svcPort{{"", corev1.ProtocolTCP, 443}}, 8443, ep{"10.0.3.1", ready}, ep{"10.0.3.2", ready}))
	s.UpsertService("prod", service("default", "legacy", "10.96.0.30", httpPort, func(s *corev1.Service) {
		s.Spec.ExternalIPs = []string{"203.0.113.7"}
	}))
	s.SetSynced("prod")
	s.UpsertService("staging", service("default", "web", "10.100.0.10", httpPort))
	return s
}

// kernel is a mode's explainer, as the daemon passes it to
// BuildExplanation.
type kernel struct {
	mode string
	ex   proxy.Explainer
}

// iptablesKernel programs st with the real iptables backend into a Fake,
// and explains from it; IPv4 only.
func iptablesKernel(t *testing.T, st *model.State) (*iptables.Fake, kernel) {
	t.Helper()
	f := iptables.NewFake()
	if err := iptables.New(iptables.Options{Runner: f, MasqueradeMark: 0x100000}).Sync(context.Background(), st, true); err != nil {
		t.Fatal(err)
	}
	return f, kernel{"iptables", iptables.NewExplainerFor(map[bool]iptables.Runner{false: f})}
}

// ipvsKernel programs st with the real ipvs backend into fakes, and
// explains from them with scheduler rr.
func ipvsKernel(t *testing.T, st *model.State) (*ipvs.FakeKernel, *ipvs.Proxier, kernel) {
	t.Helper()
	k := ipvs.NewFakeKernel()
	p := ipvs.New(ipvs.Options{Kernel: k, IPTables: iptables.NewFake(), IPSet: ipvs.NewFakeIPSet(), MasqueradeMark: 0x100000})
	if err := p.Sync(context.Background(), st, true); err != nil {
		t.Fatal(err)
	}
	return k, p, kernel{"ipvs", ipvs.NewExplainerFor(k, "rr")}
}

func mustQuery(t *testing.T, s string) Query {
	t.Helper()
	q, err := model.ParseQuery(s)
	if err != nil {
		t.Fatal(err)
	}
	return q
}
