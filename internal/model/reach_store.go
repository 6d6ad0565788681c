package model

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// nodesReady: a cluster reached through its nodes counts as synced only
// once its first node list arrived. Before, reach = "nodeport" would refuse
// every port (no node to send to) and reach = "routes" would DNAT to pods
// this host cannot route to yet; either would replace the working rules of
// the last run after a restart.
func (cd *clusterData) nodesReady() bool { return !cd.cfg.Reach.ThroughNodes() || cd.nodesSynced }

// SetNodes hands the model a cluster's node list (a NodeWatcher snapshot,
// never a partial one). With reach = "nodeport" every service of the
// cluster is built again, since every port's endpoints are nodes. The first
// call lets a cluster reached through its nodes count as synced. Calls for a
// cluster that is not configured are ignored. nodes is kept, not copied: it
// must not be modified afterwards.
func (s *Store) SetNodes(cluster string, nodes []NodeInfo) {
	s.mu.Lock()
	cd := s.clusters[cluster]
	if cd == nil {
		s.mu.Unlock()
		return
	}
	if cd.live != nil {
		cd.live.nodes, cd.live.nodesSynced = nodes, true
		changed := s.replaceLastKnown(cd) // lastknown.go
		s.mu.Unlock()
		if changed {
			s.onChange()
		}
		return
	}
	changed := !cd.nodesSynced && cd.cfg.Reach.ThroughNodes()
	cd.nodes, cd.nodesSynced = nodes, true
	cd.rev = s.nextRev()
	if cd.cfg.Reach == reach.NodePort {
		for nn := range cd.svcs {
			if s.recompute(cd, nn) {
				changed = true
			}
		}
	}
	s.mu.Unlock()
	if changed {
		s.onChange()
	}
}

// reachViaNodePorts turns the ports of one service, as buildService made
// them for reach = "direct" (without endpoint_cidrs: the pods are not
// where packets go), into reach = "nodeport" ones: each port's endpoints
// become the nodes' addresses at the port's NodePort (NodePortEndpoints),
// each checked like an endpoint, and a port without a NodePort is refused
// and reported. The direct selection still decides whether the service has
// endpoints at all: without one, the nodes would refuse the connection
// too, so the port is refused here with the direct reason.
func reachViaNodePorts(cfg ClusterConfig, env *buildEnv, nodes []NodeInfo, svc *corev1.Service, sliceList []*discoveryv1.EndpointSlice, res *buildResult) {
	if svc == nil || len(res.ports) == 0 {
		return
	}
	// The nodes are where the packets go: they get the check every
	// endpoint gets, endpoint_cidrs included.
	check := func(node string, ip netip.Addr) (Exclusion, string) {
		r, detail := env.checkTarget(cfg, ip)
		if r != "" {
			res.problems = append(res.problems, targetProblem("node "+node+": address", ip, cfg, r, detail))
		}
		return r, detail
	}
	// internalTrafficPolicy: Local comes first: this host is no node, so
	// there is no local endpoint, whichever way the cluster is reached.
	// buildService already refused such ports.
	if p := svc.Spec.InternalTrafficPolicy; p != nil && *p == corev1.ServiceInternalTrafficPolicyLocal {
		return
	}
	etpLocal := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	for _, p := range res.ports {
		if p.NodePort == 0 {
			res.problems = append(res.problems, Problem{Reason: ReasonNoNodePort, Msg: "port " + portName(p.Key.Port, p.Key.Protocol) + ": " + NoNodePortReason})
		}
		if len(p.Endpoints) == 0 {
			// Neither the pods nor the node addresses: explain shows the
			// pods left out, which is the real cause.
			if p.NodePort == 0 {
				p.NoEndpointsReason = NoNodePortReason
			}
			continue
		}
		q := NodePortQuery{NodePort: p.NodePort, Nodes: nodes, Prefer: cfg.NodeAddressTypes, IPv6: p.Key.IPv6, Check: check}
		if etpLocal {
			q.OnlyNodes = endpointNodes(p.Endpoints, sliceList, p.Key.IPv6)
		}
		p.Endpoints, p.Excluded, p.NoEndpointsReason = NodePortEndpoints(q)
	}
	res.problems = dedupe(res.problems)
}

// endpointNodes are the nodeName of the slices' endpoints that are among
// eps (the port's usable endpoints), sorted and unique; never nil, since
// a nil OnlyNodes means "every node".
func endpointNodes(eps []Endpoint, sliceList []*discoveryv1.EndpointSlice, v6 bool) []string {
	use := make(map[netip.Addr]bool, len(eps))
	for _, e := range eps {
		use[e.Addr.Addr()] = true
	}
	want := discoveryv1.AddressTypeIPv4
	if v6 {
		want = discoveryv1.AddressTypeIPv6
	}
	out := []string{}
	for _, es := range sliceList {
		if es.AddressType != want {
			continue
		}
		for _, ep := range es.Endpoints {
			if len(ep.Addresses) == 0 || ep.NodeName == nil || *ep.NodeName == "" {
				continue
			}
			if ip, err := netip.ParseAddr(ep.Addresses[0]); err == nil && use[ip.Unmap()] {
				out = append(out, *ep.NodeName)
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
