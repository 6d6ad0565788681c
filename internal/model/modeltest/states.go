package modeltest

import (
	"net/netip"

	"k8s.io/apimachinery/pkg/types"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// The service ranges of TwoClusters.
var (
	AlphaCIDRs = []string{"10.96.0.0/16", "fd00:96::/112"}
	BetaCIDRs  = []string{"10.97.0.0/16", "fd00:97::/112"}
)

// TwoClusters is the state most backend tests start from: two clusters,
// services of every protocol, a multi-port one, ones without endpoints,
// and IPv6 ports that an IPv4 backend must ignore (and the reverse).
func TwoClusters() *model.State {
	return State(
		Cluster("alpha", true, AlphaCIDRs,
			Svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80, "10.0.1.1:8080", "10.0.1.2:8080", "10.0.1.3:8080"),
			Svc("alpha", "kube-system", "dns", "dns", model.UDP, "10.96.0.11", 53, "10.0.2.1:5353", "10.0.2.2:5353"),
			Svc("alpha", "default", "sig", "", model.SCTP, "10.96.0.12", 9999, "10.0.3.1:9999"),
			Svc("alpha", "default", "multi", "http", model.TCP, "10.96.0.13", 80, "10.0.4.1:8080"),
			Svc("alpha", "default", "multi", "https", model.TCP, "10.96.0.13", 443, "10.0.4.1:8443", "10.0.4.2:8443"),
			Svc("alpha", "default", "empty", "http", model.TCP, "10.96.0.14", 80),
			Svc("alpha", "default", "empty", "dns", model.UDP, "10.96.0.14", 53),
			Svc("alpha", "default", "web", "http", model.TCP, "fd00:96::10", 80, "[fd00:1::1]:8080", "[fd00:1::2]:8080", "[fd00:1::3]:8080"),
			Svc("alpha", "kube-system", "dns", "dns", model.UDP, "fd00:96::11", 53, "[fd00:2::1]:5353", "[fd00:2::2]:5353"),
			Svc("alpha", "default", "empty", "http", model.TCP, "fd00:96::14", 80),
			Svc("alpha", "default", "empty", "dns", model.UDP, "fd00:96::14", 53),
		),
		Cluster("beta", true, BetaCIDRs,
			Svc("beta", "default", "api", "https", model.TCP, "10.97.0.10", 443, "10.1.0.1:6443", "10.1.0.2:6443"),
			Svc("beta", "default", "api", "https", model.TCP, "fd00:97::10", 443, "[fd00:3::1]:6443"),
		),
	)
}

// WithNodePort returns a copy of sp with nodePort np, served when served.
func WithNodePort(sp *model.ServicePort, np uint16, served bool) *model.ServicePort {
	c := *sp
	c.NodePort, c.ServedNodePort = np, 0
	if served {
		c.ServedNodePort = np
	}
	return &c
}

// NodePorts: alpha serves node ports (one TCP and one UDP port with
// endpoints, two without, one refused by the model), beta does not.
func NodePorts(hostAddrs ...netip.Addr) *model.State {
	alpha := Cluster("alpha", true, AlphaCIDRs,
		WithNodePort(Svc("alpha", "default", "web", "http", model.TCP, "10.96.0.10", 80, "10.0.1.1:8080", "10.0.1.2:8080"), 30080, true),
		WithNodePort(Svc("alpha", "default", "dns", "dns", model.UDP, "10.96.0.11", 53, "10.0.2.1:5353"), 30053, true),
		WithNodePort(Svc("alpha", "default", "empty", "http", model.TCP, "10.96.0.14", 80), 30081, true),
		WithNodePort(Svc("alpha", "default", "empty", "dns", model.UDP, "10.96.0.14", 53), 30082, true),
		WithNodePort(Svc("alpha", "default", "refused", "", model.TCP, "10.96.0.15", 80, "10.0.5.1:80"), 30083, false),
		Svc("alpha", "default", "plain", "", model.TCP, "10.96.0.16", 80, "10.0.6.1:80"),
		WithNodePort(Svc("alpha", "default", "web", "http", model.TCP, "fd00:96::10", 80, "[fd00:1::1]:8080"), 30080, true),
		WithNodePort(Svc("alpha", "default", "empty", "http", model.TCP, "fd00:96::14", 80), 30081, true),
		WithNodePort(Svc("alpha", "default", "empty", "dns", model.UDP, "fd00:96::14", 53), 30082, true),
	)
	alpha.ServeNodePorts = true
	beta := Cluster("beta", true, BetaCIDRs,
		WithNodePort(Svc("beta", "default", "api", "https", model.TCP, "10.97.0.10", 443, "10.1.0.1:6443"), 30090, false),
	)
	st := State(alpha, beta)
	st.HostAddrs = hostAddrs
	return st
}

// WithNames returns st with headless and ExternalName services in every
// cluster, which the DNS server names and no backend may program. The
// headless endpoints sit at an unused address of each service range (the
// 101st) and at an endpoint of another service, so that a backend reading
// them would show in its rules or its packets' fate.
func WithNames(st *model.State) *model.State {
	out := &model.State{HostAddrs: st.HostAddrs}
	for _, c := range st.Clusters {
		cc := *c
		cc.Names = map[types.NamespacedName]*model.NamedService{}
		for _, r := range c.ServiceCIDRs {
			unused := r.Addr()
			for range 101 {
				unused = unused.Next()
			}
			name, taken := "db4", netip.MustParseAddr("10.0.1.1")
			if unused.Is6() {
				name, taken = "db6", netip.MustParseAddr("fd00:1::1")
			}
			http := []model.NamedPort{{Name: "http", Protocol: model.TCP, Port: 80}}
			cc.Names[types.NamespacedName{Namespace: "default", Name: name}] = &model.NamedService{Namespace: "default", Name: name,
				Endpoints: []model.NamedEndpoint{{Addr: unused, Hostname: "db-0", Ports: http}, {Addr: taken, Ports: http}}}
		}
		cc.Names[types.NamespacedName{Namespace: "default", Name: "ext"}] = &model.NamedService{Namespace: "default", Name: "ext", ExternalName: "db.example.com"}
		out.Clusters = append(out.Clusters, &cc)
	}
	return out
}
