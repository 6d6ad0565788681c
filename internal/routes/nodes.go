package routes

import (
	"fmt"
	"slices"
	"strings"

	"github.com/kube-outpost/kube-outpost/internal/model"
)

// ForNodes is the desired routes of reach = "routes": every pod CIDR of
// every Ready node, via that node's address of the CIDR's family chosen by
// prefer (model.NodeAddress). A node that is not Ready gets no route, so its
// pod CIDRs are withdrawn while it is down. Problems name the pod CIDRs of
// Ready nodes that cannot be routed, for status.
func ForNodes(nodes []model.NodeInfo, prefer []string) (routes []Route, problems []string) {
	for _, n := range nodes {
		if !n.Ready {
			continue
		}
		for _, cidr := range n.PodCIDRs {
			v6 := cidr.Addr().Is6()
			via, ok := model.NodeAddress(n, prefer, v6)
			if !ok {
				types := prefer
				if len(types) == 0 {
					types = model.DefaultNodeAddressTypes
				}
				problems = append(problems, fmt.Sprintf("node %s: pod CIDR %v is not routed: the node has no %s %s address",
					n.Name, cidr, strings.Join(types, " or "), family(v6)))
				continue
			}
			routes = append(routes, Route{Dst: cidr, Via: via})
		}
	}
	slices.SortFunc(routes, Route.Compare)
	return routes, problems
}
