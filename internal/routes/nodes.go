package routes

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
	"github.com/kube-outpost/kube-outpost/internal/reach"
)

// ForNodes is the desired routes of reach = "routes" for one cluster: every
// pod CIDR of every Ready node that lies inside podCIDRs (the cluster's
// pod_cidrs), via that node's address of the CIDR's family chosen by prefer
// (model.NodeAddress). A node that is not Ready gets no route, so its pod
// CIDRs are withdrawn while it is down. Routes come in node name order,
// which decides between nodes of the cluster that claim one pod CIDR (see
// Installer.Sync). Problems name the pod CIDRs of Ready nodes that are not
// routed, for status.
//
// A node's pod CIDR is whatever the cluster's admin writes into the Node:
// only the ranges of the configuration say which destinations the cluster
// may have routed to it at all.
func ForNodes(cluster string, nodes []model.NodeInfo, prefer []string, podCIDRs []netip.Prefix) (routes []Route, problems []string) {
	nodes = slices.SortedStableFunc(slices.Values(nodes), func(a, b model.NodeInfo) int { return cmp.Compare(a.Name, b.Name) })
	for _, n := range nodes {
		if !n.Ready {
			continue
		}
		for _, cidr := range n.PodCIDRs {
			if !inside(cidr, podCIDRs) {
				problems = append(problems, fmt.Sprintf("node %s: pod CIDR %v is not routed: it is outside the cluster's pod_cidrs (%s)",
					n.Name, cidr, prefixList(podCIDRs)))
				continue
			}
			v6 := cidr.Addr().Is6()
			via, ok := model.NodeAddress(n, prefer, v6)
			if !ok {
				types := prefer
				if len(types) == 0 {
					types = reach.DefaultNodeAddressTypes
				}
				problems = append(problems, fmt.Sprintf("node %s: pod CIDR %v is not routed: the node has no %s %s address",
					n.Name, cidr, strings.Join(types, " or "), family(v6)))
				continue
			}
			routes = append(routes, Route{Dst: cidr, Via: via, Owner: fmt.Sprintf("node %s of cluster %q", n.Name, cluster)})
		}
	}
	return routes, problems
}

// inside says whether p lies entirely within one of ranges.
func inside(p netip.Prefix, ranges []netip.Prefix) bool {
	return slices.ContainsFunc(ranges, func(r netip.Prefix) bool { return r.Bits() <= p.Bits() && r.Contains(p.Addr()) })
}

func prefixList(ps []netip.Prefix) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ", ")
}
