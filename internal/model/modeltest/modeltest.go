// Package modeltest builds desired states by hand for the backends' tests.
package modeltest

import (
	"net/netip"
	"slices"
	"sort"
	"time"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// Svc makes a ServicePort. Its family follows clusterIP; eps are "ip:port"
// strings.
func Svc(cluster, ns, name, portName string, pr model.Protocol, clusterIP string, port uint16, eps ...string) *model.ServicePort {
	ip := netip.MustParseAddr(clusterIP)
	sp := &model.ServicePort{
		Key:       model.PortKey{Cluster: cluster, Namespace: ns, Name: name, Port: portName, Protocol: pr, IPv6: ip.Is6()},
		ClusterIP: ip,
		Port:      port,
	}
	return WithEndpoints(sp, eps...)
}

// WithEndpoints returns a copy of sp with other endpoints: ServicePorts are
// never modified once published.
func WithEndpoints(sp *model.ServicePort, eps ...string) *model.ServicePort {
	c := *sp
	c.Endpoints, c.NoEndpointsReason = nil, ""
	for _, e := range eps {
		c.Endpoints = append(c.Endpoints, model.Endpoint{Addr: netip.MustParseAddrPort(e)})
	}
	slices.SortFunc(c.Endpoints, func(a, b model.Endpoint) int { return a.Addr.Compare(b.Addr) })
	if len(eps) == 0 {
		c.NoEndpointsReason = "no ready endpoints"
	}
	return &c
}

// WithAffinity returns a copy of sp with ClientIP affinity d.
func WithAffinity(sp *model.ServicePort, d time.Duration) *model.ServicePort {
	c := *sp
	c.Affinity = d
	return &c
}

// Cluster makes a ClusterState holding ports.
func Cluster(name string, synced bool, cidrs []string, ports ...*model.ServicePort) *model.ClusterState {
	c := &model.ClusterState{Name: name, Synced: synced, Ports: map[model.PortKey]*model.ServicePort{}}
	for _, s := range cidrs {
		c.ServiceCIDRs = append(c.ServiceCIDRs, netip.MustParsePrefix(s))
	}
	for _, p := range ports {
		c.Ports[p.Key] = p
	}
	return c
}

// State makes a State with its clusters sorted, as the model gives them.
func State(cs ...*model.ClusterState) *model.State {
	s := &model.State{Clusters: cs}
	sort.Slice(s.Clusters, func(i, j int) bool { return s.Clusters[i].Name < s.Clusters[j].Name })
	return s
}
